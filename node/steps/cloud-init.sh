#!/bin/bash
# header-rewrite step "cloud-init": wait until cloud-init has finished first boot (packages, network).
# Exit 2 from cloud-init means "done, with recoverable errors". A first boot with package upgrades
# takes minutes: a progress line every HEARTBEAT seconds keeps the SSH session from looking idle to
# NAT and firewall timeouts.
set -u
HEARTBEAT=${HEARTBEAT:-20}
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init status --wait >/dev/null 2>&1 &
  waiter=$!
  started=$SECONDS
  while kill -0 "$waiter" 2>/dev/null; do
    for _ in $(seq "$HEARTBEAT"); do kill -0 "$waiter" 2>/dev/null || break; sleep 1; done
    if kill -0 "$waiter" 2>/dev/null; then
      echo "cloud-init still running after $((SECONDS - started)) s: $(cloud-init status 2>/dev/null | tr '\n' ' ')"
    fi
  done
  wait "$waiter"
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    echo "cloud-init failed (exit $rc):" >&2
    cloud-init status --long >&2 || true
    # What the first-boot commands said (header-rewrite-network names the image or network problem).
    echo "--- last lines of /var/log/cloud-init-output.log:" >&2
    tail -n 15 /var/log/cloud-init-output.log >&2 2>/dev/null || true
    exit 1
  fi
fi
command -v postmap >/dev/null || { echo "postfix is not installed after cloud-init" >&2; exit 1; }
echo "cloud-init finished"
