// Deploy: the steps a node runs, in order. Takes the bundle render returns (and the node's
// secrets) and returns, per step, the script node/steps/<step>.sh preceded by this node's facts
// (shell variables) and the contents it ships (here-documents in functions the step calls). The same
// scripts run through remote.Command in production and over SSH in the sandbox (`sudo bash -s`).
import * as path from "node:path";
import type { NodeIdentity, StackConfig } from "../config/stack-config";
import { DNS_CREDENTIALS_REQUIRED, needsDnsCredentials, serviceFqdn } from "../config/stack-config";
import { type NodeBundle, bundleHash } from "../render/bundle";
import { readNodeFiles } from "../render/node-render";
import {
  ACME_DNS_CREDENTIALS,
  CERTBOT_DEPLOY_HOOK,
  CLIENT_CERT_DIR,
  DRAIN_FORCE,
  EXPORTERS,
  LEGO_OVH_ENV,
  LEGO_PATH,
  LEGO_RENEW,
  LEGO_SETTINGS,
  METRICS_COLLECTOR,
  METRICS_TEXTFILE,
  PIN_MILTER,
  POSTFIX_LIVE,
  POSTFIX_LOG,
  POSTFIX_LOG_ROTATE,
  POSTFIX_RELEASES,
  RELEASES_KEPT,
  RELEASE_CHECKED,
  RELEASE_LOADED,
  RELEASE_MARKER,
  RELEASE_PREVIOUS,
  RELEASE_PROBES,
  SYSTEMD_UNIT_DIR,
  TENANT_CA_FILE,
  clientCertPath,
  tenantCertName,
} from "../node-layout";
import { type Fact, heredoc, shellFacts, shellFunction, shellQuote as shq } from "./shell-text";

/** OVH API credentials for the dns-01 challenge: a consumer key limited to the zone's records. */
export interface DnsOvhCredentials {
  endpoint: string;
  applicationKey: string;
  applicationSecret: string;
  consumerKey: string;
}

/** A file a step installs: where, with which mode, and its content. */
type Shipped = [target: string, mode: string, content: string];

/** A function of the step that installs FILES in order (node/lib/ship.sh), failing on the first. */
function shipping(name: string, files: Shipped[]): string {
  return shellFunction(
    name,
    files
      .map(([target, mode, content]) => heredoc(`  ship ${shq(target)} ${mode}`, content, "|| return 1"))
      .join(""),
  );
}

/** A function of the step that prints CONTENT (a secret stays inside the step that needs it). */
function printing(name: string, content: string): string {
  return shellFunction(name, heredoc("  cat", content));
}

/** node/systemd/UNIT as it is installed. */
function unitFile(bundle: NodeBundle, unit: string): Shipped {
  return [`${SYSTEMD_UNIT_DIR}/${unit}`, "644", bundle.nodeFiles[`systemd/${unit}`]];
}

/**
 * A step as the node receives it: node/steps/STEP.sh after this node's facts, the functions that
 * carry its contents, and the shell libraries it uses (node/lib/).
 */
function composeStep(
  nodeFiles: Record<string, string>,
  step: string,
  title: string,
  facts: Record<string, Fact>,
  data: string[] = [],
  libs: string[] = [],
): string {
  const file = (rel: string) => {
    const text = nodeFiles[rel];
    if (text === undefined) throw new Error(`node/${rel} is missing`);
    return `# --- node/${rel}\n${text.replace(/^#!.*\n/, "")}`;
  };
  return (
    `#!/bin/bash\n# header-rewrite: ${title}\n` +
    `# --- facts for this node (src/deploy/steps.ts)\n${shellFacts(facts)}${data.join("")}` +
    [...libs.map((l) => `lib/${l}`), `steps/${step}.sh`].map(file).join("")
  );
}

/** What a step needs to know about Postfix releases (node/lib/postfix-release.sh). */
const RELEASE_FACTS = {
  LIVE: POSTFIX_LIVE,
  RELEASES: POSTFIX_RELEASES,
  POSTFIX_LOG,
  MARKER_FILE: RELEASE_MARKER,
  PREVIOUS_FILE: RELEASE_PREVIOUS,
  LOADED_FILE: RELEASE_LOADED,
  CHECKED_FILE: RELEASE_CHECKED,
  PROBES_FILE: RELEASE_PROBES,
};

