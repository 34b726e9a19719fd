#!/usr/bin/python3
# header-rewrite tenant-pinning milter (docs/tenant-pinning.md, "Tenant pinning").
#
# Port 25 of a relay node hands every message to this milter before Postfix rewrites anything. It
# decides, per sender domain and from maps/tenant_pins (rendered as tenant_pins.json), whether the
# message provably comes from tenant A: a valid DKIM signature by a pinned d= that signs From, a
# signed Date inside max-age, and optional header checks. Enforce refuses a failure with a 5.7.x
# reply that names the failed check; monitor only stamps and logs the verdict. A check that cannot
# decide (DNS) defers with 4.7.0 so Exchange Online retries. DKIM itself is dkimpy (Debian
# python3-dkim), DNS is dnspython with an in-process cache that honours TTLs.
#
# Once a message passes, it also rewrites the addresses of its meeting (calendar_rewrite.py, README
# "Meeting invitations"): Postfix rewrites header fields only, never a body.
#
# usage: tenant-pin-milter.py POLICY_JSON SOCKET SECRET_FILE CALENDAR_JSON   (SOCKET: unix:/path)
import email.utils
import hmac
import logging
import os
import subprocess
import sys
import time

import dkim
import dns.exception
import dns.resolver
import Milter
from dkim.util import parse_tag_value

import calendar_rewrite

DNS_LIFETIME = 10.0
CHRONYC = "/usr/bin/chronyc"

log = logging.getLogger("header-rewrite-pin")

# What the deploy installed, from argv (main): importing the module has no side effect, so the
# unit tests (node/tests/) import it and call decide() and check_date() directly.
POLICY = CALENDAR = SECRET_FILE = CALENDAR_PATH = None


class DnsUndecided(Exception):
    pass


RESOLVER = dns.resolver.Resolver()
RESOLVER.cache = dns.resolver.LRUCache(10000)
RESOLVER.lifetime = DNS_LIFETIME


def txt_lookup(name, timeout=DNS_LIFETIME):
    """dkimpy's dnsfunc: the key record, None when there is none; raises when DNS cannot answer."""
    qname = name.decode("ascii") if isinstance(name, bytes) else name
    try:
        answer = RESOLVER.resolve(qname, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as e:
        raise DnsUndecided(f"{qname}: {e.__class__.__name__}") from e
    for rr in answer:
        return b"".join(rr.strings)
    return None


class Collector:
    """dkimpy's logger for one verification: keeps its reasons for a failed signature for the reply
    (a plain object, not a logging.Logger: those live forever once created)."""

    def __init__(self):
        self.messages = []

    def error(self, msg, *args):
        self.messages.append(msg % args if args else str(msg))

    warning = info = error

    def debug(self, *args):
        pass


def domain_of(address):
    address = address.strip().strip("<>")
    return address.rsplit("@", 1)[1].lower() if "@" in address else ""


def pin_for(pins, domain):
    """The domain's own line, else the nearest ".parent" line (like access(5))."""
    if domain in pins:
        return pins[domain]
    labels = domain.split(".")
    for i in range(1, len(labels) - 1):
        parent = "." + ".".join(labels[i:])
        if parent in pins:
            return pins[parent]
    return None


class Verdict:
    def __init__(self, ok, text, code="550", xcode="5.7.1", undecided=False, signature=None):
        self.ok, self.text, self.code, self.xcode = ok, text, code, xcode
        self.undecided, self.signature = undecided, signature


def signature_tags(value):
    """The tags of a DKIM-Signature header value, as dkimpy parses them."""
    return parse_tag_value(value.encode("ascii", "replace").replace(b"\r\n", b""))


def signature_domain(tags):
    return tags.get(b"d", b"").decode("ascii", "replace").lower()


def signed_headers(tags):
    return [h.strip().lower() for h in tags.get(b"h", b"").split(b":")]


def check_dkim(pin, message, signatures):
    """signatures: [(index among DKIM-Signature headers, tags)]. Returns a Verdict."""
    wanted = [d.lower() for d in pin["dkim"]]
    candidates = [(i, t) for i, t in signatures if signature_domain(t) in wanted]
    if not candidates:
        return Verdict(False, f"no DKIM signature by {' or '.join(wanted)}", xcode="5.7.21")
    failures = []  # (text, RFC 7372 code): 5.7.21 not acceptable by policy, 5.7.20 does not verify
    for i, tags in candidates:
        d = signature_domain(tags)
        if b"from" not in signed_headers(tags):
            failures.append((f"the signature by {d} does not sign From", "5.7.21"))
            continue
        if b"l" in tags:
            # Text after the signed length would be relayed unsigned (RFC 6376 §8.2). Exchange Online
            # never sets l=, so refusing the signature costs no real mail.
            failures.append((f"the signature by {d} has l= (a body length limit, never set by Exchange "
                             "Online): text after it would be unsigned", "5.7.21"))
            continue
        collector = Collector()
        try:
            ok = dkim.DKIM(message, logger=collector, timeout=DNS_LIFETIME).verify(idx=i, dnsfunc=txt_lookup)
        except DnsUndecided as e:
            return Verdict(False, f"the DKIM key of {d} could not be fetched ({e})", "451", "4.7.0", undecided=True)
        except dkim.DKIMException as e:
            ok, collector.messages = False, [str(e)]
        if ok:
            return Verdict(True, f"dkim d={d} s={tags.get(b's', b'').decode('ascii', 'replace')}", signature=tags)
        why = "; ".join(collector.messages) or "signature does not verify"
        failures.append((f"the signature by {d} does not verify ({why})", "5.7.20"))
    text, xcode = failures[0]
    return Verdict(False, text, xcode=xcode)


def duration(seconds):
    """An age as an admin reads it in an NDR: whole hours and minutes ("48 h 3 min")."""
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours} h {minutes} min"


