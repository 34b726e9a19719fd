// Deploy steps as plain shell text, built from the bundle render returns. The same scripts run
// through remote.Command in production and over SSH in the local sandbox (`sudo bash -s < script`).
import * as path from "node:path";
import type { NodeIdentity, StackConfig } from "./config";
import { serviceFqdn } from "./config";
import { tenantCertsViaLego } from "./images";
import { type NodeBundle, bundleHash } from "./bundle";
import {
  ACME_DNS_CREDENTIALS,
  CERTBOT_DEPLOY_HOOK,
  CLIENT_CERT_DIR,
  DRAIN_FORCE,
  EXPORTERS,
  METRICS_COLLECTOR,
  METRICS_TEXTFILE,
  POSTFIX_LOG,
  PIN_MILTER,
  POSTFIX_LIVE,
  POSTFIX_RELEASES,
  RELEASES_KEPT,
  RELEASE_MARKER,
  RELEASE_PREVIOUS,
  RELEASE_PROBES,
  RELEASE_LOADED,
  RELEASE_CHECKED,
  TENANT_CA_FILE,
  LEGO_OVH_ENV,
  LEGO_PATH,
  LEGO_RENEW,
  tenantCertName,
  tlsPaths,
} from "./layout";
import { heredoc, shellQuote as shq, writeFile } from "./shell";

/**
 * Waits for first-boot provisioning; exit 2 from cloud-init means "done, with recoverable errors".
 * A first boot with package upgrades takes minutes: a progress line every HEARTBEAT seconds keeps
 * the SSH session from looking idle to NAT and firewall timeouts.
 */
function waitForCloudInitScript(): string {
  return `#!/bin/bash
# header-rewrite: wait until cloud-init has finished first boot (packages, network).
set -u
HEARTBEAT=\${HEARTBEAT:-20}
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init status --wait >/dev/null 2>&1 &
  waiter=$!
  started=$SECONDS
  while kill -0 "$waiter" 2>/dev/null; do
    for _ in $(seq "$HEARTBEAT"); do kill -0 "$waiter" 2>/dev/null || break; sleep 1; done
    if kill -0 "$waiter" 2>/dev/null; then
      echo "cloud-init still running after $((SECONDS - started)) s: $(cloud-init status 2>/dev/null | tr '\\n' ' ')"
    fi
  done
  wait "$waiter"
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    echo "cloud-init failed (exit $rc):" >&2
    cloud-init status --long >&2 || true
    # What the first-boot commands said (header-rewrite-network names the image or network problem).
    echo "--- last lines of /var/log/cloud-init-output.log:" >&2
    tail -n 15 /var/log/cloud-init-output.log >&2 2>/dev/null || true
    exit 1
  fi
fi
command -v postmap >/dev/null || { echo "postfix is not installed after cloud-init" >&2; exit 1; }
echo "cloud-init finished"
`;
}

/** OVH API credentials for the dns-01 challenge: a consumer key limited to the zone's records. */
export interface DnsOvhCredentials {
  endpoint: string;
  applicationKey: string;
  applicationSecret: string;
  consumerKey: string;
}

/**
 * Tenant certificates with lego, where the release has no certbot OVH plugin (src/images.ts): run
 * once, then renewed by a daily systemd timer; the same hook reloads Postfix after a renewal.
 */
function legoTenantCertificates(
  cfg: StackConfig,
  tenants: [string, string][],
  dns: DnsOvhCredentials | undefined,
): string {
  if (!tenants.length || !dns) return "";
  const env = [
    `OVH_ENDPOINT=${dns.endpoint}`,
    `OVH_APPLICATION_KEY=${dns.applicationKey}`,
    `OVH_APPLICATION_SECRET=${dns.applicationSecret}`,
    `OVH_CONSUMER_KEY=${dns.consumerKey}`,
  ];
  const lego = (name: string) =>
    `lego --accept-tos --email ${shq(cfg.acmeEmail)} --server ${shq(cfg.acmeServer)} --path ${LEGO_PATH} ` +
    `--key-type ec256 --dns ovh -d ${shq(name)}`;
  const renew = `#!/bin/bash
# header-rewrite: renew lego's tenant certificates (daily timer); the hook reloads Postfix.
set -euo pipefail
umask 077
set -a; . ${LEGO_OVH_ENV}; set +a
${tenants
  .map(
    ([, name]) => `${lego(name)} renew --days 30 --renew-hook ${CERTBOT_DEPLOY_HOOK}
`,
  )
  .join("")}`;
  const unit = `[Unit]
Description=header-rewrite: renew tenant certificates (lego)
[Service]
Type=oneshot
ExecStart=${LEGO_RENEW}
`;
  const timer = `[Unit]
Description=header-rewrite: renew tenant certificates daily
[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true
[Install]
WantedBy=timers.target
`;
  const obtain = tenants
    .map(
      ([id, name]) =>
        `[ -s ${LEGO_PATH}/certificates/${name}.crt ] || ${lego(name)} run\n` +
        `echo "client certificate for tenant ${id}: ${name} (lego)"\n`,
    )
    .join("");
  return `command -v lego >/dev/null || { echo "lego is missing: apt-get install lego" >&2; exit 1; }
install -d -m 700 ${LEGO_PATH}
(umask 077; ${writeFile(LEGO_OVH_ENV, env.join("\n"))})
${writeFile(LEGO_RENEW, renew)}chmod 755 ${LEGO_RENEW}
# lego writes its account and certificate keys world-readable: root-only, whatever it did before.
(umask 077; set -a; . ${LEGO_OVH_ENV}; set +a
${obtain})
chmod -R go-rwx ${LEGO_PATH}
if [ -d /run/systemd/system ]; then
${writeFile("/etc/systemd/system/header-rewrite-lego-renew.service", unit)}${writeFile(
    "/etc/systemd/system/header-rewrite-lego-renew.timer",
    timer,
  )}  systemctl daemon-reload && systemctl enable --quiet --now header-rewrite-lego-renew.timer
fi
`;
}

