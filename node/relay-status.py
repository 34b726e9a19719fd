"""header-rewrite: what one relay node knows about its own health, as JSON on stdout.

Sent on stdin by `npm run status` (src/status.ts builds the call); it changes nothing on the node
and sends no mail. Argument: JSON with fqdn, tenants (id, transport, nexthop, posttls-finger
arguments), certificates (label, file) and hours (the window for log counts).
"""

import json
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta


def run(args, timeout=60):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)


def postconf(name):
    return run(["postconf", "-h", name])[1].strip()


def release(marker):
    try:
        with open(marker) as f:
            fqdn, bundle = f.read().split()
        return {"fqdn": fqdn, "bundle": bundle}
    except (OSError, ValueError):
        return None


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


# "Nov 24 22:36:42 host postfix/tenant_x/smtp[123]: ..." (maillog_file; optional fractions)
FILE_LINE = re.compile(r"^(\w{3}) +(\d+) (\d\d:\d\d:\d\d)(?:\.\d+)? \S+ (\S+?)\[\d+\]: (.*)$")


def log_lines(idents, hours, now):
    """(identifier, message) of the last HOURS from maillog_file, else from the journal."""
    logfile = postconf("maillog_file")
    if logfile and not logfile.startswith("/dev/"):
        since = datetime.fromtimestamp(now) - timedelta(hours=hours)
        year = datetime.fromtimestamp(now).year
        try:
            with open(logfile, errors="replace") as f:
                for line in f:
                    m = FILE_LINE.match(line)
                    if not m or m.group(4) not in idents:
                        continue
                    when = datetime.strptime(f"{year} {m.group(1)} {m.group(2)} {m.group(3)}", "%Y %b %d %H:%M:%S")
                    if when > datetime.fromtimestamp(now) + timedelta(days=1):
                        when = when.replace(year=year - 1)
                    if when >= since:
                        yield m.group(4), m.group(5)
        except OSError:
            return
        return
    args = ["journalctl", "--no-pager", "-o", "json", f"--since=-{hours}h"]
    args += [f"SYSLOG_IDENTIFIER={i}" for i in idents]
    code, out, _ = run(args, timeout=120)
    for line in out.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        msg = e.get("MESSAGE")
        if isinstance(msg, str):
            yield e.get("SYSLOG_IDENTIFIER", ""), msg


STATUS = re.compile(r"\bstatus=(sent|bounced|deferred) \((.*)\)$")


def deliveries(tenants, hours, now):
    """Per tenant: recipients sent, and the reasons of recipients bounced, in the window."""
    by_ident = {f"postfix/{t['transport']}/smtp": t["id"] for t in tenants}
    sent = Counter()
    bounced = {t["id"]: Counter() for t in tenants}
    for ident, msg in log_lines(set(by_ident), hours, now):
        m = STATUS.search(msg)
        if not m:
            continue
        tenant = by_ident[ident]
        if m.group(1) == "sent":
            sent[tenant] += 1
        elif m.group(1) == "bounced":
            bounced[tenant][m.group(2)[:300]] += 1
    return {t["id"]: {"sent": sent[t["id"]],
                      "bounced": [{"reason": r, "count": c} for r, c in bounced[t["id"]].most_common(5)]}
            for t in tenants}


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


def main():
    spec = json.loads(sys.argv[1])
    now = time.time()
    running = run(["postfix", "status"])[0] == 0
    report = {
        "fqdn": spec["fqdn"],
        "checkedAt": int(now),
        "postfixRunning": running,
        "release": release(spec["releaseMarker"]),
        "queue": queue(now),
        "deliveries": deliveries(spec["tenants"], spec["hours"], now),
        "certificates": [certificate(c["label"], c["file"], now) for c in spec["certificates"]],
        "nexthops": [handshake(t) for t in spec["tenants"]],
    }
    json.dump(report, sys.stdout)
    print()


main()
