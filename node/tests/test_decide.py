"""The pinning milter's verdict on a message, decide(), without a Postfix (Debian's python3-pytest).

Messages are signed here with dkimpy and a key made for the run; the key record comes from a stand-in
for the milter's DNS lookup, and the clock from a stand-in for chrony. What a node answers end to end
is tested through real Postfix (test/node/postfix-pinning.test.ts) and on the sandbox.
"""

import base64
import email.utils
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

NODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(NODE))
spec = importlib.util.spec_from_file_location("tenant_pin_milter", NODE / "tenant-pin-milter.py")
milter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(milter)

SELECTOR = b"selector1"


def rsa_key():
    """A fresh RSA-2048 key: (private PEM, the DNS record publishing its public half)."""
    private = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=private,
                         capture_output=True, check=True).stdout
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


KEYS = {b"old.example": rsa_key(), b"impostor.example": rsa_key()}


@pytest.fixture(autouse=True)
def dns_and_clock(monkeypatch):
    """Key records as the domains publish them; a synchronised clock."""
    def lookup(name, timeout=None):
        for domain, (_, record) in KEYS.items():
            if name == SELECTOR + b"._domainkey." + domain + b".":
                return record
        return None
    monkeypatch.setattr(milter, "txt_lookup", lookup)
    monkeypatch.setattr(milter, "node_clock", lambda: milter.Clock(True, 0.01, "chrony: synchronised"))


def message(sender="alice@old.example", extra=b"", body=b"Hello.\r\n"):
    return (f"From: Alice <{sender}>\r\nTo: bob@partner.example\r\nSubject: Quarterly figures\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <1@old.example>\r\n").encode() + extra + b"\r\n" + body


def signed(raw, domain=b"old.example", headers=(b"from", b"to", b"subject", b"date", b"message-id"), **kw):
    signature = dkim.sign(raw, SELECTOR, domain, KEYS[domain][0], include_headers=list(headers), **kw)
    return signature + raw


def as_milter_sees(raw):
    """(headers as [(name, value)] with the value's leading space, whole message), as eom() has them."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.split(r"\r\n(?![ \t])", head)
    return [tuple(f.split(":", 1)) for f in fields], raw


def verdict(raw, pin=None, secret=None):
    headers, whole = as_milter_sees(raw)
    return milter.decide(pin or PIN, headers, whole, secret)


PIN = {"dkim": ["old.example"], "maxAgeHours": 168}


def test_a_message_signed_by_tenant_a_passes():
    v = verdict(signed(message()))
    assert (v.ok, v.text) == (True, "dkim d=old.example s=selector1")


def test_a_body_changed_after_signing_does_not_verify():
    raw = signed(message()).replace(b"Hello.", b"Hello, pay this invoice.")
    v = verdict(raw)
    assert (v.ok, v.code, v.xcode) == (False, "550", "5.7.20")
    assert "the signature by old.example does not verify" in v.text


def test_another_tenant_signing_as_itself_is_refused():
    v = verdict(signed(message(), domain=b"impostor.example"))
    assert (v.ok, v.code, v.xcode, v.text) == (False, "550", "5.7.21", "no DKIM signature by old.example")


def test_a_signature_that_does_not_cover_from_is_refused():
    # dkimpy will not make one; other signers will: the same signature with From left out of h=.
    raw = re.sub(rb"h=from\s*:\s*", b"h=", signed(message()), count=1)
    assert b"h=to" in raw
    v = verdict(raw)
    assert (v.ok, v.xcode, v.text) == (False, "5.7.21", "the signature by old.example does not sign From")


def test_a_body_length_limit_is_refused():
    v = verdict(signed(message(), length=True))
    assert not v.ok and "has l=" in v.text


def test_a_from_added_above_a_genuine_message_is_refused():
    raw = b"From: ceo@old.example\r\n" + signed(message())
    v = verdict(raw)
    assert (v.ok, v.code) == (False, "550")
    assert v.text.startswith("the message has 2 From fields")


def test_a_key_that_cannot_be_fetched_defers(monkeypatch):
    def down(name, timeout=None):
        raise milter.DnsUndecided("selector1._domainkey.old.example: Timeout")
    monkeypatch.setattr(milter, "txt_lookup", down)
    v = verdict(signed(message()))
    assert (v.ok, v.code, v.xcode, v.undecided) == (False, "451", "4.7.0", True)
    assert "could not be fetched" in v.text


SECRET_PIN = {"dkim": [], "maxAgeHours": 0, "secretHeader": "X-Tenant-A-Token"}


@pytest.mark.parametrize("extra, secret, ok, code, text", [
    (b"", "right-value-of-some-length", False, "550", "header X-Tenant-A-Token is missing"),
    (b"X-Tenant-A-Token: guessed\r\n", "right-value-of-some-length", False, "550", "is wrong"),
    (b"X-Tenant-A-Token: right-value-of-some-length\r\nX-Tenant-A-Token: right-value-of-some-length\r\n",
     "right-value-of-some-length", False, "550", "repeated (2 copies)"),
    (b"X-Tenant-A-Token: right-value-of-some-length\r\n", "right-value-of-some-length", True, None, "secret-header"),
    (b"X-Tenant-A-Token: right-value-of-some-length\r\n", None, False, "451", "not installed on this node"),
])
def test_the_secret_header(extra, secret, ok, code, text):
    v = verdict(message(extra=extra), SECRET_PIN, secret)
    assert v.ok == ok and text in v.text
    if not ok:
        assert v.code == code


def test_originator_org_must_match_after_the_signature():
    pin = {**PIN, "originatorOrg": "old.example"}
    raw = signed(message(extra=b"X-OriginatorOrg: impostor.onmicrosoft.com\r\n"))
    v = verdict(raw, pin)
    assert (v.ok, v.text) == (False, "X-OriginatorOrg is 'impostor.onmicrosoft.com', not old.example")
    assert verdict(signed(message(extra=b"X-OriginatorOrg: old.example\r\n")), pin).ok


def test_a_domain_takes_its_own_pin_else_the_nearest_parent_line():
    pins = {"old.example": "own", ".old.example": "parent"}
    assert milter.pin_for(pins, "old.example") == "own"
    assert milter.pin_for(pins, "eu.sales.old.example") == "parent"
    assert milter.pin_for(pins, "other.example") is None
