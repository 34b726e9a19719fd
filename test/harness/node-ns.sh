#!/bin/bash
# Runs a command as if on a fresh relay node: own mount, network, UTS and PID namespaces, /etc as an
# overlay over the machine's (writes stay in WORK), a private Postfix spool and data directory, only
# loopback networking, and a test certificate where certbot would put it. Everything started inside
# dies with the namespace.
# usage: node-ns.sh WORK FQDN COMMAND...
set -euo pipefail
WORK=$1; FQDN=$2; shift 2
mkdir -p "$WORK"/etc-up "$WORK"/etc-work "$WORK"/spool "$WORK"/lib "$WORK"/log
exec unshare --mount --net --uts --pid --fork --kill-child --mount-proc --propagation private bash -c '
  set -euo pipefail
  WORK=$1; FQDN=$2; shift 2
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$WORK/etc-up,workdir=$WORK/etc-work" /etc
  mount --bind "$WORK/spool" /var/spool/postfix
  mount --bind "$WORK/lib" /var/lib/postfix
  mount --bind "$WORK/log" /var/log
  chown postfix:postfix /var/lib/postfix
  ip link set lo up
  # The node resolves through loopback only: nothing it looks up can leave this namespace.
  rm -f /etc/resolv.conf; echo "nameserver 127.0.0.1" > /etc/resolv.conf
  hostname "$FQDN"
  live=/etc/letsencrypt/live/$FQDN
  if [ ! -s "$live/fullchain.pem" ]; then
    mkdir -p "$live"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$FQDN" \
      -addext "subjectAltName=DNS:$FQDN" -keyout "$live/privkey.pem" -out "$live/fullchain.pem" 2>/dev/null
  fi
  exec "$@"
' node-ns "$WORK" "$FQDN" "$@"
