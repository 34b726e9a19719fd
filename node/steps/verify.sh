#!/bin/bash
# header-rewrite step "verify": the post-deploy check. The bundle is live and loaded, Postfix runs
# and answers STARTTLS on port 25, the pinning milter answers, and every tenant next hop completes a
# verified TLS handshake with the certificate that tenant's transport presents (posttls-finger: no
# mail is sent). A failure returns the node to the release that was live before and fails the step,
# so the rollout stops here. Run again for a bundle it returned from, it makes that bundle live
# again first (a retry).
# Facts: NODE, BUNDLE, LIVE, RELEASES, a release's own file names (*_FILE), POSTFIX_LOG, PIN_SOCKET,
# NEXTHOP_ATTEMPTS; check_tenant_nexthops runs `check` once per tenant next hop.
# node/lib/postfix-release.sh comes before this file.
set -uo pipefail
WANT="$NODE $BUNDLE"
marker() { cat "$LIVE/$MARKER_FILE" 2>/dev/null || echo "no header-rewrite release"; }
# shellcheck disable=SC2153 # RELEASES is one of the facts set before this file
lock_releases || { echo "header-rewrite: another deploy still holds $RELEASES/.lock after 10 min" >&2; exit 1; }
switch_to() {
  local from
  from=$(readlink "$LIVE")
  switch_live "$1" && load_live "$from" >/dev/null
}

# 1. The bundle must be live, and loaded. A failed check returned the node to its previous release;
#    running the check again makes the bundle live again first, if its release is still kept. A
#    deploy cut between switch and reload left the bundle's marker live but Postfix on the release
#    before: the check completes that reload, since the release was built and checked before it.
if [ "$(marker)" != "$WANT" ]; then
  release=$(grep -lx "$WANT" "$RELEASES"/2*-"${BUNDLE:0:12}"/"$MARKER_FILE" 2>/dev/null | sort | tail -n 1)
  if [ -z "$release" ]; then
    echo "header-rewrite: $NODE runs $(marker), not bundle ${BUNDLE:0:12}, and has no release of it:" \
      "the postfix step must deploy it first" >&2
    exit 1
  fi
  release=$(dirname "$release")
  readlink "$LIVE" >"$release/$PREVIOUS_FILE"
  switch_to "$release" || { echo "header-rewrite: could not make $release live again" >&2; exit 1; }
  echo "header-rewrite: bundle ${BUNDLE:0:12} is live again on $NODE for its check"
else
  # A failure to load is one of the problems below, and the check returns from the release.
  complete_cut_switch || true
fi
RELEASE=$(readlink "$LIVE")
PREVIOUS=$(cat "$RELEASE/$PREVIOUS_FILE" 2>/dev/null || true)
problems=()

# 2. Postfix runs, and the pinning milter answers before port 25 hands it mail.
postfix status >/dev/null 2>&1 || problems+=("Postfix is not running")
postfix status >/dev/null 2>&1 && ! release_loaded &&
  problems+=("Postfix has not loaded $RELEASE (its master was not reloaded or started since the switch)")
/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$PIN_SOCKET" \
  2>/dev/null || problems+=("the tenant-pinning milter does not answer on $PIN_SOCKET")

# 3. TLS handshakes, no mail: port 25 offers STARTTLS; each tenant next hop verifies (names and chain)
#    and is offered the client certificate that tenant's transport presents.
#    A next hop the previous release reached the same way (same host, certificate, CA, family, as
#    recorded in its $PROBES_FILE) that fails now is an outage this change cannot have caused:
#    a warning, and the release stays (rolling back would not bring the tenant back).
check() {
  local what=$1 want=$2 probe=$3 out="" said
  shift 3
  for i in $(seq "$NEXTHOP_ATTEMPTS"); do
    out=$(timeout 60 posttls-finger -c -t 10 -T 10 "$@" 2>&1)
    if grep -q "$want" <<<"$out"; then
      echo "header-rewrite: $what: $(grep -m1 "$want" <<<"$out" | cut -c1-160)"
      return
    fi
    [ "$i" = "$NEXTHOP_ATTEMPTS" ] || sleep 2
  done
  said="$what: $(grep -v -e '^$' <<<"$out" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
  if [ -n "$probe" ] && [ -n "$PREVIOUS" ] && grep -qxF -- "$probe" "$PREVIOUS/$PROBES_FILE" 2>/dev/null; then
    echo "header-rewrite: WARNING on $NODE: $said -- unchanged by this release, which stays" >&2
  else
    problems+=("$said")
  fi
}
check "STARTTLS on port 25" "TLS connection established" "" -l encrypt "[127.0.0.1]:25"
check_tenant_nexthops

if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "header-rewrite: post-deploy check on $NODE: $p" >&2; done
  if [ -n "$PREVIOUS" ] && [ -d "$PREVIOUS" ] && switch_to "$PREVIOUS"; then
    echo "header-rewrite: bundle ${BUNDLE:0:12} FAILED its post-deploy check on $NODE;" \
      "switched back to $PREVIOUS ($(marker))" >&2
  else
    echo "header-rewrite: bundle ${BUNDLE:0:12} FAILED its post-deploy check on $NODE" \
      "and no previous release is kept to return to" >&2
  fi
  exit 1
fi
echo "$BUNDLE" >"$RELEASE/$CHECKED_FILE"
echo "header-rewrite: $NODE passed its post-deploy check with bundle ${BUNDLE:0:12}"
