#!/usr/bin/python3
# What a message looks like to the corpus tests: its header fields exactly as written (folding and
# encoded words kept), and per MIME leaf part its type, the SHA-256 of its body as transmitted, and
# for text/calendar the ORGANIZER/ATTENDEE/X-MS-OLK-SENDER lines (unfolded). Reads the message on stdin, prints JSON.
import email
import email.policy
import hashlib
import json
import re
import sys


def body_hash(part):
    # The body as transmitted (before any decoding), line ends normalised: SMTP carries CRLF and
    # Postfix's queue tools print LF, so only the bytes between line ends count.
    raw = part.get_payload(decode=False)
    text = raw if isinstance(raw, str) else ""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def calendar_lines(part):
    data = part.get_payload(decode=True) or b""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    text = re.sub(r"\n[ \t]", "", text)  # RFC 5545 unfolding
    return [l for l in text.split("\n") if re.match(r"^(ORGANIZER|ATTENDEE|X-MS-OLK-SENDER)[;:]", l)]


def leaves(part, path):
    if part.is_multipart():
        out = []
        for i, sub in enumerate(part.get_payload(), 1):
            out += leaves(sub, f"{path}.{i}" if path else str(i))
        return out
    entry = {"path": path or "1", "type": part.get_content_type(), "sha256": body_hash(part)}
    if part.get_content_type() == "text/calendar":
        entry["calendar"] = calendar_lines(part)
    return [entry]


message = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.compat32)
print(
    json.dumps(
        {
            "headers": [[name, value] for name, value in message.raw_items()],
            "parts": leaves(message, ""),
        }
    )
)
