#!/bin/bash
# header-rewrite step "certificate": the node certificate through ACME (certbot; renewed by certbot's
# own timer), and a client certificate for each tenant with a name of its own (tenantCertificates,
# MC1226222) through dns-01, since that name points at no node: certbot's OVH plugin, or lego where
# the release lacks the plugin (then a daily timer renews). The deploy hook reloads Postfix after
# a renewal, so a renewed certificate is served without a restart.
# Facts: NODE, NODE_NAMES, NODE_CHAIN, CHALLENGE, ACME_EMAIL, ACME_SERVER, DNS_PROPAGATION,
# ACME_DNS_CREDENTIALS, CERTBOT_DNS, TENANT_IDS/_NAMES/_CERT_NAMES/_CHAINS, TENANT_CERT_TOOL,
# DEPLOY_HOOK and LEGO_*; ship_deploy_hook, and (secret) ovh_ini / lego_ovh_env print the credentials.
set -euo pipefail
if [ "$CERTBOT_DNS" = yes ]; then
  if [ "$TENANT_CERT_TOOL" = certbot ]; then
    /usr/bin/python3 -c 'import certbot_dns_ovh' 2>/dev/null ||
      { echo "certbot's OVH plugin is missing: apt-get install python3-certbot-dns-ovh" >&2; exit 1; }
  fi
  install -d -m 700 "$(dirname "$ACME_DNS_CREDENTIALS")"
  (umask 077 && ovh_ini >"$ACME_DNS_CREDENTIALS")
fi
mkdir -p "$(dirname "$DEPLOY_HOOK")"
ship_deploy_hook

certonly() {
  local name=$1
  shift
  certbot certonly --non-interactive --agree-tos --email "$ACME_EMAIL" \
    --server "$ACME_SERVER" --cert-name "$name" "$@" --key-type ecdsa --keep-until-expiring
}
dns_ovh=(--dns-ovh --dns-ovh-credentials "$ACME_DNS_CREDENTIALS" --dns-ovh-propagation-seconds "$DNS_PROPAGATION")
if [ "$CHALLENGE" = http-01 ]; then how=(--standalone --preferred-challenges http); else how=("${dns_ovh[@]}"); fi
domains=()
for name in "${NODE_NAMES[@]}"; do domains+=(-d "$name"); done
certonly "$NODE" "${domains[@]}" "${how[@]}"
test -s "$NODE_CHAIN"
echo "certificate for $(printf '%s, ' "${NODE_NAMES[@]}" | sed 's/, $//') is in place"

[ ${#TENANT_IDS[@]} -gt 0 ] || exit 0
if [ "$TENANT_CERT_TOOL" = lego ]; then
  command -v lego >/dev/null || { echo "lego is missing: apt-get install lego" >&2; exit 1; }
  install -d -m 700 "$LEGO_PATH"
  (umask 077 && lego_ovh_env >"$LEGO_OVH_ENV")
  (umask 077 && declare -p ACME_EMAIL ACME_SERVER LEGO_PATH LEGO_OVH_ENV DEPLOY_HOOK TENANT_NAMES >"$LEGO_SETTINGS")
  ship_lego_renewal
  "$LEGO_RENEW" "$LEGO_SETTINGS" obtain
  # lego writes its account and certificate keys world-readable: root-only, whatever it did before.
  chmod -R go-rwx "$LEGO_PATH"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload && systemctl enable --quiet --now header-rewrite-lego-renew.timer
  fi
fi
for i in "${!TENANT_IDS[@]}"; do
  if [ "$TENANT_CERT_TOOL" = certbot ]; then
    certonly "${TENANT_CERT_NAMES[$i]}" -d "${TENANT_NAMES[$i]}" "${dns_ovh[@]}"
  fi
  test -s "${TENANT_CHAINS[$i]}"
  echo "client certificate for tenant ${TENANT_IDS[$i]}: ${TENANT_NAMES[$i]} ($TENANT_CERT_TOOL)"
done
