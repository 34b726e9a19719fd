"""The pinning milter's Date window and its clock, without a Postfix (Debian's python3-pytest).

The milter is imported as the node runs it (node/tenant-pin-milter.py); what chrony says is given by
replacing the one call that asks it. What a node answers end to end is tested through real Postfix
(test/node/postfix-pinning.test.ts) and, with a really skewed chrony, on the sandbox (test/sandbox/faults.ts).
"""

import email.utils
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(NODE))
spec = importlib.util.spec_from_file_location("tenant_pin_milter", NODE / "tenant-pin-milter.py")
milter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(milter)

PIN = {"maxAgeHours": 168}
HOUR = 3600


def dated(age_seconds):
    return [("Date", email.utils.formatdate(time.time() - age_seconds))]


def synced(offset=0.002):
    return milter.Clock(True, abs(offset) + 0.01, f"chrony: synchronised to 192.0.2.123, {abs(offset):.3f} s slow")


@pytest.mark.parametrize(
    "age, clock, code, text",
    [
        (1 * HOUR, synced(), None, None),
        (-1 * HOUR, synced(), None, None),
        (-(3 * HOUR + 4 * 60 + 30), synced(), "451", "3 h 4 min in the future (at most 2 h allowed; chrony: synchronised"),
        (-(3 * HOUR), None, "451", "in the future (at most 2 h allowed; no time service to ask)"),
        (240 * HOUR, synced(), "550", "240 h 0 min old (max-age 168 h): a replayed message?"),
        (240 * HOUR, None, "550", "240 h 0 min old (max-age 168 h): a replayed message?"),
        (169 * HOUR, synced(10800.0), "451", "169 h 0 min old (max-age 168 h), within this node's clock error"),
        (172 * HOUR, synced(10800.0), "550", "172 h 0 min old (max-age 168 h): a replayed message?"),
        (
            240 * HOUR,
            milter.Clock(False, None, "chrony: Not synchronised"),
            "451",
            "and this node's clock is not synchronised (chrony: Not synchronised): cannot tell",
        ),
    ],
)
def test_only_a_verdict_the_clock_cannot_have_caused_is_permanent(age, clock, code, text):
    v = milter.check_date(PIN, dated(age), None, clock)
    if code is None:
        assert v is None
        return
    assert (v.code, v.ok) == (code, False)
    assert v.undecided == (code == "451")
    assert v.xcode == ("4.7.0" if code == "451" else "5.7.1")
    assert text in v.text


def test_exact_ages():
    assert milter.duration(48 * HOUR + 3 * 60 + 59) == "48 h 3 min"
    assert milter.duration(59) == "0 h 0 min"


class Chronyc:
    """What `chronyc -c -n tracking` prints, as the milter's one call to it sees it."""

    def __init__(self, monkeypatch, code=0, out="", err=""):
        self.calls = 0

        def run(args, **kw):
            self.calls += 1
            assert args[:2] == [milter.CHRONYC, "-c"]
            return subprocess.CompletedProcess(args, code, out, err)

        monkeypatch.setattr(milter.subprocess, "run", run)
        monkeypatch.setattr(milter.os.path, "exists", lambda p: p == milter.CHRONYC)
        milter._clock.update(at=-1e9, state=None)


TRACKING = "C000027B,192.0.2.123,2,1796550558.948,{offset},-0.000023,0.000014,-6.286,-4.744,61.519,{delay},{disp},64.0,{leap}\n"


def test_reads_chronys_offset_and_bounds_the_error(monkeypatch):
    Chronyc(monkeypatch, out=TRACKING.format(offset="-12.5", delay="0.020", disp="0.004", leap="Normal"))
    c = milter.node_clock()
    assert c.synced
    assert c.error == pytest.approx(12.5 + 0.010 + 0.004)
    assert c.text == "chrony: synchronised to 192.0.2.123, 12.500 s fast"


def test_asks_chrony_at_most_every_10_seconds(monkeypatch):
    probe = Chronyc(monkeypatch, out=TRACKING.format(offset="0.001", delay="0", disp="0", leap="Normal"))
    for _ in range(5):
        milter.node_clock()
    assert probe.calls == 1


@pytest.mark.parametrize(
    "code, out, err, text",
    [
        (0, TRACKING.format(offset="0", delay="0", disp="1", leap="Not synchronised"), "", "chrony: Not synchronised"),
        (1, "", "506 Cannot talk to daemon\n", "chronyd does not answer (506 Cannot talk to daemon)"),
    ],
)
def test_a_clock_chrony_cannot_vouch_for_is_not_synchronised(monkeypatch, code, out, err, text):
    Chronyc(monkeypatch, code=code, out=out, err=err)
    c = milter.node_clock()
    assert not c.synced
    assert c.text == text


def test_without_chrony_the_window_trusts_the_clock(monkeypatch):
    monkeypatch.setattr(milter.os.path, "exists", lambda p: False)
    milter._clock.update(at=-1e9, state=None)
    assert milter.node_clock() is None