/**
 * Obtains (or keeps) the node certificate with certbot. Renewal runs from certbot's own timer; the
 * deploy hook reloads Postfix so a renewed certificate is served without a restart.
 */
function certificateScript(cfg: StackConfig, node: NodeIdentity, dns?: DnsOvhCredentials): string {
  const names = [node.fqdn, ...(cfg.acmeChallenge === "dns-01" ? [serviceFqdn(cfg)] : [])];
  const tenants = Object.entries(cfg.tenantCertificates).sort(([a], [b]) => a.localeCompare(b));
  const viaLego = tenantCertsViaLego(cfg.image);
  // dns-01 through certbot's OVH plugin: the node certificate's challenge, or tenant certificates
  // where the release packages the plugin (lego takes them elsewhere).
  const certbotDns = cfg.acmeChallenge === "dns-01" || (!viaLego && tenants.length > 0);
  if ((cfg.acmeChallenge === "dns-01" || tenants.length > 0) && !dns) {
    throw new Error(
      "header-rewrite:acmeDnsOvhCredentials is required for acmeChallenge dns-01 and for tenantCertificates " +
        '(hint: see README, "Certificates")',
    );
  }
  const dnsOvh =
    `--dns-ovh --dns-ovh-credentials ${ACME_DNS_CREDENTIALS} ` +
    `--dns-ovh-propagation-seconds ${cfg.acmeDnsPropagationSeconds}`;
  const challenge = cfg.acmeChallenge === "http-01" ? "--standalone --preferred-challenges http" : dnsOvh;
  const ini = dns && [
    `dns_ovh_endpoint = ${dns.endpoint}`,
    `dns_ovh_application_key = ${dns.applicationKey}`,
    `dns_ovh_application_secret = ${dns.applicationSecret}`,
    `dns_ovh_consumer_key = ${dns.consumerKey}`,
  ];
  const credentials =
    ini && certbotDns
      ? `install -d -m 700 /etc/letsencrypt\n(umask 077; ${writeFile(ACME_DNS_CREDENTIALS, ini.join("\n"))})\n`
      : "";
  const hook = `#!/bin/sh
# Reload Postfix after a renewal so it serves the new certificate; queued mail is untouched.
if postfix status >/dev/null 2>&1; then postfix reload; fi
`;
  const certbot = (certName: string, domains: string[], how: string) =>
    `certbot certonly --non-interactive --agree-tos --email ${shq(cfg.acmeEmail)} \\
  --server ${shq(cfg.acmeServer)} --cert-name ${shq(certName)} ${domains.map((n) => `-d ${shq(n)}`).join(" ")} \\
  --key-type ecdsa --keep-until-expiring ${how}
`;
  const plugin =
    certbotDns && !viaLego
      ? "/usr/bin/python3 -c 'import certbot_dns_ovh' 2>/dev/null ||\n" +
        '  { echo "certbot\'s OVH plugin is missing: apt-get install python3-certbot-dns-ovh" >&2; exit 1; }\n'
      : "";
  // A certificate for a name of tenant B's own, so that tenant attributes the relays' mail by it
  // (MC1226222); each node obtains its own, through dns-01 since the name points at no node.
  const tenantCerts = viaLego
    ? legoTenantCertificates(cfg, tenants, dns)
    : tenants
        .map(
          ([id, name]) =>
            certbot(tenantCertName(id), [name], dnsOvh) +
            `test -s ${shq(tlsPaths(tenantCertName(id)).chainFile)}\n` +
            `echo "client certificate for tenant ${id}: ${name}"\n`,
        )
        .join("");
  return `#!/bin/bash
# header-rewrite: node certificate for ${node.fqdn} via ACME (${cfg.acmeChallenge}).
set -euo pipefail
${plugin}${credentials}mkdir -p ${CERTBOT_DEPLOY_HOOK.replace(/\/[^/]+$/, "")}
${writeFile(CERTBOT_DEPLOY_HOOK, hook)}chmod 755 ${CERTBOT_DEPLOY_HOOK}
${certbot(node.fqdn, names, challenge)}test -s ${shq(tlsPaths(node.fqdn).chainFile)}
echo "certificate for ${names.join(", ")} is in place"
${tenantCerts}`;
}

/**
 * Installs operator-supplied client certificates (key + full chain, one file per tenant, root-only)
 * and removes those no longer configured. Postfix reads them as root before dropping privileges.
 */
function clientCertificatesScript(certs: Record<string, string>): string {
  const ids = Object.keys(certs).sort();
  const writes = ids
    .map((id) => `${writeFile(`"$DIR/.${id}.pem.new"`, certs[id])}install_cert ${shq(id)}\n`)
    .join("");
  const which = ids.length ? ids.join(", ") : "none: every tenant gets the node certificate";
  return `#!/bin/bash
# header-rewrite: per-tenant client certificates (${which}).
set -euo pipefail
umask 077
DIR=${CLIENT_CERT_DIR}
install -d -m 700 -o root -g root "$DIR"
changed=no
install_cert() {
  local id=$1
  if ! cmp -s "$DIR/.$id.pem.new" "$DIR/$id.pem"; then
    mv -f "$DIR/.$id.pem.new" "$DIR/$id.pem"; changed=yes
  else
    rm -f "$DIR/.$id.pem.new"
  fi
  chmod 600 "$DIR/$id.pem"
}
# The tenants that keep a certificate; any other file here belongs to one that no longer has one.
KEEP=" ${ids.join(" ")} "
${writes}for f in "$DIR"/*.pem; do
  [ -e "$f" ] || continue
  case "$KEEP" in *" $(basename "$f" .pem) "*) ;; *) rm -f "$f"; changed=yes ;; esac
done
if [ "$changed" = yes ] && postfix status >/dev/null 2>&1; then postfix reload; fi
echo "client certificates: ${ids.length ? ids.join(", ") : "none"}"
`;
}

