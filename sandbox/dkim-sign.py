#!/usr/bin/python3
# Signs the message on stdin the way a tenant's Exchange Online would, with dkimpy (python3-dkim),
# and writes the signed message to stdout. For test mail only: the relay verifies, never signs.
# usage: dkim-sign.py KEYFILE DOMAIN SELECTOR CANON HEADERS [LENGTH]
#   CANON "relaxed/relaxed", "relaxed/simple", "simple/simple"; HEADERS comma-separated, a header
#   named twice is over-signed (no further copy can be added without breaking the signature);
#   LENGTH "l=" adds a body length tag (Exchange Online never does; the tests' attacker does).
import sys

import dkim

key_file, domain, selector, canon, headers = sys.argv[1:6]
length = sys.argv[6:7] == ["l="]
message = sys.stdin.buffer.read()
with open(key_file, "rb") as f:
    key = f.read()
header, body = canon.split("/")
signature = dkim.sign(
    message,
    selector.encode(),
    domain.encode(),
    key,
    canonicalize=(header.encode(), body.encode()),
    include_headers=[h.encode() for h in headers.split(",")],
    length=length,
)
sys.stdout.buffer.write(signature + message)
