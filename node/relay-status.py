"""header-rewrite: what one relay node knows about its own health, as JSON on stdout.

Sent on stdin by `npm run status` (src/status/fleet-status.ts builds the call), or installed by the metrics
step and run by its timer with --prometheus; it changes nothing on the node and sends no mail.
The spec (statusSpec() in src/deploy/steps.ts): fqdn, release marker, Postfix's log, the pinning milter
(service, log, socket), tenants (id, next hop, posttls-finger arguments), certificates (label, file) and
hours (the window for log counts).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime


def run(args, timeout=60):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def master_started():
    """PID of Postfix's running master and when it started (kernel's count, epoch seconds), or None."""
    code, out, _ = run(["postconf", "-h", "queue_directory"])
    pid = (read(os.path.join(out.strip(), "pid", "master.pid")) or "") if code == 0 else ""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(l.split()[1]) for l in f if l.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return int(pid), int(boot + ticks / os.sysconf("SC_CLK_TCK"))


def release(spec):
    """The live release; loaded: Postfix's master started after the switch, or a deploy reloaded
    that master after it (node/lib/postfix-release.sh, release_loaded); None when not judged (Postfix
    stopped, or a release staged before load tracking); checked: it passed verify (None: not judged)."""
    try:
        fqdn, bundle = read(spec["releaseMarker"]).split()
    except (AttributeError, ValueError):
        return None
    live = os.path.dirname(spec["releaseMarker"])
    master = master_started()
    loaded = None
    tracked = read(spec["releaseLoaded"])
    if master and os.path.islink(live) and tracked is not None:
        pid, started = master
        loaded = started > int(os.lstat(live).st_mtime) or tracked == f"master {pid}"
    checked = None if tracked is None else read(spec["releaseChecked"]) == bundle
    return {"fqdn": fqdn, "bundle": bundle, "release": os.path.realpath(live), "loaded": loaded, "checked": checked}


def queue(now):
    """postqueue -j: one JSON object per message (Postfix >= 3.1)."""
    code, out, err = run(["postqueue", "-j"])
    counts = Counter()
    deferred = []
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        counts[m.get("queue_name", "?")] += 1
        if m.get("queue_name") == "deferred":
            reasons = [r.get("delay_reason", "") for r in m.get("recipients", [])]
            deferred.append({"age": int(now - m.get("arrival_time", now)), "reasons": reasons,
                             "sender": m.get("sender", "")})
    return {"counts": dict(counts), "deferred": deferred, "error": err.strip() if code else None}


# "Nov 24 22:36:42 host postfix/smtp[123]: ..." or an RFC 3339 stamp ("2026-11-24T22:36:42.1+00:00").
LINE = re.compile(r"^(?:(\w{3} +\d+ \d\d:\d\d:\d\d)|(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\S*) \S+ (\S+?)\[\d+\]: (.*)$")


def log_lines(path, since, now):
    """(identifier, message) of the log's lines from SINCE on (epoch seconds)."""
    year = datetime.fromtimestamp(now).year
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = LINE.match(line)
                if not m:
                    continue
                if m.group(1):
                    when = datetime.strptime(f"{year} {m.group(1)}", "%Y %b %d %H:%M:%S")
                    if when.timestamp() > now + 86400:
                        when = when.replace(year=year - 1)
                else:
                    when = datetime.strptime(m.group(2), "%Y-%m-%dT%H:%M:%S")
                if when.timestamp() >= since:
                    yield m.group(3), m.group(4)
    except OSError:
        return


STATUS = re.compile(r"\brelay=([^\[,\s]+)[^,]*,.*\bstatus=(sent|bounced|deferred) \((.*)\)$")


