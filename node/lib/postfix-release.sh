# shellcheck shell=bash
# header-rewrite: what the postfix and verify steps know about Postfix releases (both carry this).
# The caller sets LIVE (the /etc/postfix symlink), RELEASES (where releases live), POSTFIX_LOG, and
# the names of a release's own files: MARKER_FILE (fqdn and bundle), PREVIOUS_FILE (the release
# before it) and LOADED_FILE (once Postfix loaded it).

# The PID of Postfix's running master, or nothing (status 1).
master_pid() {
  local pid
  pid=$(tr -d ' ' <"$(postconf -h queue_directory)/pid/master.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# When a process started, in epoch seconds (the kernel's count, not the process's clock).
started_at() {
  awk -v tck="$(getconf CLK_TCK)" -v boot="$(awk '$1 == "btime" {print $2}' /proc/stat)" \
    '{print int(boot + $22 / tck)}' "/proc/$1/stat"
}

# Postfix runs the release $LIVE points at: its master started after the switch (lstat's time of
# the symlink), or a deploy reloaded that very master after the switch and saw it take effect.
# The marker alone says nothing: a deploy cut between switch and reload leaves the new marker live
# while Postfix still runs what it loaded before. A release staged before load tracking (no
# $LOADED_FILE; the stage writes "pending") is not judged.
release_loaded() {
  local pid
  [ -L "$LIVE" ] || return 1
  [ -e "$LIVE/$LOADED_FILE" ] || return 0
  pid=$(master_pid) || return 1
  [ "$(started_at "$pid")" -gt "$(stat -c %Y "$LIVE")" ] || [ "$(cat "$LIVE/$LOADED_FILE" 2>/dev/null)" = "master $pid" ]
}

# Every inet service of the live master.cf that is not listening (with who holds its port).
listeners_missing() {
  local name port holder missing=""
  for name in $(postconf -c "$LIVE" -M 2>/dev/null | awk '$2 == "inet" {print $1}'); do
    port=${name##*:}
    case $port in
      smtp) port=25 ;; submission) port=587 ;; smtps | submissions) port=465 ;;
      *[!0-9]*)
        port=$(getent services "$port/tcp" | awk '{print $2}')
        port=${port%/*}
        ;;
    esac
    ss -Hltnp "sport = :$port" | grep -q '"master"' && continue
    holder=$(ss -Hltnp "sport = :$port" | grep -o 'users:(("[^"]*' | head -n 1 | cut -d'"' -f2)
    missing="$missing $name${holder:+ (port held by $holder)}"
  done
  echo "$missing"
}

# "postfix reload" returns once it has signalled the master, and the master re-reads its files
# afterwards (a listener it cannot open stops it then). Every inet service of the live master.cf
# must be listening, with the master still running, before a release counts as loaded.
took_effect() {
  local missing=""
  for _ in $(seq 50); do
    if postfix status >/dev/null 2>&1; then
      missing=$(listeners_missing)
      [ -z "$missing" ] && return 0
    fi
    sleep 0.1
  done
  if ! postfix status >/dev/null 2>&1; then
    echo "Postfix stopped after taking the new configuration ($POSTFIX_LOG, journalctl -u postfix)"
    return 1
  fi
  echo "master.cf services not listening:$missing"
  return 1
}

# inet_interfaces and inet_protocols take effect only when Postfix stops and starts (postconf(5)).
restart_params() { postconf -c "$1" -h inet_interfaces inet_protocols 2>/dev/null | tr -s '[:space:]' ' '; }

# Makes Postfix load the release $LIVE points at, coming from release $1 (may be empty): reload,
# or restart where a reload cannot apply the change, or start. Returns once it took effect and
# records which master loaded it; prints why not (status 1) otherwise.
load_live() {
  local from=$1 out at
  if postfix status >/dev/null 2>&1 && [ -n "$from" ] && [ "$(restart_params "$from")" = "$(restart_params "$LIVE")" ]; then
    at=$(stat -c %s "$POSTFIX_LOG" 2>/dev/null || echo 0)
    out=$(postfix reload 2>&1) || { echo "postfix reload: $out"; return 1; }
    # The master logs "reload" before it re-reads its files; without that log line, give it 3 s.
    for _ in $(seq 30); do
      [ "$(stat -c %s "$POSTFIX_LOG" 2>/dev/null || echo 0)" -ge "$at" ] || at=0
      tail -c +$((at + 1)) "$POSTFIX_LOG" 2>/dev/null | grep -q 'postfix/master\[[0-9]*\]: reload ' && break
      sleep 0.1
    done
    # A listener the master cannot open stops it just after; only a master.cf change can bring one.
    cmp -s "$from/master.cf" "$LIVE/master.cf" || sleep 0.3
  elif [ -d /run/systemd/system ]; then
    out=$(systemctl restart postfix 2>&1) || { echo "systemctl restart postfix: $out"; return 1; }
  elif postfix status >/dev/null 2>&1; then
    out=$({ postfix stop && postfix start; } 2>&1) || { echo "postfix stop/start: $out"; return 1; }
  else
    [ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1
    out=$(postfix start 2>&1) || { echo "postfix start: $out"; return 1; }
  fi
  took_effect || return 1
  echo "master $(master_pid)" >"$LIVE/$LOADED_FILE"
}

# A deploy cut between its switch and its load (SIGKILL, a lost machine) left Postfix running the
# release before, under the new marker: load the live release, which was built and checked before
# its switch. Prints what it does and, failing, why (status 1): the caller then returns from it.
complete_cut_switch() {
  [ -L "$LIVE" ] || return 0
  postfix status >/dev/null 2>&1 || return 0
  release_loaded && return 0
  local bundle out
  bundle=$(cut -d' ' -f2 "$LIVE/$MARKER_FILE" 2>/dev/null)
  echo "header-rewrite: Postfix had not loaded bundle ${bundle:0:12} (a deploy was cut between switch and reload): loading it"
  out=$(load_live "$(cat "$LIVE/$PREVIOUS_FILE" 2>/dev/null || true)") && return 0
  echo "header-rewrite: loading $(readlink "$LIVE") failed: $out"
  return 1
}

# Points $LIVE at release $1 with one rename(2).
switch_live() {
  ln -sfn "$1" "$RELEASES/.live.tmp" && mv -T "$RELEASES/.live.tmp" "$LIVE"
}

# One deploy at a time per node (the postfix and verify steps, an operator's rerun): any stage
# directory found while holding the lock belongs to a deploy that was cut, and is removed.
lock_releases() {
  mkdir -p "$RELEASES"
  exec 9>"$RELEASES/.lock"
  flock -w 600 9 || return 1
  rm -rf "$RELEASES"/.stage.* "$RELEASES/.live.tmp"
}
