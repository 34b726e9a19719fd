#!/bin/bash
# Runs the date-sensitive test files with every clock they touch moved ahead (a year by default):
# this machine's processes through libfaketime in LD_PRELOAD, each test node's through its own
# /etc/ld.so.preload (sandbox/node-boot.sh), so Postfix and the pinning milter see the moved clock too.
# A suite that passes today and a year from now does not depend on the day it runs.
# usage: bash scripts/test-future.sh [OFFSET]   (libfaketime syntax, default +365d)
set -euo pipefail
cd "$(dirname "$0")/.."
OFFSET=${1:-+365d}
read -r -a FILES <<<"${HR_FUTURE_FILES:-test/node/postfix-corpus.test.ts test/node/postfix-pinning.test.ts test/unit/certificates.test.ts test/unit/m365.test.ts}"
# vitest takes a name as a filter and quietly runs fewer files for one that matches nothing.
for f in "${FILES[@]}"; do [ -f "$f" ] || { echo "test-future: no such test file: $f" >&2; exit 1; }; done
LIB=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' || true)
[ -n "$LIB" ] || { echo "test-future: libfaketime not found (Debian package faketime): sudo bash scripts/install-deps.sh" >&2; exit 1; }
now=$(date -u +%s)
moved=$(LD_PRELOAD=$LIB FAKETIME=$OFFSET date -u +%s)
[ "$moved" -gt $((now + 86400)) ] || [ "$moved" -lt $((now - 86400)) ] || { echo "test-future: libfaketime did not move the clock ($OFFSET)" >&2; exit 1; }
echo "test-future: the clock of every process below reads $(LD_PRELOAD=$LIB FAKETIME=$OFFSET date -u '+%F %T UTC') (real: $(date -u '+%F %T UTC'))"
# Monotonic clocks stay real on this machine: timers and timeouts measure real intervals.
export LD_PRELOAD=$LIB FAKETIME=$OFFSET FAKETIME_DONT_FAKE_MONOTONIC=1
exec npx vitest run "${FILES[@]}"