/**
 * The secret-header value (header-rewrite:pinSecret) where the pinning milter reads it, or none.
 * Its own step, so the Postfix step stays free of secrets and readable in `pulumi preview`.
 */
function pinSecretScript(secret: string | undefined): string {
  const file = PIN_MILTER.secretFile;
  const body = secret
    ? `install -d -m 755 ${path.posix.dirname(file)}
(umask 027; ${writeFile(`${file}.new`, secret)})
chgrp nogroup ${file}.new && mv -f ${file}.new ${file}
echo "pin secret installed"`
    : `rm -f ${file}
echo "pin secret: none configured"`;
  return `#!/bin/bash
# header-rewrite: the secret tenant A's transport rule stamps (README, "Tenant pinning").
set -euo pipefail
${body}
`;
}

/** How many sample lookups per map the deploy checks against the staged .cdb files. */
const PROBES_PER_MAP = 40;

function sample<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(items[Math.floor((i * (items.length - 1)) / (n - 1))]);
  return out;
}

/** Checks that every rendered key is found in a staged map and that sampled values are as rendered. */
function probeScript(name: string, rows: [string, string][]): string {
  const picked = sample(rows, PROBES_PER_MAP);
  const want = shq(picked.map(([k, v]) => `${k} ${v}`).join("\n"));
  const got = `tr '\\t' ' ' < "$STAGE/.probe.${name}"`;
  const diff = `$(diff <(printf '%s\\n' ${want}) <(${got}) | head -5)`;
  return (
    heredoc(`check_map ${name} ${rows.length}`, picked.map(([k]) => k).join("\n")) +
    `[ "$(${got})" = ${want} ] || fail "${name}: staged lookups differ from the rendered map: ${diff}"\n`
  );
}

/** One file of the milter, replaced (and PIN_CHANGED=yes) only when it differs and parses. */
function installProgramFile(file: string, text: string, mode: string): string {
  return `# A temporary name of its own: nodes that share /usr (containers) may deploy at the same time.
NEW=$(mktemp ${file}.XXXXXX)
${writeFile('"$NEW"', text)}/usr/bin/python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$NEW" ||
  { rm -f "$NEW"; fail "${path.posix.basename(file)} does not parse"; }
if cmp -s "$NEW" ${file}; then rm -f "$NEW"; else
  chmod ${mode} "$NEW" && mv -f "$NEW" ${file}; PIN_CHANGED=yes
fi
`;
}

/**
 * Installs and (re)starts the tenant-pinning milter, before Postfix is switched to a release that
 * uses it. systemd supervises it on a node; without systemd (a container) start-stop-daemon does.
 * It restarts only when its program changed: a policy change is picked up from the live release.
 */
function pinMilterScript(program: string, calendarModule: string): string {
  const m = PIN_MILTER;
  const args = `${m.policy} unix:${m.socket} ${m.secretFile} ${m.calendarPolicy}`;
  const unit = `[Unit]
Description=header-rewrite tenant-pinning milter (README, "Tenant pinning")
Before=postfix.service
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 ${m.program} ${args}
User=nobody
Group=nogroup
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`;
  const unitFile = `/etc/systemd/system/${m.service}.service`;
  return `# 5b. The tenant-pinning milter must answer before Postfix hands it mail.
/usr/bin/python3 -c 'import Milter, dkim, dns.resolver, icalendar' 2>/dev/null ||
  fail "the pinning milter needs Python modules: apt-get install python3-milter python3-dkim python3-dnspython python3-icalendar"
install -d -m 755 ${path.posix.dirname(m.program)}
install -d -m 750 -o nobody -g postfix ${m.socketDir}
PIN_CHANGED=no
${installProgramFile(m.calendarModule, calendarModule, "644")}${installProgramFile(m.program, program, "755")}
if [ -d /run/systemd/system ]; then
${writeFile(`${unitFile}.new`, unit)}  if ! cmp -s ${unitFile}.new ${unitFile}; then
    mv -f ${unitFile}.new ${unitFile}; systemctl daemon-reload; PIN_CHANGED=yes
  else rm -f ${unitFile}.new; fi
  systemctl is-enabled --quiet ${m.service} 2>/dev/null || systemctl enable --quiet ${m.service}
  if [ "$PIN_CHANGED" = yes ] || ! systemctl is-active --quiet ${m.service}; then systemctl restart ${m.service}; fi
else
  running=no
  [ -s ${m.pidFile} ] && kill -0 "$(cat ${m.pidFile})" 2>/dev/null && running=yes
  if [ "$running" = yes ] && [ "$PIN_CHANGED" = yes ]; then
    start-stop-daemon --stop --quiet --pidfile ${m.pidFile} --retry 10 --remove-pidfile; running=no
  fi
  if [ "$running" = no ]; then
    touch ${m.log} && chown nobody:nogroup ${m.log}
    start-stop-daemon --start --quiet --background --make-pidfile --pidfile ${m.pidFile} --chuid nobody:nogroup \
      --output ${m.log} --exec /usr/bin/python3 -- ${m.program} ${args}
  fi
fi
answers() {
  /usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' ${m.socket} 2>/dev/null
}
for _ in $(seq 100); do answers && break; sleep 0.1; done
answers || fail "the tenant-pinning milter does not answer on ${m.socket} (journalctl -u ${m.service}, or ${m.log})"

`;
}

