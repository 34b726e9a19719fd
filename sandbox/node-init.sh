#!/bin/bash
# The rest of a sandbox relay node's boot, after sandbox/node-boot.sh. It plays the part of the OVH
# image + cloud-init: the user-data's network commands (ifup of the rendered interfaces file), the
# default user with the SSH keys; then sshd in the foreground.
# usage: node-init.sh NODE_DIR FQDN
set -euo pipefail
DIR=$1; FQDN=$2
mkdir -p "$DIR/home" "$DIR/letsencrypt-lib" /var/lib/letsencrypt
mount --bind "$DIR/home" /home
mount --bind "$DIR/letsencrypt-lib" /var/lib/letsencrypt
mkdir -p /run/network /run/sshd
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
