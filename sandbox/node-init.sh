#!/bin/bash
# Boots one sandbox relay node inside its namespaces (started by sandbox/up.ts through
# `ip netns exec <ns> unshare --mount --uts --pid --fork ...`). It plays the part of the OVH image +
# cloud-init: its own /etc (overlay over this machine's, prepared with the user-data's write_files),
# Postfix spool and data, /home and /run; the user-data's network commands (ifup of the rendered
# interfaces file); the default user with the SSH keys; then sshd in the foreground.
# usage: node-init.sh NODE_DIR FQDN
set -euo pipefail
DIR=$1; FQDN=$2
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$DIR/etc-up,workdir=$DIR/etc-work" /etc
mount --bind "$DIR/spool" /var/spool/postfix
mount --bind "$DIR/lib" /var/lib/postfix
mount --bind "$DIR/log" /var/log
mount --bind "$DIR/home" /home
mkdir -p /var/lib/letsencrypt && mount --bind "$DIR/letsencrypt-lib" /var/lib/letsencrypt
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/network /run/sshd
chown postfix:postfix /var/lib/postfix
hostname "$FQDN"
ip link set lo up
# cloud-init runcmd of the rendered user-data, as far as it applies in a namespace:
ifup -i /etc/network/interfaces ens3
# cloud-init's default user on OVH's Debian image: "debian" with passwordless sudo and the keys.
id debian >/dev/null 2>&1 || useradd -m -d /home/debian -s /bin/bash debian
mkdir -p /home/debian/.ssh
cp "$DIR/authorized_keys" /home/debian/.ssh/authorized_keys
chown -R debian:debian /home/debian
chmod 700 /home/debian/.ssh; chmod 600 /home/debian/.ssh/authorized_keys
echo "debian ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/90-cloud-init-users
chmod 440 /etc/sudoers.d/90-cloud-init-users
ssh-keygen -A >/dev/null
echo "node-init: $FQDN up"
exec /usr/sbin/sshd -D -e -o ListenAddress=0.0.0.0 -o ListenAddress=:: -o PidFile=/run/sshd.pid