/** node/postfix-release.sh with the names it expects (after LIVE and RELEASES). */
function releaseFunctions(bundle: NodeBundle): string {
  return `POSTFIX_LOG=${POSTFIX_LOG}
MARKER_FILE=${RELEASE_MARKER}
PREVIOUS_FILE=${RELEASE_PREVIOUS}
LOADED_FILE=${RELEASE_LOADED}
${bundle.releaseFunctions}`;
}

/**
 * The staged, atomic Postfix deploy. Everything is written and checked in a new release directory;
 * `/etc/postfix` is a symlink to the live release and is switched with one rename(2), then Postfix
 * reloads. Any failure before the switch leaves the live configuration untouched; a failed reload
 * switches back.
 */
function deployPostfixScript(cfg: StackConfig, bundle: NodeBundle): string {
  const { node, files } = bundle;
  const hash = bundleHash(files);
  const names = Object.keys(files).sort();
  const staged = names.map((n) => `"$STAGE/${n}"`).join(" ");
  const writes = names.map((n) => writeFile(`"$STAGE/${n}"`, files[n])).join("");
  const probes = bundle.indexedMaps.map((m) => probeScript(m.name, m.rows)).join("");
  const needs = [
    ...[bundle.tls.keyFile, bundle.tls.chainFile].map(
      (f) => `[ -s ${shq(f)} ] || fail "TLS file ${f} is missing: the certificate step must succeed first"`,
    ),
    ...Object.values(bundle.clientCertificates)
      .flatMap((files) => files.split(","))
      .map(
        (f) =>
          `[ -s ${shq(f)} ] || fail "client certificate ${f} is missing: ` +
          `the certificate and client-certificates steps must succeed first"`,
      ),
  ];
  return `#!/bin/bash
# header-rewrite: staged, atomic Postfix deploy for ${node.fqdn}
# bundle ${hash}
set -euo pipefail
umask 022
LIVE=${POSTFIX_LIVE}
RELEASES=${POSTFIX_RELEASES}
KEEP=${RELEASES_KEPT}
BUNDLE=${hash}
fail() {
  echo "header-rewrite: deploy of bundle \${BUNDLE:0:12} FAILED on ${node.fqdn}: $*" >&2
  echo "header-rewrite: the live configuration was not changed" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"
command -v postmap >/dev/null || fail "Postfix is not installed (apt-get install postfix postfix-cdb)"
[ -d "$LIVE" ] || fail "$LIVE does not exist"
${needs.join("\n")}
${releaseFunctions(bundle)}
lock_releases || fail "another deploy still holds $RELEASES/.lock after 10 min"

# 0. Complete a switch that a cut deploy left unloaded first, or return from it.
if ! complete_cut_switch; then
  CUT=$(readlink "$LIVE")
  back=$(cat "$CUT/${RELEASE_PREVIOUS}" 2>/dev/null || true)
  { [ -d "$back" ] && switch_live "$back" && load_live "$CUT" >/dev/null; } || true
  fail "the release a cut deploy left live did not load; switched back to \${back:-nothing}"
fi
STAGE=$(mktemp -d "$RELEASES/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# 1. Start from the live directory (keeps the package's own files), drop what this deploy manages.
cp -a "$LIVE/." "$STAGE/"
# What a release records about itself (loaded, checked) is its own, never inherited.
rm -f "$STAGE"/*.cdb "$STAGE"/.probe.* "$STAGE/${RELEASE_CHECKED}" ${staged}
echo pending > "$STAGE/${RELEASE_LOADED}"

# 2. Write the rendered files.
${writes}chmod 644 ${staged}
# Postfix re-reads a main.cf changed within the last second, 300 ms at a time, until it "cools down"
# (dict_load_file in util/dict.c): up to 2 s per command here. These files are complete: date them back.
touch -m -d "@$(( $(date +%s) - 2 ))" ${staged}

# 3. Build the indexed maps with postmap (never postconf), in the stage.
# (A node without postfix-cdb fails here, with Postfix's "unsupported dictionary type: cdb".)
for m in ${bundle.indexedMaps.map((m) => m.name).join(" ")}; do
  out=$(postmap -c "$STAGE" "cdb:$STAGE/$m" 2>&1) || {
    case $out in
      *"unsupported dictionary type: cdb"*) fail "the cdb map type is missing (apt-get install postfix-cdb): $out" ;;
      *) fail "postmap $m: $out" ;;
    esac
  }
  [ -z "$out" ] || fail "postmap $m: $out"
done

# 4. Postfix must accept the staged main.cf and master.cf without a single warning.
out=$(postconf -c "$STAGE" -n 2>&1 >/dev/null) || fail "postconf -n: $out"
[ -z "$out" ] || fail "postconf -n: $out"
out=$(postconf -c "$STAGE" -M 2>&1 >/dev/null) || fail "postconf -M: $out"
[ -z "$out" ] || fail "postconf -M: $out"

# 5. Lookups through the staged maps return exactly what was rendered.
check_map() {
  local m=$1 want=$2 n
  n=$(grep -v -e '^#' -e '^$' "$STAGE/$m" | awk '{print $1}' | postmap -c "$STAGE" -q - "cdb:$STAGE/$m" | wc -l)
  [ "$n" = "$want" ] || fail "$m: only $n of $want rendered keys are found in the built map"
  postmap -c "$STAGE" -q - "cdb:$STAGE/$m" > "$STAGE/.probe.$m" || true
}
${probes}rm -f "$STAGE"/.probe.*
echo "${node.fqdn} \${BUNDLE}" > "$STAGE/${RELEASE_MARKER}"
${writeFile(`"$STAGE/${RELEASE_PROBES}"`, nexthopProbes(cfg, bundle).map(probeLine).join("\n"))}

${pinMilterScript(bundle.pinMilterProgram, bundle.calendarModule)}
# 6. Switch: one rename(2) of the /etc/postfix symlink, then load it into Postfix.
# Nanoseconds: names are unique and sort in deploy order, even for two deploys in one second.
NAME="$(date -u +%Y%m%dT%H%M%S.%NZ)-\${BUNDLE:0:12}"
# Where the verify step returns if this release fails its post-deploy check.
if [ -L "$LIVE" ]; then PREVIOUS=$(readlink "$LIVE"); else PREVIOUS="$RELEASES/original"; fi
echo "$PREVIOUS" > "$STAGE/${RELEASE_PREVIOUS}"
rollback() {
  { switch_live "$PREVIOUS" && load_live "$RELEASES/$NAME" >/dev/null; } || true
  echo "header-rewrite: deploy of bundle \${BUNDLE:0:12} FAILED on ${node.fqdn}: $*; switched back to $PREVIOUS" >&2 || true
  exit 1
}
if [ -L "$LIVE" ] && postfix status >/dev/null 2>&1 && [ "$(restart_params "$PREVIOUS")" != "$(restart_params "$STAGE")" ]; then
  echo "header-rewrite: inet_interfaces or inet_protocols changed: restarting Postfix (queued mail stays)"
fi
# Switch and load are one unit: a closed session (hang-up, broken pipe, interrupt) cannot split
# them, and the next postfix or verify step completes a switch that something harder cut (step 0).
go_live() {
  mv "$STAGE" "$RELEASES/$NAME"
  trap - EXIT
  if [ -L "$LIVE" ]; then
    switch_live "$RELEASES/$NAME"
  else
    # First deploy: keep the package's directory aside; from now on $LIVE is a symlink.
    mv "$LIVE" "$RELEASES/original"
    ln -s "$RELEASES/$NAME" "$LIVE"
  fi
  out=$(load_live "$PREVIOUS") || rollback "$out"
}
trap '' HUP INT TERM PIPE
go_live
trap - HUP INT TERM PIPE

# 7. Keep the last $KEEP releases (and the package original) for inspection and rollback.
ls -1d "$RELEASES"/2*-* 2>/dev/null | sort | head -n -$KEEP | while read -r old; do
  [ "$old" = "$(readlink "$LIVE")" ] || rm -rf "$old"
done
echo "header-rewrite: ${node.fqdn} now runs bundle \${BUNDLE:0:12} ($NAME)"
`;
}

