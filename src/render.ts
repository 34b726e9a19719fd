// Pure, deterministic rendering of everything a node receives, from the validated model and the
// stack configuration. Same input, same bytes: no timestamps, no map ordering surprises.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import Handlebars from "handlebars";
import type { StackConfig } from "./config";
import { nodeFqdn } from "./config";
import type { RelayMaps } from "./maps";
import { MAP_FILES } from "./maps";
import { clientCertPath } from "./certificates";

const TEMPLATES = path.join(__dirname, "..", "templates");

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

export interface NodeIdentity {
  name: string;
  fqdn: string;
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
export interface FamilyAddress {
  address: string;
  gateway: string;
}

export interface NodeAddresses {
  ipv4: FamilyAddress;
  ipv6: FamilyAddress;
}

/** Where certbot keeps the node certificate; Postfix reads the key first, then the full chain. */
export function tlsPaths(fqdn: string): { keyFile: string; chainFile: string } {
  const live = `/etc/letsencrypt/live/${fqdn}`;
  return { keyFile: `${live}/privkey.pem`, chainFile: `${live}/fullchain.pem` };
}

export function nodeIdentity(cfg: StackConfig, name: string): NodeIdentity {
  return { name, fqdn: nodeFqdn(cfg, name) };
}

/** The null sender has no tenant to route to; refused unless maps/allowed_senders allows it. */
export const NULL_SENDER_REJECT =
  "550 5.7.1 Null sender (bounce or auto-reply) is not relayed: no tenant can be chosen for it";

interface Row {
  key: string;
  value: string;
}

function table(name: string, purpose: string, source: string, rows: Row[]): string {
  const width = Math.min(40, Math.max(0, ...rows.map((r) => r.key.length)));
  return template("postfix-table.hbs")({ name, purpose, source, rows, width });
}

/** The operator's four maps as Postfix tables, rendered from the model (the round trip of maps/). */
export function renderOperatorMaps(
  maps: RelayMaps,
): Record<"translate_domains" | "allowed_senders" | "per_sender_relayhosts" | "allow_relay_by_ip", string> {
  const src = (k: keyof typeof MAP_FILES) => `maps/${MAP_FILES[k]}`;
  return {
    translate_domains: table(
      "translate_domains",
      "sender_canonical_maps, old sender -> new sender",
      src("translations"),
      maps.translations.map((t) => ({ key: t.from, value: t.to })),
    ),
    allowed_senders: table(
      "allowed_senders",
      "check_sender_access, keyed by the sender BEFORE rewriting",
      src("allowedSenders"),
      maps.allowedSenders.map((s) => ({ key: s.key, value: s.action })),
    ),
    per_sender_relayhosts: table(
      "per_sender_relayhosts",
      "sender_dependent_relayhost_maps, keyed by the sender AFTER rewriting",
      src("relayhosts"),
      maps.relayhosts.map((r) => ({ key: r.key, value: r.nexthop })),
    ),
    allow_relay_by_ip: table(
      "allow_relay_by_ip",
      "cidr table in mynetworks: clients allowed to relay",
      src("clientRanges"),
      maps.clientRanges.map((c) => ({ key: c.cidr, value: c.action })),
    ),
  };
}

/** Postfix files every node gets: main.cf, master.cf and the maps (sources of the .cdb files). */
export function renderPostfix(ctx: RenderContext): Record<string, string> {
  const { cfg, maps } = ctx;
  const src = (k: keyof typeof MAP_FILES) => `maps/${MAP_FILES[k]}`;
  const operator = renderOperatorMaps(maps);
  const nullSender = maps.allowedSenders.some((s) => s.key === "<>")
    ? ""
    : `# generated: the null sender is refused (README, "Null sender")\n${"<>".padEnd(Math.min(40, Math.max(2, ...maps.allowedSenders.map((s) => s.key.length))))} ${NULL_SENDER_REJECT}\n`;
  const withCert = new Set(ctx.clientCertTenants ?? []);
  const tenants = maps.tenants.map((t) => ({
    transport: tenantTransport(t.id),
    nexthop: t.nexthop,
    clientCert: withCert.has(t.id) ? clientCertPath(t.id) : "",
  }));
  const vars = {
    stack: ctx.stack,
    tenants,
    forceIPv4: cfg.forceIPv4ToTenants,
    region: cfg.region,
    node: ctx.node,
    tls: tlsPaths(ctx.node.fqdn),
    // Stamped once per message (DATA stage) so tenant A's transport rule can skip relayed mail.
    loopGuardTable: `static:{PREPEND ${cfg.loopGuardHeader}: ${ctx.node.fqdn}}`,
    messageSizeLimit: cfg.messageSizeLimit,
    limits: {
      connections: cfg.clientConnectionCountLimit,
      connectionRate: cfg.clientConnectionRateLimit,
      messageRate: cfg.clientMessageRateLimit,
    },
    // Local delivery (postmaster mail) must never be the smaller limit, or Postfix stops with a fatal error.
    mailboxSizeLimit: Math.max(51200000, 2 * cfg.messageSizeLimit),
    debugPeers: cfg.debugPeers.join(", "),
  };
  return {
    "main.cf": template("main.cf.hbs")(vars),
    "master.cf": template("master.cf.hbs")(vars),
    ...operator,
    allowed_senders: operator.allowed_senders + nullSender,
    tls_policy: table(
      "tls_policy",
      "smtp_tls_policy_maps: verified TLS to every tenant next hop",
      src("relayhosts"),
      maps.tenants.map((t) => ({ key: t.nexthop, value: "secure" })),
    ),
    tenant_transports: table(
      "tenant_transports",
      "sender_dependent_default_transport_maps: each tenant's own smtp transport (client certificate, IPv4)",
      src("relayhosts"),
      maps.relayhosts.map((r) => ({ key: r.key, value: tenantTransport(r.tenantId) })),
    ),
  };
}

/** Maps that Postfix reads as indexed (cdb) files built with postmap; the rest are read as text. */
export const INDEXED_MAPS = [
  "translate_domains",
  "allowed_senders",
  "per_sender_relayhosts",
  "tls_policy",
  "tenant_transports",
] as const;

/** master.cf service name of a tenant's smtp transport. */
export function tenantTransport(tenantId: string): string {
  return `tenant_${tenantId}`;
}

export function renderInterfaces(ctx: RenderContext, addrs: NodeAddresses): string {
  return template("interfaces.hbs")({ node: ctx.node, iface: ctx.cfg.interfaceName, ...addrs });
}

export function nodePackages(cfg: StackConfig): string[] {
  const pkgs = [
    "postfix",
    "postfix-cdb",
    "ca-certificates",
    "certbot",
    "unattended-upgrades",
    "swaks",
    "ifupdown",
  ];
  if (cfg.acmeChallenge === "dns-01") pkgs.push("python3-certbot-dns-ovh");
  return pkgs;
}

export function renderUserData(ctx: RenderContext, addrs: NodeAddresses): string {
  return template("user-data.hbs")({
    stack: ctx.stack,
    region: ctx.cfg.region,
    node: ctx.node,
    iface: ctx.cfg.interfaceName,
    packages: nodePackages(ctx.cfg),
    sshKeys: [ctx.cfg.deploySshPublicKey, ...ctx.cfg.adminSshKeys],
    interfaces: renderInterfaces(ctx, addrs),
  });
}

/** Content hash of a set of files, independent of object key order. */
export function bundleHash(files: Record<string, string>): string {
  const h = crypto.createHash("sha256");
  for (const name of Object.keys(files).sort()) h.update(`${name}\0${files[name]}\0`);
  return h.digest("hex");
}
