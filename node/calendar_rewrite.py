# header-rewrite: calendar user addresses in meeting messages (docs/relay.md, "Meeting invitations").
#
# Postfix rewrites the sender header fields but never a body. Exchange matches a meeting response
# using the headers and the iCalendar part together, so the calendar's ORGANIZER / ATTENDEE addresses
# (and SENT-BY, DELEGATED-*, X-MS-OLK-SENDER) get the same translation as From: maps/translate_domains
# with canonical(5)'s lookup order, except for domains maps/calendar_addresses marks "keep".
# Only text/calendar (and application/ics) parts change, and only the content lines that carry a
# translated address; a part under a signature (multipart/signed, S/MIME) or inside an attached
# message is never opened. The iCalendar content lines are parsed by icalendar (Debian
# python3-icalendar), the MIME structure by Python's email package.
import base64
import binascii
import json
import os
import quopri
import re
from email import policy as email_policy
from email.parser import BytesParser

from icalendar import Calendar
from icalendar.parser import Contentline, foldline
from icalendar.prop import vCalAddress

CALENDAR_TYPES = {"text/calendar", "application/ics"}
# A signature covers these (changing a byte breaks it), or they are another message (a forwarded invitation).
SEALED_TYPES = {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}
ADDRESS_PROPERTIES = {"ORGANIZER", "ATTENDEE", "X-MS-OLK-SENDER"}
ADDRESS_PARAMETERS = ("SENT-BY", "DELEGATED-TO", "DELEGATED-FROM")
MAYBE_CALENDAR = re.compile(rb"(?i)content-type:[ \t]*(?:\r?\n[ \t]+)?(?:text/calendar|application/ics)")
PROPERTY = re.compile(r"(?i)^(ORGANIZER|ATTENDEE|X-MS-OLK-SENDER)[;:]")
MAILTO = re.compile(r"(?i)^(mailto:)(.+)$")


class Translation:
    """maps/translate_domains as canonical(5) applies it: user@domain first, then @domain."""

    def __init__(self, policy):
        self.table = policy["translations"]
        self.keep = set(policy["keep"])

    def address(self, address):
        local, at, domain = address.rpartition("@")
        if not at or not local or domain.lower() in self.keep:
            return None
        new = self.table.get(address.lower())
        if new is None:
            new = self.table.get("@" + domain.lower())
            if new is None:
                return None
            if new.startswith("@"):
                new = local + new
        return None if new.lower() == address.lower() else new

    def uri(self, uri):
        m = MAILTO.match(uri.strip())
        new = m and self.address(m.group(2))
        return m.group(1) + new if new else None


def content_lines(text):
    """The folded content lines of an iCalendar text, each with its line end, unchanged."""
    group = []
    for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
        if group and line[:1] in (" ", "\t"):
            group.append(line)
            continue
        if group:
            yield "".join(group)
        group = [line]
    if group:
        yield "".join(group)


def rewrite_line(folded, translation, changes):
    """One folded content line: rewritten (and folded again) if it carries a translated address."""
    end = "\r\n" if folded.endswith("\r\n") else ("\n" if folded.endswith("\n") else "")
    unfolded = re.sub(r"\r?\n[ \t]", "", folded[: len(folded) - len(end)])
    if not PROPERTY.match(unfolded):
        return folded
    name, params, value = Contentline(unfolded).parts()
    sent_value, params_changed = value, False
    new = translation.uri(value)
    if new:
        changes.append(f"{name.upper()} {value} -> {new}")
        value = new
    for key in ADDRESS_PARAMETERS:
        if key not in params:
            continue
        old = params[key]
        values = old if isinstance(old, list) else [old]
        news = [translation.uri(v) or v for v in values]
        if news != values:
            changes.append(f"{name.upper()};{key} {','.join(values)} -> {','.join(news)}")
            params[key] = news if isinstance(old, list) else news[0]
            params_changed = True
    if value == sent_value and not params_changed:
        return folded
    if not params_changed and unfolded.endswith(sent_value):
        # Only the address changed: the name and parameters stay exactly as written.
        line = unfolded[: len(unfolded) - len(sent_value)] + value
    else:
        line = Contentline.from_parts(name, params, vCalAddress(value), sorted=False)
    return foldline(line, fold_sep=(end or "\r\n") + " ") + end