/**
 * A verified TLS handshake with each tenant next hop, as that tenant's transport makes it: the CA
 * file main.cf names, the client certificate the transport presents, IPv4 if forced. posttls-finger
 * arguments; the post-deploy check and `npm run status` both run them (no mail is sent).
 */
export function nexthopProbes(
  cfg: StackConfig,
  bundle: NodeBundle,
): { tenant: string; nexthop: string; args: string[] }[] {
  const nodeChain = `${bundle.tls.keyFile},${bundle.tls.chainFile}`;
  return Object.entries(bundle.tenantNexthops)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([tenant, nexthop]) => ({
      tenant,
      nexthop,
      args: [
        "-l",
        "secure",
        "-F",
        TENANT_CA_FILE,
        "-H",
        bundle.clientCertificates[tenant] ?? nodeChain,
        ...(cfg.forceIPv4ToTenants ? ["-a", "ipv4"] : []),
        nexthop,
      ],
    }));
}

/** What the status collector (node/relay-status.py) checks on a node, from its bundle. */
export function statusSpec(cfg: StackConfig, bundle: NodeBundle, hours: number) {
  const certificates = [
    { label: "node certificate", file: bundle.tls.chainFile },
    ...Object.entries(bundle.clientCertificates)
      .sort(([a], [b]) => a.localeCompare(b))
      // Key first, then the chain (or one PEM holding both): the certificate is in the last file.
      .map(([tenant, files]) => ({
        label: `client certificate for ${tenant}`,
        file: files.split(",").pop()!,
      })),
  ];
  return {
    fqdn: bundle.node.fqdn,
    releaseMarker: `${POSTFIX_LIVE}/${RELEASE_MARKER}`,
    releaseLoaded: `${POSTFIX_LIVE}/${RELEASE_LOADED}`,
    releaseChecked: `${POSTFIX_LIVE}/${RELEASE_CHECKED}`,
    log: POSTFIX_LOG,
    pinMilter: { service: PIN_MILTER.service, log: PIN_MILTER.log, socket: PIN_MILTER.socket },
    hours,
    tenants: nexthopProbes(cfg, bundle).map((p) => ({ id: p.tenant, nexthop: p.nexthop, probe: p.args })),
    certificates,
  };
}

export type StatusSpec = ReturnType<typeof statusSpec>;

/**
 * Prometheus on the node: Debian's node and Postfix exporters, and header-rewrite's own metrics
 * (certificates, next hops, queue age, refusals) written every 5 minutes by the status collector
 * for node-exporter's textfile collector. Also keeps Postfix's log readable by the exporter (group
 * adm) and rotated. Last step: a metrics failure never holds back or rolls back mail.
 */