class Clock:
    """What the node's time service (chrony) says about the clock the Date window reads."""

    def __init__(self, synced, error, text):
        self.synced, self.error, self.text = synced, error, text


_clock = {"at": -1e9, "state": None}


def node_clock():
    """chrony's tracking report, asked at most every 10 s; None without chronyc (no time service
    this milter can ask: the window trusts the clock, and `npm run status` reports it). Error bound:
    the offset chrony measures plus half the root delay and the root dispersion (chronyc(1))."""
    if time.monotonic() - _clock["at"] < 10:
        return _clock["state"]
    if not os.path.exists(CHRONYC):
        return None
    try:
        p = subprocess.run([CHRONYC, "-c", "-n", "tracking"], capture_output=True, text=True, timeout=5)
        f = p.stdout.strip().split(",")
        if p.returncode or len(f) < 14:
            state = Clock(False, None, f"chronyd does not answer ({(p.stderr or p.stdout).strip()[:80]})")
        elif f[13] != "Normal":
            state = Clock(False, None, f"chrony: {f[13]}")
        else:
            offset = float(f[4])  # positive: the clock is slow
            error = abs(offset) + float(f[10]) / 2 + float(f[11])
            side = "slow" if offset > 0 else "fast"
            state = Clock(True, error, f"chrony: synchronised to {f[1]}, {abs(offset):.3f} s {side}")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        state = Clock(False, None, f"chronyc failed ({e})")
    _clock.update(at=time.monotonic(), state=state)
    return state


def check_date(pin, headers, signature, clock):
    """The signed Date inside the window. Only a verdict this node's clock cannot have caused is
    permanent: a Date in the future, or too old by less than the clock's possible error (or on a
    clock that is not synchronised), defers with 4.7.0, so the sender retries and nothing bounces
    for the relay's own fault."""
    hours = pin["maxAgeHours"]
    if not hours:
        return None
    if signature is not None and b"date" not in signed_headers(signature):
        return Verdict(False, "the signature does not sign Date, so the message's age is unknown", xcode="5.7.21")
    # The last Date is the one the signature covers (RFC 6376 §5.4.2); single_fields() refuses a
    # second one before this, so here there is one.
    dates = [v for n, v in headers if n.lower() == "date"]
    try:
        sent = email.utils.parsedate_to_datetime(dates[-1].strip()).timestamp()
    except (IndexError, TypeError, ValueError):
        return Verdict(False, "the message has no readable Date header")
    age = time.time() - sent
    if age < -2 * 3600:
        # A future Date replays nothing yet: defer, and the retry that comes inside the window passes.
        return Verdict(False, f"the signed Date is {duration(-age)} in the future (at most 2 h allowed; "
                       f"{clock.text if clock else 'no time service to ask'})", "451", "4.7.0", undecided=True)
    if age > hours * 3600:
        text = f"the signed Date is {duration(age)} old (max-age {hours} h)"
        if clock is not None and not clock.synced:
            return Verdict(False, f"{text}, and this node's clock is not synchronised ({clock.text}): "
                           "cannot tell", "451", "4.7.0", undecided=True)
        if clock is not None and age - clock.error <= hours * 3600:
            return Verdict(False, f"{text}, within this node's clock error ({clock.text}): cannot tell",
                           "451", "4.7.0", undecided=True)
        return Verdict(False, f"{text}: a replayed message?")
    return None