def deliveries(spec, now):
    """Per tenant (by the host its next hop names): recipients sent and bounced reasons in the window."""
    by_host = {t["nexthop"].strip("[").split("]")[0].lower(): t["id"] for t in spec["tenants"]}
    sent = Counter()
    bounced = {t["id"]: Counter() for t in spec["tenants"]}
    for ident, msg in log_lines(spec["log"], now - spec["hours"] * 3600, now):
        if ident != "postfix/smtp":
            continue
        m = STATUS.search(msg)
        if not m or m.group(1).lower() not in by_host:
            continue
        tenant = by_host[m.group(1).lower()]
        if m.group(2) == "sent":
            sent[tenant] += 1
        elif m.group(2) == "bounced":
            bounced[tenant][m.group(3)[:300]] += 1
    return {t["id"]: {"sent": sent[t["id"]],
                      "bounced": [{"reason": r, "count": c} for r, c in bounced[t["id"]].most_common(5)]}
            for t in spec["tenants"]}


# The pinning milter's verdict line (node/tenant-pin-milter.py):
# "QUEUEID: from=<sender> STATE (MODE) DOMAIN: TEXT [SOURCE]".
VERDICT = re.compile(r"from=<[^>]*> (pass|fail|temperror) \((enforce|monitor)\) (\S+): (.*) \[[^\]]*\]$")


def under_systemd():
    return os.path.isdir("/run/systemd/system")