function metricsScript(cfg: StackConfig, bundle: NodeBundle): string {
  const m = METRICS_COLLECTOR;
  const { node } = bundle;
  const spec = JSON.stringify(statusSpec(cfg, bundle, 24), null, 2);
  const unit = (description: string, exec: string[]) =>
    `[Unit]\nDescription=${description}\n[Service]\nType=oneshot\n${exec.map((e) => `${e}\n`).join("")}`;
  const timer = (description: string, schedule: string) =>
    `[Unit]\nDescription=${description}\n[Timer]\n${schedule}\n[Install]\nWantedBy=timers.target\n`;
  const logAccess = `chgrp adm ${POSTFIX_LOG} && chmod 640 ${POSTFIX_LOG}`;
  const oldLogs = `find ${path.posix.dirname(POSTFIX_LOG)} -maxdepth 1 -name "${path.posix.basename(POSTFIX_LOG)}.*"`;
  // Copy, then truncate in place: the file postlogd appends to and the exporter tails stays the same
  // file with the same mode. (`postfix logrotate` renames it; postlogd then creates a root-only one,
  // which the exporter cannot reopen and stops tailing -- seen at midnight in the sandbox.)
  const rotateScript = `#!/bin/sh
# header-rewrite: daily rotation of Postfix's log (keeps 14 days)
set -eu
f=${POSTFIX_LOG}
[ -s "$f" ] || exit 0
old="$f.$(date -u +%Y%m%d-%H%M%S)"
cp -p "$f" "$old" && truncate -s 0 "$f" && gzip -f "$old"
${logAccess}
${oldLogs} -mtime +14 -delete
`;
  const LOG_ROTATE = "/usr/local/sbin/header-rewrite-postfix-logrotate";
  const files: [string, string][] = [
    [
      `/etc/systemd/system/${m.service}.service`,
      unit("header-rewrite: metrics for node-exporter's textfile collector", [
        `ExecStart=/usr/bin/python3 ${m.program} --prometheus ${m.spec} ${METRICS_TEXTFILE}`,
      ]),
    ],
    [
      `/etc/systemd/system/${m.service}.timer`,
      timer("header-rewrite: metrics every 5 minutes", "OnBootSec=1min\nOnUnitActiveSec=5min"),
    ],
    [LOG_ROTATE, rotateScript],
    [
      "/etc/systemd/system/header-rewrite-postfix-logrotate.service",
      unit("header-rewrite: rotate Postfix's log (maillog_file)", [`ExecStart=${LOG_ROTATE}`]),
    ],
    [
      "/etc/systemd/system/header-rewrite-postfix-logrotate.timer",
      timer("header-rewrite: rotate Postfix's log daily", "OnCalendar=daily\nPersistent=true"),
    ],
  ];
  // Reachable from outside only when the security group opens them (monitoringCidrs); otherwise
  // loopback, where the metrics step and npm run status read them.
  const listen = cfg.monitoringCidrs.length ? "" : "127.0.0.1";
  const postfixExporterArgs =
    `ARGS="--postfix.logfile_path=${POSTFIX_LOG} ` +
    `--web.listen-address=${listen}:${EXPORTERS.postfix.port}"\n`;
  const nodeExporterArgs = `ARGS="--web.listen-address=${listen}:${EXPORTERS.node.port}"\n`;
  const install = (target: string, content: string) =>
    `${writeFile(`${target}.new`, content)}if cmp -s ${target}.new ${target}; then rm -f ${target}.new; ` +
    `else mv -f ${target}.new ${target}; CHANGED=yes; fi\n`;
  const answers = Object.values(EXPORTERS)
    .map(
      (e) =>
        `scrape ${e.port} > /dev/null || fail "${e.name} does not answer on port ${e.port} (journalctl -u ${e.name})"\n`,
    )
    .join("");
  const exporters = Object.values(EXPORTERS)
    .map((e) => e.name)
    .join(" ");
  const ports =
    `node-exporter ${listen}:${EXPORTERS.node.port} (with header-rewrite's), ` +
    `postfix-exporter ${listen}:${EXPORTERS.postfix.port}`;
  const installs = [
    install(m.program, bundle.statusProgram),
    install(m.spec, spec),
    install("/etc/default/prometheus-postfix-exporter", postfixExporterArgs),
    install("/etc/default/prometheus-node-exporter", nodeExporterArgs),
    ...files.map(([f, c]) => install(f, c)),
  ].join("");
  return `#!/bin/bash
# header-rewrite: Prometheus metrics on ${node.fqdn}: ${ports}
set -euo pipefail
fail() { echo "header-rewrite: metrics on ${node.fqdn}: $*" >&2; exit 1; }
[ -d /run/systemd/system ] || fail "systemd is not running"
# Servers created before the exporters or chrony (the pinning milter's clock) were in user-data
# (read at first boot only) get them here; chrony starts on install, replacing systemd-timesyncd.
missing=()
for p in ${exporters} chrony; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ \${#missing[@]} -gt 0 ]; then
  echo "installing \${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends "\${missing[@]}") >/dev/null ||
    fail "could not install \${missing[*]} (apt-get install \${missing[*]})"
fi
CHANGED=no
install -d -m 755 ${path.posix.dirname(m.program)} ${path.posix.dirname(m.spec)} ${path.posix.dirname(METRICS_TEXTFILE)}
${installs}chmod 755 ${LOG_ROTATE}
# The exporter reads Postfix's log with group adm; postlogd creates it root-only.
touch ${POSTFIX_LOG} && ${logAccess}
systemctl daemon-reload
systemctl enable --quiet --now ${Object.values(EXPORTERS)
    .map((e) => e.name)
    .join(" ")} ${m.service}.timer header-rewrite-postfix-logrotate.timer
if [ "$CHANGED" = yes ]; then systemctl restart ${exporters}; fi
systemctl start ${m.service}.service || fail "the metrics collector failed (journalctl -u ${m.service})"
scrape() {
  /usr/bin/python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' \\
    "http://127.0.0.1:$1/metrics" 2>/dev/null
}
for _ in $(seq 50); do
  scrape ${EXPORTERS.postfix.port} >/dev/null && scrape ${EXPORTERS.node.port} >/dev/null && break; sleep 0.2
done
# Captured first: grep -q would close the pipe early, and pipefail would count that as a failure.
own=$(scrape ${EXPORTERS.node.port} || true)
${answers}grep -q '^header_rewrite_metrics_timestamp_seconds ' <<<"$own" ||
  fail "node-exporter does not show header-rewrite's metrics (${METRICS_TEXTFILE})"
echo "metrics on ${node.fqdn}: ${ports}"
`;
}

