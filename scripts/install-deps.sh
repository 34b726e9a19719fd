#!/bin/bash
# Installs, non-interactively, the Debian packages whose real tools check what this project renders.
# Postfix is installed with "No configuration": the machine's own mail setup is never touched.
set -euo pipefail
PACKAGES=(postfix postfix-cdb swaks libnet-ssleay-perl libio-socket-inet6-perl cloud-init iproute2 util-linux openssl procps ca-certificates openssh-server openssh-client sudo dnsmasq-base certbot pebble curl python3-milter python3-dkim python3-dnspython python3-icalendar mmdebstrap systemd systemd-container prometheus faketime shellcheck pyflakes3 python3-pytest)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-deps: missing ${missing[*]}; run as root: sudo bash scripts/install-deps.sh" >&2; exit 1; }
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
# Install without starting services (openssh-server, postfix): the sandbox runs its own copies in
# namespaces and never uses or changes the machine's.
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=yes; fi
trap '[ "$own_policy" = yes ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
