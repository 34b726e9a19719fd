#!/bin/bash
# header-rewrite step "metrics": Prometheus on the node. Debian's node and Postfix exporters, and
# header-rewrite's own metrics (certificates, next hops, queue age, refusals) written every 5
# minutes by the status collector for node-exporter's textfile collector. Also keeps Postfix's log
# readable by the exporter (group adm) and rotated. Last step: a metrics failure never holds back
# or rolls back mail.
# Facts: NODE, EXPORTERS (package names), EXPORTER_PORTS, NODE_EXPORTER_PORT, LISTENING (for the
# last line), METRICS_DIRS,
# POSTFIX_LOG, METRICS_SERVICE, METRICS_TEXTFILE; ship_metrics ships the collector, its spec, the
# exporters' settings, the units and the log rotation.
set -euo pipefail
fail() { echo "header-rewrite: metrics on $NODE: $*" >&2; exit 1; }
[ -d /run/systemd/system ] || fail "systemd is not running"
# Servers created before the exporters or chrony (the pinning milter's clock) were in user-data
# (read at first boot only) get them here; chrony starts on install, replacing systemd-timesyncd.
missing=()
for p in "${EXPORTERS[@]}" chrony; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null ||
    fail "could not install ${missing[*]} (apt-get install ${missing[*]})"
fi
SHIPPED=no
install -d -m 755 "${METRICS_DIRS[@]}"
ship_metrics || fail "could not install the metrics files"
# The exporter reads Postfix's log with group adm; postlogd creates it root-only.
touch "$POSTFIX_LOG" && chgrp adm "$POSTFIX_LOG" && chmod 640 "$POSTFIX_LOG"
systemctl daemon-reload
systemctl enable --quiet --now "${EXPORTERS[@]}" "$METRICS_SERVICE.timer" header-rewrite-postfix-logrotate.timer
if [ "$SHIPPED" = yes ]; then systemctl restart "${EXPORTERS[@]}"; fi
systemctl start "$METRICS_SERVICE.service" || fail "the metrics collector failed (journalctl -u $METRICS_SERVICE)"
scrape() {
  /usr/bin/python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$1/metrics" 2>/dev/null
}
for _ in $(seq 50); do
  all=yes
  for port in "${EXPORTER_PORTS[@]}"; do scrape "$port" >/dev/null || all=no; done
  [ "$all" = no ] || break
  sleep 0.2
done
for i in "${!EXPORTERS[@]}"; do
  scrape "${EXPORTER_PORTS[$i]}" >/dev/null ||
    fail "${EXPORTERS[$i]} does not answer on port ${EXPORTER_PORTS[$i]} (journalctl -u ${EXPORTERS[$i]})"
done
# Captured first: grep -q would close the pipe early, and pipefail would count that as a failure.
own=$(scrape "$NODE_EXPORTER_PORT" || true)
grep -q '^header_rewrite_metrics_timestamp_seconds ' <<<"$own" ||
  fail "node-exporter does not show header-rewrite's metrics ($METRICS_TEXTFILE)"
echo "metrics on $NODE: $LISTENING"