def header_values(headers, name):
    return [v.strip() for n, v in headers if n.lower() == name.lower()]


def header_value(headers, name):
    values = header_values(headers, name)
    return values[0] if len(values) == 1 else None


# Fields a message carries at most once (RFC 5322 §3.6, RFC 2045 §3). A verifier hashes the last copy
# of a signed field (RFC 6376 §5.4.2, §8.15), so a copy added above a genuine message shows readers, and
# anything that reads the first copy, a value no signature covers; Exchange Online writes one of each.
SINGLE_FIELDS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Date", "Subject", "Message-ID",
                 "In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding")


def single_fields(headers):
    for name in SINGLE_FIELDS:
        count = len(header_values(headers, name))
        if count > 1:
            return Verdict(False, f"the message has {count} {name} fields (RFC 5322 allows one; a signature "
                                  "covers only the last): a copy added to a genuine message?")
    return None


def exactly_one(headers, name, what):
    """A Verdict when header NAME is not there exactly once, else None."""
    count = len(header_values(headers, name))
    if count == 1:
        return None
    state = "missing" if count == 0 else f"repeated ({count} copies)"
    return Verdict(False, f"header {name} is {state}; want exactly one ({what})")


def decide(pin, headers, message, secret):
    """Every requirement of the pin, in order; the first failure is the verdict."""
    twice = single_fields(headers)
    if twice:
        return twice
    if pin.get("secretHeader"):
        if secret is None:
            return Verdict(False, "the secret header's value is not installed on this node", "451", "4.7.0", True)
        wrong = exactly_one(headers, pin["secretHeader"], "tenant A's transport rule sets it")
        if wrong:
            return wrong
        if not hmac.compare_digest(header_value(headers, pin["secretHeader"]).encode(), secret.encode()):
            return Verdict(False, f"header {pin['secretHeader']} is wrong (tenant A's transport rule)")
    passed = Verdict(True, "secret-header")
    if pin["dkim"]:
        sigs = [(i, signature_tags(v)) for i, v in enumerate(v for n, v in headers if n.lower() == "dkim-signature")]
        passed = check_dkim(pin, message, sigs)
        if not passed.ok:
            return passed
        late = check_date(pin, headers, passed.signature, node_clock())
        if late:
            return late
    for key, header in (("originatorOrg", "X-OriginatorOrg"), ("tenantId", "X-MS-Exchange-CrossTenant-Id")):
        if pin.get(key):
            wrong = exactly_one(headers, header, pin[key])
            if wrong:
                return wrong
            got = header_value(headers, header)
            if got.lower() != pin[key]:
                return Verdict(False, f"{header} is {got!r}, not {pin[key]}")
    return passed


