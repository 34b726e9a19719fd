// Pure, deterministic rendering of everything a node receives, from the validated model and the
// stack configuration. Same input, same bytes: no timestamps, no map ordering surprises.
import * as fs from "node:fs";
import * as path from "node:path";
import Handlebars from "handlebars";
import { PROJECT_ROOT } from "../project";
import type { NodeIdentity, StackConfig } from "../config/stack-config";
import { MAP_NAMES, type MapName, type RelayMaps } from "../maps/relay-maps";
import { calendarPolicy } from "../maps/calendar-addresses";
import type { NodeBundle } from "./bundle";
import {
  PIN_MILTER,
  POSTFIX_LOG,
  REWRITE_PASS,
  NODE_DIR,
  TENANT_CA_FILE,
  clientCertPath,
  tenantCertChainFiles,
  tlsPaths,
} from "../node-layout";
import { PIN_VERDICT_HEADER, type TenantPin, pinValue } from "../maps/tenant-pins";
import { KNOWN_IMAGES, knownImage, tenantCertsViaLego } from "../config/images";

const TEMPLATES = path.join(PROJECT_ROOT, "templates");

const hbs = Handlebars.create();
hbs.registerHelper("json", (v: unknown) => JSON.stringify(v));
hbs.registerHelper("pad", (s: string, width: number) => s.padEnd(width));
hbs.registerHelper("indent", (text: string, n: number) =>
  text
    .replace(/\n$/, "")
    .split("\n")
    .map((l) => (l ? " ".repeat(n) + l : ""))
    .join("\n"),
);

const cache = new Map<string, Handlebars.TemplateDelegate>();
function template(name: string): Handlebars.TemplateDelegate {
  let t = cache.get(name);
  if (!t) {
    t = hbs.compile(fs.readFileSync(path.join(TEMPLATES, name), "utf8"), { noEscape: true, strict: true });
    cache.set(name, t);
  }
  return t;
}

export interface RenderContext {
  stack: string;
  cfg: StackConfig;
  maps: RelayMaps;
  node: NodeIdentity;
  /** Tenants that get an operator-supplied client certificate instead of the node's. */
  clientCertTenants?: string[];
}

/** One address family of a node as it is configured on the interface. */
interface FamilyAddress {
  address: string;
  gateway: string;
}

/** What the cloud gave a node's port, as its network configuration needs it. */
export interface NodeAddresses {
  /** MAC address of the OpenStack port: the interface is matched on it, whatever its name. */
  mac: string;
  ipv4: FamilyAddress;
  ipv6: FamilyAddress;
  /** DNS resolvers: header-rewrite:dnsResolvers, or those Ext-Net's subnets list. */
  dns: string[];
}

/** Where the node's public network configuration lives (systemd-networkd, see src/config/images.ts). */
export const NETWORK_FILE = "/etc/systemd/network/10-header-rewrite-public.network";
export const NETWORK_SWITCH = "/usr/local/sbin/header-rewrite-network";

/** The null sender has no tenant to route to; refused unless maps/allowed_senders allows it. */
const NULL_SENDER_REJECT =
  "550 5.7.1 Null sender (bounce or auto-reply) is not relayed: no tenant can be chosen for it";

type Row = [key: string, value: string];

interface Table {
  purpose: string;
  source: MapName;
  rows: Row[];
}

function table(name: string, t: Table): string {
  const width = Math.min(40, Math.max(0, ...t.rows.map(([key]) => key.length)));
  return template("postfix-table.hbs")({
    name,
    purpose: t.purpose,
    source: `maps/${t.source}`,
    rows: t.rows.map(([key, value]) => ({ key, value })),
    width,
  });
}