/** The OVH API credentials' names for certbot's OVH plugin (its .ini) and for lego (environment). */
const OVH_INI_KEYS = [
  "dns_ovh_endpoint",
  "dns_ovh_application_key",
  "dns_ovh_application_secret",
  "dns_ovh_consumer_key",
];
const LEGO_ENV_KEYS = ["OVH_ENDPOINT", "OVH_APPLICATION_KEY", "OVH_APPLICATION_SECRET", "OVH_CONSUMER_KEY"];

/** The node certificate (certbot) and the tenants' own (certbot's OVH plugin, or lego). */
function certificateStep(cfg: StackConfig, bundle: NodeBundle, dns?: DnsOvhCredentials): string {
  const { node } = bundle;
  const tenants = Object.entries(cfg.tenantCertificates).sort(([a], [b]) => a.localeCompare(b));
  const viaLego = bundle.tenantCertTool === "lego";
  if (needsDnsCredentials(cfg) && !dns) throw new Error(DNS_CREDENTIALS_REQUIRED);
  // certbot's OVH plugin: the node certificate's dns-01 challenge, or tenant certificates where the
  // release packages the plugin (lego takes them elsewhere).
  const certbotDns = cfg.acmeChallenge === "dns-01" || (!viaLego && tenants.length > 0);
  const data = [
    shipping("ship_deploy_hook", [
      [CERTBOT_DEPLOY_HOOK, "755", bundle.nodeFiles["hooks/50-header-rewrite-postfix"]],
    ]),
  ];
  // The same OVH API credentials, as certbot's plugin reads them and as lego's environment.
  const credentials = (names: string[], sep: string) =>
    dns
      ? [dns.endpoint, dns.applicationKey, dns.applicationSecret, dns.consumerKey]
          .map((v, i) => `${names[i]}${sep}${v}`)
          .join("\n")
      : "";
  if (dns && certbotDns) {
    data.push(printing("ovh_ini", credentials(OVH_INI_KEYS, " = ")));
  }
  if (dns && viaLego && tenants.length) {
    data.push(
      printing("lego_ovh_env", credentials(LEGO_ENV_KEYS, "=")),
      shipping("ship_lego_renewal", [
        [LEGO_RENEW, "755", bundle.nodeFiles["sbin/header-rewrite-lego-renew"]],
        unitFile(bundle, "header-rewrite-lego-renew.service"),
        unitFile(bundle, "header-rewrite-lego-renew.timer"),
      ]),
    );
  }
  const names = [node.fqdn, ...(cfg.acmeChallenge === "dns-01" ? [serviceFqdn(cfg)] : [])];
  return composeStep(
    bundle.nodeFiles,
    "certificate",
    `certificates for ${node.fqdn} via ACME (${cfg.acmeChallenge})`,
    {
      NODE: node.fqdn,
      NODE_NAMES: names,
      NODE_CHAIN: bundle.tls.chainFile,
      CHALLENGE: cfg.acmeChallenge,
      ACME_EMAIL: cfg.acmeEmail,
      ACME_SERVER: cfg.acmeServer,
      DNS_PROPAGATION: cfg.acmeDnsPropagationSeconds,
      ACME_DNS_CREDENTIALS,
      CERTBOT_DNS: certbotDns ? "yes" : "no",
      DEPLOY_HOOK: CERTBOT_DEPLOY_HOOK,
      TENANT_CERT_TOOL: bundle.tenantCertTool,
      TENANT_IDS: tenants.map(([id]) => id),
      TENANT_NAMES: tenants.map(([, name]) => name),
      TENANT_CERT_NAMES: tenants.map(([id]) => tenantCertName(id)),
      // Key first, then the chain: the certificate is in the last file.
      TENANT_CHAINS: tenants.map(([id]) => bundle.clientCertificates[id]?.split(",").pop() ?? ""),
      LEGO_PATH,
      LEGO_OVH_ENV,
      LEGO_SETTINGS,
      LEGO_RENEW,
    },
    data,
    ["ship.sh"],
  );
}

/** Operator-supplied client certificates (header-rewrite:clientCertificates), one PEM per tenant. */
function clientCertificatesStep(bundle: NodeBundle, certs: Record<string, string>): string {
  const ids = Object.keys(certs).sort();
  const which = ids.length ? ids.join(", ") : "none: every tenant gets the node certificate";
  return composeStep(
    bundle.nodeFiles,
    "client-certificates",
    `per-tenant client certificates (${which})`,
    { CLIENT_CERT_DIR, TENANTS: ids },
    [
      shipping(
        "ship_client_certificates",
        ids.map((id) => [clientCertPath(id), "600", certs[id]]),
      ),
    ],
    ["ship.sh"],
  );
}

