#!/bin/bash
# Gives a relay node its own view of this machine, inside the namespaces it was started in
# (`ip netns exec NS unshare --mount --uts --pid --fork ...`, see sandbox/node-host.ts): /etc as an
# overlay over the machine's (writes stay in DIR), a private Postfix spool, data and log, a private
# /run, its host name and loopback. Then it runs the rest of the node's boot (COMMAND).
# usage: node-boot.sh DIR FQDN COMMAND...
set -euo pipefail
DIR=$1; FQDN=$2; shift 2
mkdir -p "$DIR"/etc-up "$DIR"/etc-work "$DIR"/spool "$DIR"/lib "$DIR"/log
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$DIR/etc-up,workdir=$DIR/etc-work" /etc
mount --bind "$DIR/spool" /var/spool/postfix
mount --bind "$DIR/lib" /var/lib/postfix
mount --bind "$DIR/log" /var/log
mount -t tmpfs -o mode=755 tmpfs /run
chown postfix:postfix /var/lib/postfix
hostname "$FQDN"
ip link set lo up
exec "$@"
