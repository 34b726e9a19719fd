#!/bin/bash
# header-rewrite step "pin-secret": the value tenant A's transport rule stamps (header-rewrite:pinSecret,
# docs "Tenant pinning") where the pinning milter reads it (root:PIN_USER 0640), or none. Its own
# step, so the Postfix step stays free of secrets and readable in `pulumi preview`.
# Facts: PIN_SECRET_FILE, PIN_USER; the function pin_secret prints the value (absent: none configured).
# node/lib/pin-user.sh comes before this file.
set -euo pipefail
if declare -F pin_secret >/dev/null; then
  pin_user
  install -d -m 755 "$(dirname "$PIN_SECRET_FILE")"
  (umask 027 && pin_secret >"$PIN_SECRET_FILE.new")
  chgrp "$PIN_USER" "$PIN_SECRET_FILE.new" && mv -f "$PIN_SECRET_FILE.new" "$PIN_SECRET_FILE"
  echo "pin secret installed"
else
  rm -f "$PIN_SECRET_FILE"
  echo "pin secret: none configured"
fi