/** The operator's four maps as Postfix tables, from the validated model (the round trip of maps/). */
function operatorTables(maps: RelayMaps): Record<MapName, Table> {
  return {
    translate_domains: {
      purpose: "sender_canonical_maps, old sender -> new sender",
      source: "translate_domains",
      rows: maps.translations.map((t) => [t.from, t.to]),
    },
    allowed_senders: {
      purpose: "check_sender_access, keyed by the sender BEFORE rewriting",
      source: "allowed_senders",
      rows: maps.allowedSenders.map((s) => [s.key, s.action]),
    },
    per_sender_relayhosts: {
      purpose: "sender_dependent_relayhost_maps, keyed by the sender AFTER rewriting",
      source: "per_sender_relayhosts",
      rows: maps.relayhosts.map((r) => [r.key, r.nexthop]),
    },
    allow_relay_by_ip: {
      purpose: "cidr table in mynetworks: clients allowed to relay",
      source: "allow_relay_by_ip",
      rows: maps.clientRanges.map((c) => [c.cidr, c.action]),
    },
    tenant_pins: {
      purpose: "read by the tenant-pinning milter (as tenant_pins.json): what proves tenant A",
      source: "tenant_pins",
      rows: maps.pins.map((p) => [p.key, pinValue(p)]),
    },
    calendar_addresses: {
      purpose: "read by the pinning milter (as calendar_addresses.json): meeting addresses per sender domain",
      source: "calendar_addresses",
      rows: maps.calendar.map((c) => [c.domain, c.mode]),
    },
  };
}

/** The four maps exactly as a node gets them (before the generated additions). */
export function renderOperatorMaps(maps: RelayMaps): Record<MapName, string> {
  const tables = operatorTables(maps);
  return Object.fromEntries(MAP_NAMES.map((name) => [name, table(name, tables[name])])) as Record<
    MapName,
    string
  >;
}

/** Tables Postfix reads as cdb (built with postmap); allow_relay_by_ip is a cidr table read as text. */
const INDEXED = [
  ...MAP_NAMES.filter((m) => !["allow_relay_by_ip", "tenant_pins", "calendar_addresses"].includes(m)),
  "tls_policy",
  "tenant_transports",
];

/** Everything the Postfix step installs on one node, and the facts the deploy stages need. */
export function renderNode(ctx: RenderContext): NodeBundle {
  const { cfg, maps, node } = ctx;
  const tls = tlsPaths(node.fqdn);
  const tenantCertTool = tenantCertsViaLego(cfg.image) ? "lego" : "certbot";
  const withCert = new Set(ctx.clientCertTenants ?? []);
  // An operator-supplied certificate, or one the node obtains for a name of the tenant's own.
  const clientCertificates = Object.fromEntries([
    ...maps.tenants
      .filter((t) => cfg.tenantCertificates[t.id])
      .map((t) => [
        t.id,
        tenantCertChainFiles(t.id, cfg.tenantCertificates[t.id], tenantCertTool === "lego"),
      ]),
    ...maps.tenants.filter((t) => withCert.has(t.id)).map((t) => [t.id, clientCertPath(t.id)]),
  ]);
  const vars = {
    stack: ctx.stack,
    tenants: maps.tenants.map((t) => ({
      transport: tenantTransport(t.id),
      nexthop: t.nexthop,
      clientCert: clientCertificates[t.id] ?? "",
    })),
    forceIPv4: cfg.forceIPv4ToTenants,
    region: cfg.region,
    node,
    tls,
    // Stamped once per message (DATA stage) so tenant A's transport rule can skip relayed mail.
    loopGuardTable: `static:{PREPEND ${cfg.loopGuardHeader}: ${node.fqdn}}`,
    messageSizeLimit: cfg.messageSizeLimit,
    limits: {
      connections: cfg.clientConnectionCountLimit,
      connectionRate: cfg.clientConnectionRateLimit,
      messageRate: cfg.clientMessageRateLimit,
    },
    // Local delivery (postmaster mail) must never be the smaller limit, or Postfix stops with a fatal error.
    mailboxSizeLimit: Math.max(51200000, 2 * cfg.messageSizeLimit),
    debugPeers: cfg.debugPeers.join(", "),
    pin: PIN_MILTER,
    rewritePass: REWRITE_PASS,
    rewritePassSizeLimit: cfg.messageSizeLimit + 1048576,
    tenantCaFile: TENANT_CA_FILE,
    postfixLog: POSTFIX_LOG,
  };
  const tables: Record<string, Table> = {
    ...operatorTables(maps),
    tls_policy: {
      purpose: "smtp_tls_policy_maps: verified TLS to every tenant next hop",
      source: "per_sender_relayhosts",
      rows: maps.tenants.map((t) => [t.nexthop, "secure"]),
    },
    tenant_transports: {
      purpose:
        "sender_dependent_default_transport_maps: each tenant's own smtp transport (client certificate, IPv4)",
      source: "per_sender_relayhosts",
      rows: maps.relayhosts.map((r) => [r.key, tenantTransport(r.tenantId)]),
    },
  };
  const files: Record<string, string> = {
    "main.cf": template("main.cf.hbs")(vars),
    "master.cf": template("master.cf.hbs")(vars),
  };
  for (const [name, t] of Object.entries(tables)) files[name] = table(name, t);
  files["tenant_pins.json"] = pinPolicy(maps.pins);
  files["calendar_addresses.json"] = calendarPolicy(maps.translations, maps.calendar);
  if (!maps.allowedSenders.some((s) => s.key === "<>")) {
    const senders = tables.allowed_senders;
    const width = Math.min(40, Math.max(2, ...senders.rows.map(([key]) => key.length)));
    files.allowed_senders +=
      `# generated: the null sender is refused (docs/relay.md, "Null sender")\n` +
      `${"<>".padEnd(width)} ${NULL_SENDER_REJECT}\n`;
    senders.rows = [...senders.rows, ["<>", NULL_SENDER_REJECT]];
  }
  return {
    node,
    files,
    indexedMaps: INDEXED.map((name) => ({ name, rows: tables[name].rows })),
    tenantNexthops: Object.fromEntries(maps.tenants.map((t) => [t.id, t.nexthop])),
    clientCertificates,
    tls: { keyFile: tls.keyFile, chainFile: tls.chainFile },
    tenantCertTool,
    nodeFiles: readNodeFiles(),
  };
}