/** One probe as a line of a release's probe record: an unchanged line means an unchanged path. */
function probeLine(p: { tenant: string; args: string[] }): string {
  return [p.tenant, ...p.args].join(" ");
}

/** How the verify step checks each tenant next hop: attempts, seconds between them. */
const NEXTHOP_ATTEMPTS = 3;

/**
 * The post-deploy check: the bundle is live, Postfix runs and answers STARTTLS on port 25, the
 * pinning milter answers, and every tenant next hop completes a verified TLS handshake with the
 * certificate that tenant's transport presents (posttls-finger: no mail is sent). A failure returns
 * the node to the release that was live before and fails the step, so the rollout stops here.
 * Run again for a bundle it returned from, it makes that bundle live again first (a retry).
 */
function verifyScript(cfg: StackConfig, bundle: NodeBundle): string {
  const { node } = bundle;
  const hash = bundleHash(bundle.files);
  const hops = nexthopProbes(cfg, bundle)
    .map(
      (p) =>
        `check "tenant ${p.tenant} next hop ${p.nexthop}" "Verified TLS connection established" ` +
        `${shq(probeLine(p))} ${p.args.map(shq).join(" ")}\n`,
    )
    .join("");
  return `#!/bin/bash
# header-rewrite: post-deploy check of bundle ${hash.slice(0, 12)} on ${node.fqdn}
set -uo pipefail
LIVE=${POSTFIX_LIVE}
RELEASES=${POSTFIX_RELEASES}
BUNDLE=${hash}
WANT="${node.fqdn} $BUNDLE"
marker() { cat "$LIVE/${RELEASE_MARKER}" 2>/dev/null || echo "no header-rewrite release"; }
${releaseFunctions(bundle)}
lock_releases || { echo "header-rewrite: another deploy still holds $RELEASES/.lock after 10 min" >&2; exit 1; }
switch_to() {
  local from
  from=$(readlink "$LIVE")
  switch_live "$1" && load_live "$from" >/dev/null
}

# 1. The bundle must be live, and loaded. A failed check returned the node to its previous release;
#    running the check again makes the bundle live again first, if its release is still kept. A
#    deploy cut between switch and reload left the bundle's marker live but Postfix on the release
#    before: the check completes that reload, since the release was built and checked before it.
if [ "$(marker)" != "$WANT" ]; then
  release=$(grep -lx "$WANT" "$RELEASES"/2*-"\${BUNDLE:0:12}"/${RELEASE_MARKER} 2>/dev/null | sort | tail -n 1)
  if [ -z "$release" ]; then
    echo "header-rewrite: ${node.fqdn} runs $(marker), not bundle \${BUNDLE:0:12}, and has no release of it:" \\
      "the postfix step must deploy it first" >&2
    exit 1
  fi
  release=$(dirname "$release")
  readlink "$LIVE" > "$release/${RELEASE_PREVIOUS}"
  switch_to "$release" || { echo "header-rewrite: could not make $release live again" >&2; exit 1; }
  echo "header-rewrite: bundle \${BUNDLE:0:12} is live again on ${node.fqdn} for its check"
else
  # A failure to load is one of the problems below, and the check returns from the release.
  complete_cut_switch || true
fi
RELEASE=$(readlink "$LIVE")
PREVIOUS=$(cat "$RELEASE/${RELEASE_PREVIOUS}" 2>/dev/null || true)
problems=()

# 2. Postfix runs, and the pinning milter answers before port 25 hands it mail.
postfix status >/dev/null 2>&1 || problems+=("Postfix is not running")
postfix status >/dev/null 2>&1 && ! release_loaded &&
  problems+=("Postfix has not loaded $RELEASE (its master was not reloaded or started since the switch)")
/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' ${PIN_MILTER.socket} \\
  2>/dev/null || problems+=("the tenant-pinning milter does not answer on ${PIN_MILTER.socket}")

# 3. TLS handshakes, no mail: port 25 offers STARTTLS; each tenant next hop verifies (names and chain)
#    and is offered the client certificate that tenant's transport presents.
#    A next hop the previous release reached the same way (same host, certificate, CA, family, as
#    recorded in its ${RELEASE_PROBES}) that fails now is an outage this change cannot have caused:
#    a warning, and the release stays (rolling back would not bring the tenant back).
check() {
  local what=$1 want=$2 probe=$3 out=""; shift 3
  for i in $(seq ${NEXTHOP_ATTEMPTS}); do
    out=$(timeout 60 posttls-finger -c -t 10 -T 10 "$@" 2>&1)
    if grep -q "$want" <<<"$out"; then echo "header-rewrite: $what: $(grep -m1 "$want" <<<"$out" | cut -c1-160)"; return; fi
    [ "$i" = ${NEXTHOP_ATTEMPTS} ] || sleep 2
  done
  local said
  said="$what: $(grep -v -e '^$' <<<"$out" | tail -n 3 | tr '\\n' ' ' | cut -c1-400)"
  if [ -n "$probe" ] && [ -n "$PREVIOUS" ] && grep -qxF -- "$probe" "$PREVIOUS/${RELEASE_PROBES}" 2>/dev/null; then
    echo "header-rewrite: WARNING on ${node.fqdn}: $said -- unchanged by this release, which stays" >&2
  else
    problems+=("$said")
  fi
}
check "STARTTLS on port 25" "TLS connection established" "" -l encrypt "[127.0.0.1]:25"
${hops}
if [ \${#problems[@]} -gt 0 ]; then
  for p in "\${problems[@]}"; do echo "header-rewrite: post-deploy check on ${node.fqdn}: $p" >&2; done
  if [ -n "$PREVIOUS" ] && [ -d "$PREVIOUS" ] && switch_to "$PREVIOUS"; then
    echo "header-rewrite: bundle \${BUNDLE:0:12} FAILED its post-deploy check on ${node.fqdn};" \\
      "switched back to $PREVIOUS ($(marker))" >&2
  else
    echo "header-rewrite: bundle \${BUNDLE:0:12} FAILED its post-deploy check on ${node.fqdn}" \\
      "and no previous release is kept to return to" >&2
  fi
  exit 1
fi
echo "$BUNDLE" > "$RELEASE/${RELEASE_CHECKED}"
echo "header-rewrite: ${node.fqdn} passed its post-deploy check with bundle \${BUNDLE:0:12}"
`;
}