def milter_lines(spec, now):
    """The milter's log lines in the window: its journal under systemd, else its whole log file."""
    m = spec["pinMilter"]
    if under_systemd():
        since = f"@{int(now - spec['hours'] * 3600)}"
        code, out, _ = run(["journalctl", "-q", "--no-pager", "-o", "cat", "-u", m["service"], "--since", since])
        return out.splitlines() if code == 0 else []
    try:
        with open(m["log"], errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def milter_state(spec):
    """Whether the pinning milter accepts a connection on its socket, and how often systemd restarted it."""
    m = spec["pinMilter"]
    probe = socket.socket(socket.AF_UNIX)
    probe.settimeout(5)
    try:
        probe.connect(m["socket"])
        answering = True
    except OSError:
        answering = False
    finally:
        probe.close()
    restarts = None
    if under_systemd():
        code, out, _ = run(["systemctl", "show", "-p", "NRestarts", "--value", m["service"]])
        restarts = int(out.strip()) if code == 0 and out.strip().isdigit() else None
    return {"answering": answering, "restarts": restarts, "socket": m["socket"]}


def clock_state():
    """The node's time service (chrony, as the pinning milter's Date window asks it): synchronised,
    and the offset it measures in seconds (positive: the clock is slow)."""
    chronyc = "/usr/bin/chronyc"
    if not os.path.exists(chronyc):
        return {"service": None, "synchronized": False, "offset": None,
                "detail": "no time service: chrony is not installed (apt-get install chrony)"}
    code, out, err = run([chronyc, "-c", "-n", "tracking"], 10)
    f = out.strip().split(",")
    if code or len(f) < 14:
        return {"service": "chrony", "synchronized": False, "offset": None,
                "detail": f"chronyd does not answer ({(err or out).strip()[:200]}): systemctl status chrony"}
    return {"service": "chrony", "synchronized": f[13] == "Normal", "offset": float(f[4]),
            "detail": f"{f[13]}, source {f[1]} (stratum {f[2]})"}


def pin_verdicts(spec, now):
    """Per sender domain and mode: verdicts by state, and the reasons of the others (numbers as N)."""
    found = {}
    for line in milter_lines(spec, now):
        v = VERDICT.search(line)
        if not v:
            continue
        state, mode, domain, text = v.groups()
        d = found.setdefault((domain, mode), {"domain": domain, "mode": mode, "pass": 0, "fail": 0,
                                              "temperror": 0, "reasons": Counter()})
        d[state] += 1
        if state != "pass":
            d["reasons"][re.sub(r"\d+", "N", text.split(" (")[0])] += 1
    return [{**d, "reasons": [{"reason": r, "count": c} for r, c in d["reasons"].most_common(5)]}
            for _, d in sorted(found.items())]


def certificate(label, path, now):
    code, out, err = run(["openssl", "x509", "-in", path, "-noout", "-enddate", "-subject",
                          "-ext", "extendedKeyUsage"])
    if code:
        return {"label": label, "file": path, "error": (err.strip() or out.strip())[:200]}
    end = re.search(r"notAfter=(.*)", out).group(1).strip()
    not_after = datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").timestamp()
    eku = re.search(r"Extended Key Usage:.*\n\s*(.*)", out)
    usages = eku.group(1).strip() if eku else ""
    subject = re.search(r"subject=(.*)", out)
    return {
        "label": label,
        "file": path,
        "subject": subject.group(1).strip() if subject else "",
        "daysLeft": round((not_after - now) / 86400, 1),
        # No extendedKeyUsage extension at all places no restriction (RFC 5280, 4.2.1.12).
        "clientAuth": (not eku) or ("TLS Web Client Authentication" in usages),
        "usages": usages or "(no extendedKeyUsage: any)",
    }


def handshake(t):
    code, out, err = run(["timeout", "60", "posttls-finger", "-c", "-t", "10", "-T", "10", *t["probe"]], 90)
    text = out + err
    ok = "Verified TLS connection established" in text
    lines = list(dict.fromkeys(l.replace("posttls-finger: ", "").strip() for l in text.splitlines() if l.strip()))
    detail = next((l for l in lines if "Verified TLS connection established" in l), " ".join(lines[-2:]))
    return {"tenant": t["id"], "nexthop": t["nexthop"], "ok": ok, "detail": detail[:300]}


REFUSALS = [
    # smtpd could not reach the pinning milter (one line per connection, or when it died mid-message):
    # milter_default_action=tempfail then answers 4xx to everything on that connection.
    ("milter_unavailable", re.compile(r"warning: (connect to Milter service|milter \S+: )")),
    ("tenant_pinning", re.compile(r"milter-reject: .*tenant pinning fail")),
    ("tenant_pinning_undecided", re.compile(r"milter-reject: .*tenant pinning temperror")),
    ("relay_denied", re.compile(r"NOQUEUE: reject: .*Relay access denied")),
    ("sender_not_allowed", re.compile(r"NOQUEUE: reject: .*(Sender address rejected|Null sender)")),
    ("client_not_allowed", re.compile(r"NOQUEUE: reject: .*Client host rejected")),
    ("rate_limit", re.compile(r"warning: .*(rate|concurrency) limit exceeded")),
    ("other", re.compile(r"NOQUEUE: reject: |milter-reject: ")),
]
# What smtpd answers at each stage of a connection whose milter it cannot reach.
MILTER_TEMPFAIL = re.compile(r"milter-reject: .*Service unavailable - try again later")
TLS_FAILURES = [
    ("outbound", "postfix/smtp", re.compile(r"certificate not verified|verification failed|TLS is required, but|Cannot start TLS")),
    ("inbound", "postfix/smtpd", re.compile(r"SSL_accept error|TLS library problem")),
]


def log_counters(path, now):
    """Refusals by reason and TLS failures by direction in the current log file (a counter that
    restarts when the file is rotated, which Prometheus's rate() expects)."""
    refused = Counter({name: 0 for name, _ in REFUSALS})
    tls = Counter({d: 0 for d, _, _ in TLS_FAILURES})
    for ident, msg in log_lines(path, 0, now):
        if MILTER_TEMPFAIL.search(msg):
            continue  # the same connection, already counted as milter_unavailable
        for name, pattern in REFUSALS:
            if pattern.search(msg):
                refused[name] += 1
                break
        for direction, who, pattern in TLS_FAILURES:
            if ident == who and pattern.search(msg):
                tls[direction] += 1
    return refused, tls


def label(v):
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(spec, r, now):
    """Prometheus text format for node-exporter's textfile collector."""
    out = []

    def metric(name, kind, help_, samples):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            ls = ",".join(f'{k}="{label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{ls}}} {value}" if ls else f"{name} {value}")

    counts = r["queue"]["counts"]
    ages = [m["age"] for m in r["queue"]["deferred"]]
    refused, tls = log_counters(spec["log"], now)
    metric("header_rewrite_postfix_running", "gauge", "Postfix's master runs (1) or not (0).",
           [({}, int(r["postfixRunning"]))])
    metric("header_rewrite_release_info", "gauge", "The bundle the node runs.",
           [({"bundle": (r["release"] or {}).get("bundle", "none")}, 1)])
    rel = r["release"] or {}
    metric("header_rewrite_release_loaded", "gauge",
           "Postfix has loaded the live release (0: a deploy was cut between switch and reload).",
           [({}, int(rel.get("loaded") is not False))])
    metric("header_rewrite_release_checked", "gauge", "The live release passed its post-deploy check (1).",
           [({}, int(rel.get("checked") is not False))])
    metric("header_rewrite_queue_messages", "gauge", "Messages in each Postfix queue.",
           [({"queue": q}, counts.get(q, 0)) for q in ("active", "deferred", "hold", "incoming", "maildrop")])
    metric("header_rewrite_queue_oldest_deferred_seconds", "gauge", "Age of the oldest deferred message (0: none).",
           [({}, max(ages, default=0))])
    metric("header_rewrite_certificate_expiry_seconds", "gauge", "Seconds until each presented certificate expires.",
           [({"certificate": c["label"]}, int(c.get("daysLeft", -1) * 86400)) for c in r["certificates"]])
    metric("header_rewrite_certificate_client_auth", "gauge", "The certificate carries TLS client authentication (1).",
           [({"certificate": c["label"]}, int(bool(c.get("clientAuth")))) for c in r["certificates"]])
    metric("header_rewrite_nexthop_tls_ok", "gauge", "A verified TLS handshake with the tenant next hop succeeded (1).",
           [({"tenant": h["tenant"], "nexthop": h["nexthop"]}, int(h["ok"])) for h in r["nexthops"]])
    metric("header_rewrite_relayed_recipients", "gauge", f"Recipients delivered to each tenant in the last {spec['hours']} h.",
           [({"tenant": t}, d["sent"]) for t, d in r["deliveries"].items()])
    metric("header_rewrite_milter_answering", "gauge", "The tenant-pinning milter accepts connections (1).",
           [({}, int(r["milter"]["answering"]))])
    metric("header_rewrite_milter_restarts", "gauge", "Times systemd restarted the pinning milter since it was started.",
           [({}, r["milter"]["restarts"] or 0)])
    metric("header_rewrite_clock_synchronized", "gauge", "chrony reports the clock synchronised (1).",
           [({}, int(r["clock"]["synchronized"]))])
    metric("header_rewrite_clock_offset_seconds", "gauge",
           "How far the clock is off, as chrony measures it (positive: slow; 0 when unknown).",
           [({}, r["clock"]["offset"] or 0)])
    metric("header_rewrite_refusals_total", "counter", "Mail refused at the relay, by reason (current log file).",
           [({"reason": k}, v) for k, v in sorted(refused.items())])
    metric("header_rewrite_tls_failures_total", "counter", "TLS failures by direction (current log file).",
           [({"direction": k}, v) for k, v in sorted(tls.items())])
    metric("header_rewrite_metrics_timestamp_seconds", "gauge", "When these metrics were collected.", [({}, int(now))])
    return "\n".join(out) + "\n"


def report(spec, now):
    return {
        "fqdn": spec["fqdn"],
        "checkedAt": int(now),
        "postfixRunning": run(["postfix", "status"])[0] == 0,
        "release": release(spec),
        "queue": queue(now),
        "deliveries": deliveries(spec, now),
        "pinning": pin_verdicts(spec, now),
        "milter": milter_state(spec),
        "clock": clock_state(),
        "certificates": [certificate(c["label"], c["file"], now) for c in spec["certificates"]],
        "nexthops": [handshake(t) for t in spec["tenants"]],
    }


def main():
    now = time.time()
    if sys.argv[1] == "--prometheus":
        # The metrics timer: spec file, output file (written whole, then renamed into place).
        with open(sys.argv[2]) as f:
            spec = json.load(f)
        text = exposition(spec, report(spec, now), now)
        with open(sys.argv[3] + ".tmp", "w") as f:
            f.write(text)
        os.chmod(sys.argv[3] + ".tmp", 0o644)
        os.replace(sys.argv[3] + ".tmp", sys.argv[3])
        return
    spec = json.loads(sys.argv[1])
    json.dump(report(spec, now), sys.stdout)
    print()


main()
