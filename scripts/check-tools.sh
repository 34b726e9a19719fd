#!/bin/bash
# Fails (never skips) when a tool the tests need is missing, naming the command that installs it.
set -u
problems=()
[ "$(id -u)" = 0 ] || problems+=("tests must run as root (network/mount namespaces and a private Postfix need it): sudo npm test")
need() { command -v "$1" >/dev/null 2>&1 || problems+=("$1 not found (Debian package $2)"); }
need postconf postfix; need postmap postfix; need postfix postfix; need postqueue postfix; need postcat postfix
need swaks swaks; need cloud-init cloud-init; need mmdebstrap mmdebstrap; need systemd-nspawn systemd-container
[ -x /usr/sbin/sshd ] || problems+=("/usr/sbin/sshd not found (Debian package openssh-server)"); need ssh openssh-client; need ssh-keygen openssh-client; need sudo sudo; need dnsmasq dnsmasq-base; need certbot certbot; need pebble pebble; need curl curl
need promtool prometheus; need faketime faketime; need shellcheck shellcheck; need pyflakes3 pyflakes3; need systemd-analyze systemd
need ip iproute2; need unshare util-linux; need nsenter util-linux; need openssl openssl; need pgrep procps
command -v swaks >/dev/null 2>&1 && ! swaks --support 2>&1 | grep -q "TLS supported" && problems+=("swaks cannot do TLS (Debian package libnet-ssleay-perl)")
/usr/bin/python3 -c "import Milter" 2>/dev/null || problems+=("Debian's python3 cannot import Milter (Debian package python3-milter)")
/usr/bin/python3 -c "import dkim" 2>/dev/null || problems+=("Debian's python3 cannot import dkim (Debian package python3-dkim)")
/usr/bin/python3 -c "import dns.resolver" 2>/dev/null || problems+=("Debian's python3 cannot import dns.resolver (Debian package python3-dnspython)")
/usr/bin/python3 -c "import icalendar" 2>/dev/null || problems+=("Debian's python3 cannot import icalendar (Debian package python3-icalendar)")
/usr/bin/python3 -c "import pytest" 2>/dev/null || problems+=("Debian's python3 cannot import pytest (Debian package python3-pytest)")
[ -e /usr/lib/postfix/postfix-cdb.so ] || problems+=("Postfix cdb map support not found (Debian package postfix-cdb)")
if [ ${#problems[@]} -gt 0 ]; then
  echo "check-tools: cannot run the tests:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  echo "Install everything with: sudo bash scripts/install-deps.sh" >&2
  exit 1
fi
echo "check-tools: postfix $(postconf -d -h mail_version), $(cloud-init --version 2>&1 | head -1), swaks, mmdebstrap, systemd-nspawn, iproute2: ok"