/** The steps a node is pushed after boot, in the order they run. */
export const STEPS = [
  "cloud-init",
  "certificate",
  "client-certificates",
  "pin-secret",
  "postfix",
  "verify",
  "metrics",
] as const;

export type StepId = (typeof STEPS)[number];

/**
 * Steps built from secrets (keys, API credentials): their scripts stay Pulumi secrets. The Postfix
 * bundle holds none and stays readable in `pulumi preview` for review.
 */
export const SECRET_STEPS: ReadonlySet<StepId> = new Set<StepId>([
  "certificate",
  "client-certificates",
  "pin-secret",
]);

interface DeployStep {
  id: StepId;
  script: string;
}

export interface NodeSecrets {
  clientCertificates?: Record<string, string>;
  dnsCredentials?: DnsOvhCredentials;
  /** header-rewrite:pinSecret, for pins with secret-header=. */
  pinSecret?: string;
}

/** Every deploy step of one node, built from its bundle; used by the Pulumi program and the sandbox. */
export function deploySteps(cfg: StackConfig, bundle: NodeBundle, secrets: NodeSecrets = {}): DeployStep[] {
  const scripts: Record<StepId, string> = {
    "cloud-init": waitForCloudInitScript(),
    certificate: certificateScript(cfg, bundle.node, secrets.dnsCredentials),
    "client-certificates": clientCertificatesScript(secrets.clientCertificates ?? {}),
    "pin-secret": pinSecretScript(secrets.pinSecret),
    postfix: deployPostfixScript(cfg, bundle),
    verify: verifyScript(cfg, bundle),
    metrics: metricsScript(cfg, bundle),
  };
  return STEPS.map((id) => ({ id, script: scripts[id] }));
}

/**
 * Runs when a node's server is about to be deleted (its `drain` command's delete): the node is out
 * of DNS by then. Port 25 closes, the queue is delivered for at most drainSeconds, and only an
 * empty queue (or the force file) lets the server go; otherwise the removal stops with the queue
 * listed and the ways forward. Queue files are counted on disk: postqueue fails while Postfix is stopped.
 */
export function drainScript(cfg: StackConfig, node: NodeIdentity): string {
  const spool = "/var/spool/postfix";
  const queues = ["maildrop", "incoming", "active", "deferred", "hold"].map((q) => `${spool}/${q}`).join(" ");
  const archive = "/tmp/header-rewrite-queue.tgz";
  // Postfix's own way to move a queue (postsuper -r: every message back to maildrop, which the
  // other node's pickup re-queues), from Wietse Venema's migration procedure.
  const moveOut =
    `sudo postfix stop && sudo postsuper -r ALL && sudo tar -C ${spool} -czf ${archive} maildrop ` +
    `&& sudo find ${spool}/maildrop -type f -delete`;
  return `#!/bin/bash
# header-rewrite: drain ${node.fqdn} before its server is deleted.
set -uo pipefail
NODE=${node.fqdn}
BOUND=${cfg.drainSeconds}
FORCE=${DRAIN_FORCE}
queued() { find ${queues} -type f 2>/dev/null | wc -l; }
# 1. No new mail: port 25's service goes from the live master.cf (loopback pass 2, pickup and
#    delivery keep running). A later deploy to this node renders it back.
if [ -n "$(postconf -M smtp/inet 2>/dev/null)" ]; then
  postconf -M# smtp/inet && postfix reload >/dev/null 2>&1
  echo "$NODE: port 25 closed, no new mail is accepted"
fi
# 2. Deliver the queue, retrying every 10 s, for at most BOUND seconds.
started=$SECONDS
while :; do
  n=$(queued)
  if [ "$n" -eq 0 ]; then echo "$NODE: drained in $((SECONDS - started)) s, the queue is empty"; exit 0; fi
  if [ -e "$FORCE" ]; then
    echo "$NODE: FORCED by $FORCE: $n queued message(s) go with the server:"
    postqueue -p 2>&1 | head -n 60
    exit 0
  fi
  if [ $((SECONDS - started)) -ge "$BOUND" ]; then
    {
      echo "header-rewrite: $NODE still holds $n queued message(s) after $BOUND s: its removal stops here, the server stays."
      postqueue -p 2>&1 | head -n 60
      cat <<HEADER_REWRITE_HOW
To go on, either
  - fix what defers them (npm run status names the reason) and run pulumi up again: the drain resumes;
  - or move them to another node, which delivers them (they are already rewritten and checked):
      on $NODE:  ${moveOut}
      copy ${archive} to the other node, and there:  sudo tar -C ${spool} -xzf ${archive} && sudo postkick public pickup W
    then run pulumi up again: the queue here is empty;
  - or let them go with the server: sudo touch $FORCE on $NODE, and run pulumi up again.
HEADER_REWRITE_HOW
    } >&2
    exit 1
  fi
  left=$((BOUND - SECONDS + started))
  echo "$NODE: $n message(s) queued, $left s left"
  postqueue -f >/dev/null 2>&1 || true
  sleep $((left < 10 ? (left < 1 ? 1 : left) : 10))
done
`;
}