/** header-rewrite:pinSecret where the pinning milter reads it, or none. */
function pinSecretStep(bundle: NodeBundle, secret: string | undefined): string {
  return composeStep(
    bundle.nodeFiles,
    "pin-secret",
    "the secret tenant A's transport rule stamps (docs: Tenant pinning)",
    { PIN_SECRET_FILE: PIN_MILTER.secretFile, PIN_USER: PIN_MILTER.user },
    secret ? [printing("pin_secret", secret)] : [],
    ["pin-user.sh"],
  );
}

/** How many sample lookups per map the deploy checks against the staged .cdb files. */
const PROBES_PER_MAP = 40;

function sample<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(items[Math.floor((i * (items.length - 1)) / (n - 1))]);
  return out;
}

/** The milter's arguments, as its unit (node/systemd/header-rewrite-pin.service) passes them. */
export function pinMilterArgs(): string[] {
  const m = PIN_MILTER;
  return [m.policy, `unix:${m.socket}`, m.secretFile, m.calendarPolicy];
}

/** The staged, atomic Postfix deploy, with the pinning milter it needs. */
function postfixStep(cfg: StackConfig, bundle: NodeBundle): string {
  const { node, files } = bundle;
  const hash = bundleHash(files);
  const names = Object.keys(files).sort();
  const m = PIN_MILTER;
  const checks = bundle.indexedMaps.map(({ name, rows }) => {
    const picked = sample(rows, PROBES_PER_MAP);
    const want = picked.map(([k, v]) => `${k} ${v}`).join("\n");
    return heredoc(`  check_map ${name} ${rows.length} ${shq(want)}`, picked.map(([k]) => k).join("\n"));
  });
  return composeStep(
    bundle.nodeFiles,
    "postfix",
    `staged, atomic Postfix deploy for ${node.fqdn}\n# bundle ${hash}`,
    {
      NODE: node.fqdn,
      BUNDLE: hash,
      ...RELEASE_FACTS,
      KEEP: RELEASES_KEPT,
      NEEDED_TLS_FILES: [bundle.tls.keyFile, bundle.tls.chainFile],
      NEEDED_CLIENT_CERTIFICATES: Object.values(bundle.clientCertificates).flatMap((f) => f.split(",")),
      RENDERED_FILES: names,
      INDEXED_MAPS: bundle.indexedMaps.map((i) => i.name),
      PIN_PROGRAM: m.program,
      PIN_SOCKET: m.socket,
      PIN_SERVICE: m.service,
      PIN_USER: m.user,
      PIN_PIDFILE: m.pidFile,
      PIN_LOG: m.log,
      PIN_ARGS: pinMilterArgs(),
    },
    [
      shellFunction(
        "stage_rendered_files",
        names.map((n) => heredoc(`  cat > "$STAGE/${n}"`, files[n])).join(""),
      ),
      shellFunction("check_staged_maps", checks.join("")),
      printing("write_probe_record", nexthopProbes(cfg, bundle).map(probeLine).join("\n")),
      shipping("ship_pin_milter", [
        [m.calendarModule, "644", bundle.nodeFiles["calendar_rewrite.py"]],
        [m.program, "755", bundle.nodeFiles["tenant-pin-milter.py"]],
      ]),
      shipping("ship_pin_milter_unit", [unitFile(bundle, `${m.service}.service`)]),
    ],
    ["postfix-release.sh", "ship.sh", "pin-user.sh"],
  );
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
 * Prometheus on the node: the exporters' settings, the status collector and its spec, the metrics
 * and log-rotation units. Last step: a metrics failure never holds back or rolls back mail.
 */
function metricsStep(cfg: StackConfig, bundle: NodeBundle): string {
  const c = METRICS_COLLECTOR;
  // Reachable from outside only when the security group opens them (monitoringCidrs); otherwise
  // loopback, where the metrics step and npm run status read them.
  const listen = cfg.monitoringCidrs.length ? "" : "127.0.0.1";
  const exporters = Object.values(EXPORTERS);
  const units = [
    `${c.service}.service`,
    `${c.service}.timer`,
    "header-rewrite-postfix-logrotate.service",
    "header-rewrite-postfix-logrotate.timer",
  ];
  return composeStep(
    bundle.nodeFiles,
    "metrics",
    `Prometheus metrics on ${bundle.node.fqdn}`,
    {
      NODE: bundle.node.fqdn,
      EXPORTERS: exporters.map((e) => e.name),
      EXPORTER_PORTS: exporters.map((e) => String(e.port)),
      NODE_EXPORTER_PORT: EXPORTERS.node.port,
      LISTENING:
        `node-exporter ${listen}:${EXPORTERS.node.port} (with header-rewrite's), ` +
        `postfix-exporter ${listen}:${EXPORTERS.postfix.port}`,
      METRICS_DIRS: [
        ...new Set([c.program, c.spec, METRICS_TEXTFILE, POSTFIX_LOG_ROTATE].map(path.posix.dirname)),
      ],
      METRICS_SERVICE: c.service,
      METRICS_TEXTFILE,
      POSTFIX_LOG,
    },
    [
      shipping("ship_metrics", [
        [c.program, "755", bundle.nodeFiles["relay-status.py"]],
        [c.spec, "644", JSON.stringify(statusSpec(cfg, bundle, 24), null, 2)],
        [
          "/etc/default/prometheus-postfix-exporter",
          "644",
          `ARGS="--postfix.logfile_path=${POSTFIX_LOG} --web.listen-address=${listen}:${EXPORTERS.postfix.port}"`,
        ],
        [
          "/etc/default/prometheus-node-exporter",
          "644",
          `ARGS="--web.listen-address=${listen}:${EXPORTERS.node.port}"`,
        ],
        [POSTFIX_LOG_ROTATE, "755", bundle.nodeFiles["sbin/header-rewrite-postfix-logrotate"]],
        ...units.map((u) => unitFile(bundle, u)),
      ]),
    ],
    ["ship.sh"],
  );
}

/** One probe as a line of a release's probe record: an unchanged line means an unchanged path. */
function probeLine(p: { tenant: string; args: string[] }): string {
  return [p.tenant, ...p.args].join(" ");
}

/** How the verify step checks each tenant next hop: attempts, seconds between them. */
const NEXTHOP_ATTEMPTS = 3;

/** The post-deploy check of the bundle (node/steps/verify.sh). */
function verifyStep(cfg: StackConfig, bundle: NodeBundle): string {
  const { node } = bundle;
  const hash = bundleHash(bundle.files);
  const hops = nexthopProbes(cfg, bundle).map(
    (p) =>
      `  check ${shq(`tenant ${p.tenant} next hop ${p.nexthop}`)} "Verified TLS connection established" ` +
      `${shq(probeLine(p))} ${p.args.map(shq).join(" ")}\n`,
  );
  return composeStep(
    bundle.nodeFiles,
    "verify",
    `post-deploy check of bundle ${hash.slice(0, 12)} on ${node.fqdn}`,
    {
      NODE: node.fqdn,
      BUNDLE: hash,
      ...RELEASE_FACTS,
      PIN_SOCKET: PIN_MILTER.socket,
      NEXTHOP_ATTEMPTS,
    },
    [shellFunction("check_tenant_nexthops", hops.join(""))],
    ["postfix-release.sh"],
  );
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

export interface DeployStep {
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
    "cloud-init": composeStep(
      bundle.nodeFiles,
      "cloud-init",
      "wait until cloud-init has finished first boot",
      {},
    ),
    certificate: certificateStep(cfg, bundle, secrets.dnsCredentials),
    "client-certificates": clientCertificatesStep(bundle, secrets.clientCertificates ?? {}),
    "pin-secret": pinSecretStep(bundle, secrets.pinSecret),
    postfix: postfixStep(cfg, bundle),
    verify: verifyStep(cfg, bundle),
    metrics: metricsStep(cfg, bundle),
  };
  return STEPS.map((id) => ({ id, script: scripts[id] }));
}

/** Runs when a node's server is about to be deleted (its `drain` command's delete): node/steps/drain.sh. */
export function drainScript(cfg: StackConfig, node: NodeIdentity): string {
  return composeStep(readNodeFiles(), "drain", `drain ${node.fqdn} before its server is deleted`, {
    NODE: node.fqdn,
    BOUND: cfg.drainSeconds,
    FORCE: DRAIN_FORCE,
  });
}
