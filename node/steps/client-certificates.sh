#!/bin/bash
# header-rewrite step "client-certificates": the operator-supplied client certificates (key + full
# chain, one PEM per tenant, root-only); removes those no longer configured. Postfix reads them as
# root before dropping privileges.
# Facts: CLIENT_CERT_DIR, TENANTS (the tenants that keep one); ship_client_certificates ships them.
set -euo pipefail
umask 077
install -d -m 700 -o root -g root "$CLIENT_CERT_DIR"
SHIPPED=no
ship_client_certificates || { echo "header-rewrite: could not install the client certificates" >&2; exit 1; }
# Any other file here belongs to a tenant that no longer has one.
for f in "$CLIENT_CERT_DIR"/*.pem; do
  [ -e "$f" ] || continue
  case " ${TENANTS[*]} " in
    *" $(basename "$f" .pem) "*) ;;
    *) rm -f "$f" && SHIPPED=yes ;;
  esac
done
if [ "$SHIPPED" = yes ] && postfix status >/dev/null 2>&1; then postfix reload; fi
if [ ${#TENANTS[@]} -gt 0 ]; then echo "client certificates: ${TENANTS[*]}"; else echo "client certificates: none"; fi
