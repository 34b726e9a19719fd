#!/bin/bash
# Gives a relay node its own view of this machine, inside the namespaces it was started in
# (`ip netns exec NS unshare --mount --uts --pid --fork ...`, see sandbox/node-host.ts): /etc as an
# overlay over the machine's (writes stay in DIR), /usr/local the same way (the programs a deploy
# installs), a private Postfix spool, data and log, a private /run, its host name and loopback.
# /tmp stays the machine's: the project (and a clone of it under /tmp) must be visible inside. Then it runs the rest of the node's boot (COMMAND).
# usage: node-boot.sh DIR FQDN COMMAND...
set -euo pipefail
DIR=$1; FQDN=$2; shift 2
mkdir -p "$DIR"/etc-up "$DIR"/etc-work "$DIR"/local-up "$DIR"/local-work "$DIR"/spool "$DIR"/lib "$DIR"/log
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$DIR/etc-up,workdir=$DIR/etc-work" /etc
mount -t overlay overlay -o "lowerdir=/usr/local,upperdir=$DIR/local-up,workdir=$DIR/local-work" /usr/local
mount --bind "$DIR/spool" /var/spool/postfix
mount --bind "$DIR/lib" /var/lib/postfix
mount --bind "$DIR/log" /var/log
mount -t tmpfs -o mode=755 tmpfs /run
chown postfix:postfix /var/lib/postfix
# A clock moved by libfaketime (scripts/test-future.sh) reaches every process of the node, also those
# Postfix and start-stop-daemon start with a clean environment: through the node's own /etc.
if [ -n "${FAKETIME:-}" ] && [[ "${LD_PRELOAD:-}" == *libfaketime* ]]; then
  echo "$LD_PRELOAD" > /etc/ld.so.preload
  echo "$FAKETIME" > /etc/faketimerc
  # libfaketime 0.9.10 hands a semaphore from a process to its children, which a daemon that outlives
  # its parent or changes user (the milter) then cannot open, and exits. Without a writable /dev/shm
  # it keeps none (a fixed offset needs none).
  mount -t tmpfs -o ro,mode=755 tmpfs /dev/shm
  unset FAKETIME_SHARED
fi
hostname "$FQDN"
ip link set lo up
exec "$@"