/** The directories under node/ that a node receives (node/tests stays here). */
const NODE_DIRS = ["", "steps", "lib", "sbin", "hooks", "systemd"];
let nodeFiles: Record<string, string> | undefined;

/** Every file a node receives, from node/ (read once per process), by path relative to node/. */
export function readNodeFiles(): Record<string, string> {
  nodeFiles ??= Object.fromEntries(
    NODE_DIRS.flatMap((dir) =>
      fs
        .readdirSync(path.join(PROJECT_ROOT, NODE_DIR, dir), { withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.posix.join(dir, e.name))
        .sort()
        .map((rel) => [rel, fs.readFileSync(path.join(PROJECT_ROOT, NODE_DIR, rel), "utf8")]),
    ),
  );
  return nodeFiles;
}

/** What the pinning milter reads: maps/tenant_pins as JSON, each pin with the line it came from. */
function pinPolicy(pins: TenantPin[]): string {
  const policy = {
    verdictHeader: PIN_VERDICT_HEADER,
    pins: Object.fromEntries(
      pins.map((p) => [
        p.key,
        {
          mode: p.mode,
          dkim: p.dkim,
          originatorOrg: p.originatorOrg ?? null,
          tenantId: p.tenantId ?? null,
          secretHeader: p.secretHeader ?? null,
          maxAgeHours: p.maxAgeHours,
          keepSignatures: p.keepSignatures,
          source: `${p.file}:${p.line}`,
        },
      ]),
    ),
  };
  return JSON.stringify(policy, null, 2) + "\n";
}

/** master.cf service name of a tenant's smtp transport (also its syslog name: postfix/<transport>). */
export function tenantTransport(tenantId: string): string {
  return `tenant_${tenantId}`;
}

export function renderNetwork(ctx: RenderContext, addrs: NodeAddresses): string {
  return template("network.hbs")({ node: ctx.node, ...addrs });
}

/** The first-boot script that checks the image and switches the interface to renderNetwork's file. */
export function renderNetworkSwitch(ctx: RenderContext, addrs: NodeAddresses): string {
  return template("network-switch.sh.hbs")({
    node: ctx.node,
    image: knownImage(ctx.cfg.image),
    known: KNOWN_IMAGES.map((i) => i.name).join(", "),
    networkFile: NETWORK_FILE,
    ...addrs,
  });
}

function nodePackages(cfg: StackConfig): string[] {
  const pkgs = [
    "postfix",
    "postfix-cdb",
    "ca-certificates",
    "certbot",
    "unattended-upgrades",
    // Time: the pinning milter's Date window and the status read chrony's tracking report. Debian's
    // cloud images ship chrony or systemd-timesyncd depending on the build; chrony replaces the other.
    "chrony",
    // Only root reaches the metadata service (renderMetadataGuard).
    "nftables",
    "swaks",
    // The tenant-pinning milter: milter protocol, DKIM, DNS, and iCalendar for meeting addresses.
    "python3-milter",
    "python3-dkim",
    "python3-dnspython",
    "python3-icalendar",
    // Metrics (the metrics step configures them; the security group opens them to monitoringCidrs).
    "prometheus-node-exporter",
    "prometheus-postfix-exporter",
  ];
  // Wherever the release has it: user-data is read once, so switching to dns-01 or adding a tenant
  // certificate later must not need a package the server never got.
  pkgs.push(tenantCertsViaLego(cfg.image) ? "lego" : "python3-certbot-dns-ovh");
  return pkgs;
}

/** A node's SSH host key pair in OpenSSH formats (created by the program: @pulumi/tls). */
export interface HostKey {
  privateKey: string;
  publicKey: string;
}

/**
 * sshd's drop-in (read before sshd_config's own lines, and the first value wins): public keys of
 * the one login user only, no root, no passwords, nothing forwarded, only the pinned host key.
 */
export function renderSshdConfig(cfg: StackConfig): string {
  return `# header-rewrite: SSH for the deployer and the admins' keys only (docs/security.md, "Security model").
HostKey /etc/ssh/ssh_host_ed25519_key
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers ${cfg.sshUser}
AuthorizedKeysFile .ssh/authorized_keys
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PermitTunnel no
MaxAuthTries 3
LoginGraceTime 30
`;
}

/**
 * Security updates install daily; one that needs a reboot reboots at this node's own hour, so the
 * nodes of a region never restart together. Postfix's queue is on disk and survives the reboot; a
 * connection cut by it was not accepted, so Exchange Online retries it (tested in the sandbox).
 */
export function renderRebootPolicy(cfg: StackConfig, node: NodeIdentity): string {
  const hour = (2 + Math.max(0, cfg.nodes.indexOf(node.name))) % 24;
  return `// header-rewrite: reboot for updates that need it, at ${node.name}'s own hour (docs/security.md, "Security model").
Unattended-Upgrade::Automatic-Reboot "true";
Unattended-Upgrade::Automatic-Reboot-WithUsers "true";
Unattended-Upgrade::Automatic-Reboot-Time "${String(hour).padStart(2, "0")}:00";
`;
}

/** OpenStack's metadata service (OVH Public Cloud serves user-data there). */
export const METADATA_SERVICE = "169.254.169.254";
export const METADATA_GUARD = {
  name: "header-rewrite-metadata-guard",
  file: "/etc/header-rewrite/metadata-guard.nft",
  unitFile: "/etc/systemd/system/header-rewrite-metadata-guard.service",
};

/**
 * nftables rules letting only root reach ADDRESS (the metadata service: it serves user-data, and so
 * the host key, to whoever asks). A table of its own, replaced whole, beside any other ruleset.
 */
export function renderMetadataGuard(address = METADATA_SERVICE): typeof METADATA_GUARD & {
  rules: string;
  unit: string;
} {
  const rules = `#!/usr/sbin/nft -f
# header-rewrite: only root may ask ${address} (docs/security.md, "Security model").
table inet header_rewrite_guard
delete table inet header_rewrite_guard
table inet header_rewrite_guard {
  chain output {
    type filter hook output priority 0; policy accept;
    ip daddr ${address} meta skuid != 0 counter reject
  }
}
`;
  const unit = `[Unit]
Description=header-rewrite: only root reaches the metadata service
Before=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f ${METADATA_GUARD.file}

[Install]
WantedBy=multi-user.target
`;
  return { ...METADATA_GUARD, rules, unit };
}

/**
 * First-boot user-data. An OpenStack server gets its network (from its port's addresses) and the
 * host key the program made; a server that exists already (header-rewrite:servers) neither.
 */
export function renderUserData(ctx: RenderContext, addrs?: NodeAddresses, hostKey?: HostKey): string {
  return template("user-data.hbs")({
    hostKey: hostKey && { privateKey: hostKey.privateKey.trim(), publicKey: hostKey.publicKey.trim() },
    sshdConfig: renderSshdConfig(ctx.cfg),
    rebootPolicy: renderRebootPolicy(ctx.cfg, ctx.node),
    metadataGuard: renderMetadataGuard(),
    stack: ctx.stack,
    region: ctx.cfg.region || "servers that exist already",
    node: ctx.node,
    packages: nodePackages(ctx.cfg),
    sshKeys: [ctx.cfg.deploySshPublicKey, ...ctx.cfg.adminSshKeys],
    network: addrs && renderNetwork(ctx, addrs),
    networkFile: NETWORK_FILE,
    networkSwitch: NETWORK_SWITCH,
    networkSwitchScript: addrs && renderNetworkSwitch(ctx, addrs),
  });
}