def read_secret():
    try:
        with open(SECRET_FILE, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


@Milter.header_leading_space
class PinMilter(Milter.Base):
    # No reply to the collecting callbacks: Postfix need not wait for the milter on every header.
    @Milter.noreply
    def envfrom(self, sender, *params):
        self.sender = sender
        self.headers = []
        self.chunks = []
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        self.chunks.append(chunk)
        return Milter.CONTINUE

    def remove_headers(self, name, which=lambda value: True):
        """Deletes the copies of header NAME whose value WHICH selects (milter indexes count from 1)."""
        values = [v for h, v in self.headers if h.lower() == name.lower()]
        for n in range(len(values), 0, -1):  # from the last, so earlier indexes stay valid
            if which(values[n - 1]):
                self.chgheader(name, n, None)

    def header_block(self):
        """The header lines as received, CRLF-terminated (what DKIM and the MIME parser read)."""
        return b"".join(f"{n}:{v}".replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape") + b"\r\n"
                        for n, v in self.headers)

    def rewrite_calendar(self, queue_id, block, body):
        """Meeting addresses get From's translation; any trouble leaves the body as sent (never lost)."""
        if not calendar_rewrite.may_hold_calendar(block, body):
            return
        try:
            policy = CALENDAR.current()
            if policy is None:
                log.warning("%s: calendar left as sent: %s is not installed", queue_id, CALENDAR_PATH)
                return
            new_body, notes = calendar_rewrite.rewrite_message(block, body, policy)
        except Exception as e:  # a bug here must not cost the message: log it loudly, relay as sent
            log.error("%s: calendar left as sent: %s: %s", queue_id, e.__class__.__name__, e)
            return
        for note in notes:
            log.info("%s: calendar: %s", queue_id, note)
        if new_body is not None:
            self.replacebody(new_body)

    def eom(self):
        policy = POLICY.current()
        queue_id = self.getsymval("i") or "-"
        if policy is None:
            self.setreply("451", "4.7.0", "header-rewrite: tenant pins are not installed on this node yet")
            return Milter.TEMPFAIL
        name = policy["verdictHeader"]
        # A verdict header from outside is a forgery: remove every copy before anything else.
        self.remove_headers(name)
        block, body = self.header_block(), b"".join(self.chunks)
        domain = domain_of(self.sender) or domain_of(email.utils.parseaddr(header_value(self.headers, "From") or "")[1])
        pin = pin_for(policy["pins"], domain)
        if pin is None:
            verdict = Verdict(False, f"no tenant pin for sender domain {domain or '(none)'}")
            pin = {"mode": "enforce", "source": "maps/tenant_pins"}
        elif pin["mode"] == "unpinned":
            verdict = Verdict(True, "unpinned domain: nothing checked")
        else:
            verdict = decide(pin, self.headers, block + b"\r\n" + body, read_secret())
        state = "pass" if verdict.ok else ("temperror" if verdict.undecided else "fail")
        stamp = f"{state} ({pin['mode']}) {domain}: {verdict.text} [{pin['source']}]"
        log.info("%s: from=<%s> %s", queue_id, self.sender.strip("<>"), stamp)
        if not verdict.ok and pin["mode"] != "monitor":
            self.setreply(verdict.code, verdict.xcode,
                          f"header-rewrite: tenant pinning {state} for {domain}: {verdict.text}")
            return Milter.TEMPFAIL if verdict.undecided else Milter.REJECT
        if verdict.ok and pin.get("secretHeader"):
            self.remove_headers(pin["secretHeader"])
        if verdict.ok and pin.get("dkim") and not pin.get("keepSignatures"):
            # Rewriting From breaks tenant A's signatures: remove them so tenant B's recipients and
            # DMARC reports never see a failing d=old.example signature.
            self.remove_headers("DKIM-Signature", lambda v: signature_domain(signature_tags(v)) in pin["dkim"])
        self.rewrite_calendar(queue_id, block, body)
        self.addheader(name, " " + stamp)  # values keep their leading space (header_leading_space)
        return Milter.ACCEPT


def main():
    global POLICY, CALENDAR, SECRET_FILE, CALENDAR_PATH
    policy_path, socket_path, SECRET_FILE, CALENDAR_PATH = sys.argv[1:5]
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="header-rewrite-pin: %(message)s")
    POLICY = calendar_rewrite.LiveJson(
        policy_path, lambda data: log.info("policy %s loaded: %d pinned domain(s)", policy_path, len(data["pins"]))
    )
    CALENDAR = calendar_rewrite.LiveJson(
        CALENDAR_PATH,
        lambda data: log.info("calendar policy %s loaded: %d translation(s)", CALENDAR_PATH, len(data["translations"])),
    )
    Milter.factory = PinMilter
    Milter.set_flags(Milter.CHGHDRS + Milter.ADDHDRS + Milter.CHGBODY)
    log.info("listening on %s, policy %s", socket_path, policy_path)
    # The socket is open to all; its directory (header-rewrite-pin:postfix, 0750) lets only Postfix reach it.
    os.umask(0)
    Milter.runmilter("header-rewrite-pin", socket_path, 240)


if __name__ == "__main__":
    main()
