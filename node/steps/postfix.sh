#!/bin/bash
# header-rewrite step "postfix": the staged, atomic Postfix deploy (docs: "The staged, atomic deploy").
# Everything is written and checked in a new release directory; /etc/postfix is a symlink to the
# live release and is switched with one rename(2), then Postfix reloads. Any failure before the
# switch leaves the live configuration untouched; a failed reload switches back.
# Facts: NODE, BUNDLE, LIVE, RELEASES, KEEP, a release's own file names (*_FILE), POSTFIX_LOG,
# NEEDED_TLS_FILES, NEEDED_CLIENT_CERTIFICATES, RENDERED_FILES, INDEXED_MAPS, the milter's paths
# (PIN_*); stage_rendered_files, check_staged_maps, write_probe_record and ship_pin_milter carry
# the rendered content. node/lib/postfix-release.sh, ship.sh and pin-user.sh come before this file.
set -euo pipefail
umask 022
fail() {
  echo "header-rewrite: deploy of bundle ${BUNDLE:0:12} FAILED on $NODE: $*" >&2
  echo "header-rewrite: the live configuration was not changed" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"
command -v postmap >/dev/null || fail "Postfix is not installed (apt-get install postfix postfix-cdb)"
[ -d "$LIVE" ] || fail "$LIVE does not exist"
for f in "${NEEDED_TLS_FILES[@]}"; do
  [ -s "$f" ] || fail "TLS file $f is missing: the certificate step must succeed first"
done
for f in "${NEEDED_CLIENT_CERTIFICATES[@]}"; do
  [ -s "$f" ] || fail "client certificate $f is missing: the certificate and client-certificates steps must succeed first"
done
lock_releases || fail "another deploy still holds $RELEASES/.lock after 10 min"

# 0. Complete a switch that a cut deploy left unloaded first, or return from it.
if ! complete_cut_switch; then
  CUT=$(readlink "$LIVE")
  back=$(cat "$CUT/$PREVIOUS_FILE" 2>/dev/null || true)
  { [ -d "$back" ] && switch_live "$back" && load_live "$CUT" >/dev/null; } || true
  fail "the release a cut deploy left live did not load; switched back to ${back:-nothing}"
fi
STAGE=$(mktemp -d "$RELEASES/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
staged=("${RENDERED_FILES[@]/#/$STAGE/}")

# 1. Start from the live directory (keeps the package's own files), drop what this deploy manages.
cp -a "$LIVE/." "$STAGE/"
# What a release records about itself (loaded, checked) is its own, never inherited.
rm -f "$STAGE"/*.cdb "$STAGE"/.probe.* "$STAGE/$CHECKED_FILE" "${staged[@]}"
echo pending >"$STAGE/$LOADED_FILE"

# 2. Write the rendered files.
stage_rendered_files
chmod 644 "${staged[@]}"
# Postfix re-reads a main.cf changed within the last second, 300 ms at a time, until it "cools down"
# (dict_load_file in util/dict.c): up to 2 s per command here. These files are complete: date them back.
touch -m -d "@$(($(date +%s) - 2))" "${staged[@]}"

# 3. Build the indexed maps with postmap (never postconf), in the stage.
# (A node without postfix-cdb fails here, with Postfix's "unsupported dictionary type: cdb".)
for m in "${INDEXED_MAPS[@]}"; do
  out=$(postmap -c "$STAGE" "cdb:$STAGE/$m" 2>&1) || {
    case $out in
      *"unsupported dictionary type: cdb"*) fail "the cdb map type is missing (apt-get install postfix-cdb): $out" ;;
      *) fail "postmap $m: $out" ;;
    esac
  }
  [ -z "$out" ] || fail "postmap $m: $out"
done

# 4. Postfix must accept the staged main.cf and master.cf without a single warning.
out=$(postconf -c "$STAGE" -n 2>&1 >/dev/null) || fail "postconf -n: $out"
[ -z "$out" ] || fail "postconf -n: $out"
out=$(postconf -c "$STAGE" -M 2>&1 >/dev/null) || fail "postconf -M: $out"
[ -z "$out" ] || fail "postconf -M: $out"

# 5. Lookups through the staged maps return exactly what was rendered: every key is found, and
#    the sampled keys (on stdin) give exactly the rendered values WANT.
check_map() {
  local m=$1 count=$2 want=$3 n got
  n=$(grep -v -e '^#' -e '^$' "$STAGE/$m" | awk '{print $1}' | postmap -c "$STAGE" -q - "cdb:$STAGE/$m" | wc -l)
  [ "$n" = "$count" ] || fail "$m: only $n of $count rendered keys are found in the built map"
  postmap -c "$STAGE" -q - "cdb:$STAGE/$m" >"$STAGE/.probe.$m" || true
  got=$(tr '\t' ' ' <"$STAGE/.probe.$m")
  [ "$got" = "$want" ] ||
    fail "$m: staged lookups differ from the rendered map: $(diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | head -5)"
}
check_staged_maps
rm -f "$STAGE"/.probe.*
echo "$NODE $BUNDLE" >"$STAGE/$MARKER_FILE"
write_probe_record >"$STAGE/$PROBES_FILE"

# 5b. The tenant-pinning milter must answer before Postfix hands it mail. systemd supervises it on
#     a node; without systemd (a container) start-stop-daemon does. It restarts only when its
#     program changed: a policy change is picked up from the live release.
/usr/bin/python3 -c 'import Milter, dkim, dns.resolver, icalendar' 2>/dev/null ||
  fail "the pinning milter needs Python modules: apt-get install python3-milter python3-dkim python3-dnspython python3-icalendar"
install -d -m 755 "$(dirname "$PIN_PROGRAM")"
pin_user
install -d -m 750 -o "$PIN_USER" -g postfix "$(dirname "$PIN_SOCKET")"
SHIPPED=no
ship_pin_milter || fail "the tenant-pinning milter could not be installed"
if [ -d /run/systemd/system ]; then
  unit=/etc/systemd/system/$PIN_SERVICE.service
  was=$SHIPPED SHIPPED=no
  ship_pin_milter_unit || fail "$unit could not be installed"
  [ "$SHIPPED" = no ] || systemctl daemon-reload
  [ "$was" = no ] || SHIPPED=yes
  systemctl is-enabled --quiet "$PIN_SERVICE" 2>/dev/null || systemctl enable --quiet "$PIN_SERVICE"
  if [ "$SHIPPED" = yes ] || ! systemctl is-active --quiet "$PIN_SERVICE"; then systemctl restart "$PIN_SERVICE"; fi
else
  running=no
  [ -s "$PIN_PIDFILE" ] && kill -0 "$(cat "$PIN_PIDFILE")" 2>/dev/null && running=yes
  if [ "$running" = yes ] && [ "$SHIPPED" = yes ]; then
    start-stop-daemon --stop --quiet --pidfile "$PIN_PIDFILE" --retry 10 --remove-pidfile
    running=no
  fi
  if [ "$running" = no ]; then
    touch "$PIN_LOG" && chown "$PIN_USER:$PIN_USER" "$PIN_LOG"
    start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$PIN_PIDFILE" --chuid "$PIN_USER:$PIN_USER" \
      --output "$PIN_LOG" --exec /usr/bin/python3 -- "$PIN_PROGRAM" "${PIN_ARGS[@]}"
  fi
fi
answers() {
  /usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$PIN_SOCKET" 2>/dev/null
}
for _ in $(seq 100); do answers && break; sleep 0.1; done
answers || fail "the tenant-pinning milter does not answer on $PIN_SOCKET (journalctl -u $PIN_SERVICE, or $PIN_LOG)"

# 6. Switch: one rename(2) of the /etc/postfix symlink, then load it into Postfix.
# Nanoseconds: names are unique and sort in deploy order, even for two deploys in one second.
NAME="$(date -u +%Y%m%dT%H%M%S.%NZ)-${BUNDLE:0:12}"
# Where the verify step returns if this release fails its post-deploy check.
if [ -L "$LIVE" ]; then PREVIOUS=$(readlink "$LIVE"); else PREVIOUS="$RELEASES/original"; fi
echo "$PREVIOUS" > "$STAGE/$PREVIOUS_FILE"
rollback() {
  { switch_live "$PREVIOUS" && load_live "$RELEASES/$NAME" >/dev/null; } || true
  echo "header-rewrite: deploy of bundle ${BUNDLE:0:12} FAILED on $NODE: $*; switched back to $PREVIOUS" >&2 || true
  exit 1
}
if [ -L "$LIVE" ] && postfix status >/dev/null 2>&1 && [ "$(restart_params "$PREVIOUS")" != "$(restart_params "$STAGE")" ]; then
  echo "header-rewrite: inet_interfaces or inet_protocols changed: restarting Postfix (queued mail stays)"
fi
# Switch and load are one unit: a closed session (hang-up, broken pipe, interrupt) cannot split
# them, and the next postfix or verify step completes a switch that something harder cut (step 0).
go_live() {
  mv "$STAGE" "$RELEASES/$NAME"
  trap - EXIT
  if [ -L "$LIVE" ]; then
    switch_live "$RELEASES/$NAME"
  else
    # First deploy: keep the package's directory aside; from now on $LIVE is a symlink.
    mv "$LIVE" "$RELEASES/original"
    ln -s "$RELEASES/$NAME" "$LIVE"
  fi
  out=$(load_live "$PREVIOUS") || rollback "$out"
}
trap '' HUP INT TERM PIPE
go_live
trap - HUP INT TERM PIPE

# 7. Keep the last $KEEP releases (and the package original) for inspection and rollback.
find "$RELEASES" -mindepth 1 -maxdepth 1 -name '2*-*' | sort | head -n "-$KEEP" | while read -r old; do
  [ "$old" = "$(readlink "$LIVE")" ] || rm -rf "$old"
done
echo "header-rewrite: $NODE now runs bundle ${BUNDLE:0:12} ($NAME)"