def rewrite_calendar(text, translation):
    """(new text, changes); the text is unchanged when nothing is translated."""
    changes = []
    new = "".join(rewrite_line(line, translation, changes) for line in content_lines(text))
    if changes:
        Calendar.from_ical(new)  # still one calendar: raises otherwise, and the part stays as sent
    return new, changes


def decode_part(raw, encoding):
    data = raw.encode("ascii", "surrogateescape")
    if encoding == "base64":
        return base64.b64decode(data)
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data


def encode_part(data, encoding, raw):
    """DATA in the part's transfer encoding, shaped like the original (line ends, width, final newline)."""
    newline = "\r\n" if "\r\n" in raw else "\n"
    if encoding == "base64":
        width = len(raw.split("\n", 1)[0].rstrip("\r")) or 76
        width = width - width % 4 if width >= 4 else 76
        text = base64.b64encode(data).decode("ascii")
        out = newline.join(text[i : i + width] for i in range(0, len(text), width))
    elif encoding == "quoted-printable":
        out = quopri.encodestring(data).decode("ascii").replace("\r\n", "\n").replace("\n", newline)
        out = out.rstrip(newline) if not out.endswith("=" + newline) else out
    else:
        out = data.decode("ascii", "surrogateescape")
    trailing = raw[len(raw.rstrip("\r\n")) :]
    return out.rstrip("\r\n") + trailing


def calendar_parts(part):
    """The calendar leaves this relay may change: never under a signature or inside an attached message."""
    ctype = part.get_content_type()
    if ctype in SEALED_TYPES or ctype.startswith("message/"):
        return
    if part.is_multipart():
        for sub in part.get_payload():
            yield from calendar_parts(sub)
    elif ctype in CALENDAR_TYPES:
        yield part


def may_hold_calendar(header_block, body):
    return bool(MAYBE_CALENDAR.search(header_block) or MAYBE_CALENDAR.search(body))


def rewrite_message(header_block, body, policy):
    """(new body or None, notes). HEADER_BLOCK: the top-level header lines (CRLF), BODY: as Postfix sent it."""
    translation = Translation(policy)
    message = BytesParser(policy=email_policy.compat32).parsebytes(header_block + b"\r\n" + body)
    edits, notes = {}, []
    for part in calendar_parts(message):
        raw = part.get_payload()
        if not isinstance(raw, str) or not raw:
            continue
        encoding = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        charset = part.get_content_charset() or "utf-8"
        try:
            text = decode_part(raw, encoding).decode(charset)
            new_text, changes = rewrite_calendar(text, translation)
        except (ValueError, LookupError, binascii.Error, UnicodeError) as e:
            notes.append(f"a {part.get_content_type()} part was left as sent: {e}")
            continue
        if changes:
            edits.setdefault(raw, []).append(encode_part(new_text.encode(charset), encoding, raw))
            notes.extend(changes)
    new_body = body
    for raw, replacements in edits.items():
        old = raw.encode("ascii", "surrogateescape")
        # Replace by bytes only where every copy is a part this relay may change (never a signed one).
        if body.count(old) != len(replacements) or len(set(replacements)) != 1:
            notes.append("a calendar part also appears where it must not change: left as sent")
            continue
        new_body = new_body.replace(old, replacements[0].encode("ascii", "surrogateescape"))
    return (new_body if new_body != body else None), notes


class LiveJson:
    """A JSON file of the live release, re-read whenever the release switches (a redeploy)."""

    def __init__(self, path, on_load=lambda data: None):
        self.path, self.on_load, self.stamp, self.data = path, on_load, None, None

    def current(self):
        """The file's data, or None while it is not installed."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if stamp != self.stamp:
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)
            self.stamp = stamp
            self.on_load(self.data)
        return self.data
