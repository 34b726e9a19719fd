// The stack configuration contract: one schema, read either from Pulumi (pulumi up/preview) or
// straight from Pulumi.<stack>.yaml (npm run render), so both give the same answer.
import * as fs from "node:fs";
import * as path from "node:path";
import Ajv, { type ErrorObject } from "ajv";
import type { FromSchema } from "json-schema-to-ts";
import * as YAML from "yaml";
import * as ipaddr from "ipaddr.js";
import { KNOWN_IMAGES } from "./images";
import { PROJECT_ROOT } from "../project";

export const PROJECT = "header-rewrite";

/** The stack deploys to servers that exist already (header-rewrite:servers), not to OpenStack ones. */
export function existingServers(cfg: StackConfig): boolean {
  return Object.keys(cfg.servers).length > 0;
}

/** Secret keys a stack may leave unset. */
export const OPTIONAL_SECRET_KEYS = [
  `${PROJECT}:clientCertificates`,
  `${PROJECT}:acmeDnsOvhCredentials`,
  `${PROJECT}:pinSecret`,
] as const;

/** Secret keys the program reads; never rendered into files. */
export const SECRET_KEYS = [`${PROJECT}:deploySshPrivateKey`, ...OPTIONAL_SECRET_KEYS] as const;

/** Provider keys users set; the program does not read them but documents and tests them. */
export const PROVIDER_KEYS = {
  required: [
    "openstack:authUrl",
    "openstack:region",
    "openstack:tenantId",
    "openstack:userName",
    "openstack:password",
    "openstack:userDomainName",
    "openstack:projectDomainName",
    "ovh:endpoint",
    "ovh:applicationKey",
    "ovh:applicationSecret",
    "ovh:consumerKey",
  ],
  secret: ["openstack:password", "ovh:applicationSecret", "ovh:consumerKey"],
} as const;

const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";
// Exchange Online accepts at most 150 MB per message.
const EXO_MAX_MESSAGE = 150 * 1024 * 1024;

const label = "^(?!-)[a-z0-9-]{1,63}(?<!-)$";
const fqdn = "^(?=.{1,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\\.)+[a-z]{2,63}$";

/**
 * JSON schema of the `header-rewrite:` namespace, the one place the configuration's shape is
 * written: validation (Ajv), defaults (`default`), the StackConfig type (json-schema-to-ts) and the
 * keys docs/configuration.md must document all come from it.
 */
const SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["nodes", "dnsZone", "adminCidrs", "deploySshPublicKey", "acmeEmail"],
  properties: {
    nodes: {
      type: "array",
      minItems: 1,
      uniqueItems: true,
      items: { type: "string", pattern: label },
      description: "Node names of this stack, e.g. [lon1]; each becomes <name>.<dnsZone>",
    },
    dnsZone: { type: "string", pattern: fqdn, description: "OVH DNS zone holding node and service names" },
    serviceName: {
      default: "relay",
      type: "string",
      pattern: label,
      description: "Shared name (label in the zone) that carries every node",
    },
    flavor: { default: "d2-2", type: "string", minLength: 1, description: "OVH Public Cloud flavor" },
    image: {
      default: "Debian 12",
      enum: KNOWN_IMAGES.map((i) => i.name),
      description: `OVH image the servers boot (${KNOWN_IMAGES.map((i) => i.name).join(", ")})`,
    },
    // OVH's /ip API files a Public Cloud address as a block of its own: IPv4 /32, IPv6 /128 ("on
    // dedicated instances or cloud instances, [block and IP] are equal", synthesio/infra-ovh-ansible-module
    // PR #24; ansible-ovh-dns's ovh_reverse uses /128 for IPv6). Settable in case a region files it wider.
    reverseBlockV6: {
      default: 128,
      type: "integer",
      minimum: 32,
      maximum: 128,
      description: "Prefix of the IPv6 block OVH's /ip API files a node's address under (its PTR)",
    },
    dnsResolvers: {
      default: [],
      type: "array",
      items: { type: "string" },
      description: "DNS resolvers of the nodes; empty: those Ext-Net's subnets list",
    },
    sshUser: {
      default: "debian",
      type: "string",
      pattern: "^[a-z_][a-z0-9_-]*$",
      description: "Login user of the image (sudo)",
    },
    adminCidrs: {
      type: "array",
      minItems: 1,
      items: { type: "string" },
      description: "Sources allowed to reach SSH (TCP 22); the deploying machine must be in one",
    },
    adminSshKeys: {
      default: [],
      type: "array",
      items: { type: "string", pattern: "^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+( .*)?$" },
      description: "Extra admin public keys installed by cloud-init",
    },
    deploySshPublicKey: {
      type: "string",
      pattern: "^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+( .*)?$",
      description: "Public half of the deploy key (OpenStack keypair)",
    },
    acmeChallenge: {
      default: "http-01",
      enum: ["http-01", "dns-01"],
      description: "ACME challenge; http-01 opens TCP 80",
    },
    acmeEmail: { type: "string", pattern: "^[^@\\s]+@[^@\\s]+$", description: "ACME account e-mail" },
    tenantCertificates: {
      default: {},
      type: "object",
      propertyNames: { pattern: "^[a-z0-9_]+$" },
      additionalProperties: { type: "string", pattern: fqdn },
      description:
        "Per tenant id, a name under that tenant's domain; each node obtains a client certificate for it " +
        "(ACME dns-01 through OVH)",
    },
    // certbot-dns-ovh waits this long after writing the TXT record, for OVH's name servers.
    acmeDnsPropagationSeconds: {
      default: 60,
      type: "integer",
      minimum: 1,
      maximum: 3600,
      description: "Seconds certbot waits after writing a dns-01 TXT record through OVH's API",
    },
    acmeServer: {
      default: LETS_ENCRYPT,
      type: "string",
      pattern: "^https://",
      description: "ACME directory URL",
    },
    messageSizeLimit: {
      default: EXO_MAX_MESSAGE,
      type: "integer",
      minimum: 1048576,
      maximum: EXO_MAX_MESSAGE,
      description: "Postfix message_size_limit in bytes (Exchange Online maximum)",
    },
    debugPeers: {
      default: [],
      type: "array",
      items: { type: "string" },
      description: "debug_peer_list entries; empty means no verbose peer logging",
    },
    loopGuardHeader: {
      default: "X-Header-Rewrite-Relayed",
      type: "string",
      pattern: "^X-[A-Za-z0-9-]+$",
      description: "Header stamped on relayed mail for tenant A's transport-rule exception",
    },
    dnsTtl: {
      default: 300,
      type: "integer",
      minimum: 60,
      maximum: 86400,
      description: "TTL of the A/AAAA records",
    },
    protectServers: {
      default: true,
      type: "boolean",
      description: "Protect servers from deletion/replacement",
    },
    allowExampleValues: {
      type: "boolean",
      description: "Test harness only: accept the repository's example values (src/config/examples.ts)",
    },
    rebuildNodes: {
      default: [],
      type: "array",
      uniqueItems: true,
      items: { type: "string", pattern: label },
      description:
        "Nodes whose server is rebuilt from the current image and user-data on this run (protectServers false)",
    },
    // Exchange Online's IP-based inbound connectors match IPv4 only.
    forceIPv4ToTenants: {
      default: true,
      type: "boolean",
      description: "Deliver to tenant next hops over IPv4 only (IP-based connectors are IPv4-only)",
    },
    // maps/allow_relay_by_ip refuses anything wider (Exchange Online's widest published range is a /14).
    widestClientRangeV4: {
      default: 8,
      type: "integer",
      minimum: 1,
      maximum: 32,
      description: "Widest IPv4 prefix accepted in maps/allow_relay_by_ip",
    },
    widestClientRangeV6: {
      default: 32,
      type: "integer",
      minimum: 1,
      maximum: 128,
      description: "Widest IPv6 prefix accepted in maps/allow_relay_by_ip",
    },
    // anvil limits per client address, for tenant A too: a burst beyond them gets 421 and is retried.
    clientConnectionCountLimit: {
      default: 50,
      type: "integer",
      minimum: 1,
      description: "Simultaneous connections per client address (anvil)",
    },
    clientConnectionRateLimit: {
      default: 300,
      type: "integer",
      minimum: 1,
      description: "Connections per client address per minute (anvil)",
    },
    clientMessageRateLimit: {
      default: 1200,
      type: "integer",
      minimum: 1,
      description: "Messages per client address per minute (anvil)",
    },
    tenantRecipientLimits: {
      default: {},
      type: "object",
      propertyNames: { pattern: "^[a-z0-9_]+$" },
      additionalProperties: {
        anyOf: [
          { type: "integer", minimum: 1 },
          {
            type: "object",
            additionalProperties: false,
            required: ["licensedUsers"],
            properties: { licensedUsers: { type: "integer", minimum: 1 } },
          },
        ],
      },
      description:
        "Per tenant id, tenant B's external recipients per 24 h (TERRL): a number, or {licensedUsers: N} for " +
        "500 × N^0.7 + 9,500 (MC1023294); npm run status warns from 80 %",
    },
    monitoringCidrs: {
      default: [],
      type: "array",
      items: { type: "string" },
      description: "Sources allowed to scrape the Prometheus exporters (TCP 9100, 9154); empty: none",
    },
    drainSeconds: {
      default: 900,
      type: "integer",
      minimum: 10,
      maximum: 86400,
      description: "Seconds a node removed from nodes may take to deliver its queue before the removal stops",
    },
    servers: {
      default: {},
      type: "object",
      propertyNames: { pattern: label },
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        required: ["ipv4", "ipv6", "hostKey"],
        properties: {
          ipv4: { type: "string" },
          ipv6: { type: "string" },
          hostKey: {
            type: "string",
            pattern: "^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+=*( \\S.*)?$",
          },
          reverseAtOvh: { type: "boolean" },
        },
      },
      description:
        "Servers that exist already, per node: {ipv4, ipv6, hostKey, reverseAtOvh}; the stack deploys to them " +
        'instead of creating OpenStack servers (docs/configuration.md, "Servers that exist already")',
    },
    dnsAtOvh: {
      default: true,
      type: "boolean",
      description: "Make the nodes' A/AAAA records in the OVH zone dnsZone; false: you make them",
    },
    rolloutAfter: {
      default: "",
      type: "string",
      pattern: "^([A-Za-z0-9_.-]+/){0,2}[A-Za-z0-9_.-]+$",
      description:
        'Stack that must have run a release before this stack takes it (docs/operations.md, "Rolling out"); unset: first region',
    },
  },
} as const;

/**
 * A stack's configuration: the schema's shape, every defaulted key present, and the OpenStack
 * region (read from `openstack:region`; empty for servers that exist already).
 */
export type StackConfig = FromSchema<typeof SCHEMA> & { region: string };
/**
 * A server someone else created (header-rewrite:servers): its addresses, the SSH host key the
 * deploy pins (public half, as ssh-keyscan or /etc/ssh/*.pub show it), and whether its addresses
 * are OVH's (then the PTRs are set through OVH's API).
 */
export type ExistingServer = StackConfig["servers"][string];

/** Each key's default, from the schema. */
export const CONFIG_DEFAULTS: Record<string, unknown> = Object.fromEntries(
  Object.entries(SCHEMA.properties).flatMap(([k, p]) => ("default" in p ? [[k, p.default]] : [])),
);

const ajv = new Ajv({ allErrors: true });
const validate = ajv.compile(SCHEMA);

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
    what = "invalid stack configuration; nothing was deployed",
  ) {
    super(`${source}: ${what}:\n` + problems.map((p) => `  - ${p}`).join("\n"));
    this.name = "ConfigError";
  }
}

function describe(e: ErrorObject): string {
  const key =
    e.instancePath.replace(/^\//, "").split("/")[0] ||
    (e.params as { missingProperty?: string; additionalProperty?: string }).missingProperty ||
    (e.params as { additionalProperty?: string }).additionalProperty ||
    "";
  const full = `${PROJECT}:${key}`;
  const d = (SCHEMA.properties as Record<string, { description?: string }>)[key]?.description ?? "";
  const item = e.instancePath.split("/")[2];
  const where = `${full}${item !== undefined ? ` item ${item}` : ""}`;
  // A key of the namespace itself (nested objects have their own required and additional keys).
  const root = e.instancePath === "";
  switch (e.keyword) {
    case "required":
      if (!root) break;
      return `${full} is required (hint: pulumi config set ${full} ... ; see docs/configuration.md "Configuration")`;
    case "additionalProperties":
      if (!root) break;
      return `${full} is not a known key (hint: check the spelling against docs/configuration.md "Configuration")`;
    case "anyOf":
      return `${where} has none of the accepted forms (hint: ${d})`;
  }
  return `${where} ${e.message} (hint: ${d})`;
}

/** Ajv's errors, one per problem: a value that fits none of anyOf's forms is one problem, not one per form. */
function schemaProblems(errors: ErrorObject[]): string[] {
  const either = errors.filter((e) => e.keyword === "anyOf").map((e) => e.instancePath);
  return errors
    .filter((e) => e.keyword === "anyOf" || !either.some((p) => e.instancePath.startsWith(p)))
    .map(describe);
}

/** Pulumi hands every value over as a string; objects, lists, numbers and booleans are JSON. */
function decode(v: unknown): unknown {
  if (typeof v !== "string") return v;
  const t = v.trim();
  if (/^[[{]/.test(t) || /^(true|false|-?\d+)$/.test(t)) {
    try {
      return JSON.parse(t);
    } catch {
      return v;
    }
  }
  return v;
}

/** Validates raw values (keys without namespace) and fills defaults. */
export function parseStackConfig(
  raw: Record<string, unknown>,
  region: string | undefined,
  source: string,
  tenantName?: string,
): StackConfig {
  const values: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) values[k] = decode(v);
  const problems: string[] = [];
  if (!validate(values)) problems.push(...schemaProblems(validate.errors ?? []));
  const servers = (values.servers && typeof values.servers === "object" ? values.servers : {}) as Record<
    string,
    Partial<ExistingServer>
  >;
  const existing = Object.keys(servers).length > 0;
  if (!region && !existing)
    problems.push(
      "openstack:region is required (hint: UK1 for London, BHS5 for Beauharnois; or list servers that exist " +
        `already in ${PROJECT}:servers)`,
    );
  problems.push(...serverProblems(servers, values));
  // The provider reads tenantName as the project NAME; OVH's names are 16 digits, its IDs 32 hex.
  if (tenantName && /^[0-9a-f]{32}$/i.test(tenantName))
    problems.push(
      "openstack:tenantName holds a project ID (32 hex digits), but the provider reads it as the project name " +
        "(hint: pulumi config rm openstack:tenantName && pulumi config set openstack:tenantId <that ID>)",
    );
  for (const [key, what] of [
    ["adminCidrs", "SSH"],
    ["monitoringCidrs", "the metrics exporters"],
  ] as const) {
    for (const [i, c] of ((Array.isArray(values[key]) ? values[key] : []) as unknown[]).entries()) {
      if (typeof c !== "string" || !ipaddr.isValidCIDR(c)) {
        problems.push(
          `${PROJECT}:${key} item ${i} "${String(c)}" is not a CIDR (hint: e.g. 198.51.100.7/32)`,
        );
      } else if (ipaddr.parseCIDR(c)[1] === 0) {
        problems.push(
          `${PROJECT}:${key} item ${i} "${c}" opens ${what} to the whole Internet (hint: list your own networks)`,
        );
      }
    }
  }
  for (const [i, r] of (
    (Array.isArray(values.dnsResolvers) ? values.dnsResolvers : []) as unknown[]
  ).entries()) {
    if (typeof r !== "string" || !ipaddr.isValid(r))
      problems.push(
        `${PROJECT}:dnsResolvers item ${i} "${String(r)}" is not an IP address (hint: e.g. 213.186.33.99)`,
      );
  }
  const rebuild = (Array.isArray(values.rebuildNodes) ? values.rebuildNodes : []) as unknown[];
  const nodes = (Array.isArray(values.nodes) ? values.nodes : []) as unknown[];
  for (const n of rebuild.filter((r) => !nodes.includes(r)))
    problems.push(`${PROJECT}:rebuildNodes names "${String(n)}", which is not in ${PROJECT}:nodes`);
  if (rebuild.length && values.protectServers !== false)
    problems.push(
      `${PROJECT}:rebuildNodes replaces servers, which protectServers forbids ` +
        `(hint: pulumi config set ${PROJECT}:protectServers false for this run; docs/operations.md "Replacing a node's server")`,
    );
  const image = KNOWN_IMAGES.find((i) => i.name === values.image);
  if (image && !image.certbotOvhPlugin && values.acmeChallenge === "dns-01")
    problems.push(
      `${PROJECT}:acmeChallenge dns-01 needs certbot's OVH plugin, which ${image.name} does not package ` +
        "(python3-certbot-dns-ovh is in Debian 12 only) (hint: image Debian 12, or http-01)",
    );
  const stackName = source.replace(/^Pulumi\.(.+)\.yaml$/, "$1");
  if (typeof values.rolloutAfter === "string" && values.rolloutAfter.split("/").pop() === stackName)
    problems.push(
      `${PROJECT}:rolloutAfter names this stack itself (hint: the stack that rolls out first, e.g. lon)`,
    );
  if (problems.length) throw new ConfigError(source, problems);
  // structuredClone: a default ([] or {}) is never shared between two configurations.
  return { ...structuredClone(CONFIG_DEFAULTS), ...values, region: region ?? "" } as StackConfig;
}

/** What is wrong with header-rewrite:servers beyond its shape: names, addresses, conflicting keys. */
function serverProblems(
  servers: Record<string, Partial<ExistingServer>>,
  values: Record<string, unknown>,
): string[] {
  const names = Object.keys(servers);
  if (!names.length) return [];
  const problems: string[] = [];
  const nodes = (Array.isArray(values.nodes) ? values.nodes : []) as unknown[];
  const key = `${PROJECT}:servers`;
  for (const n of nodes.filter((x) => typeof x === "string" && !names.includes(x)))
    problems.push(
      `${key} has no entry for node ${String(n)} (hint: pulumi config set --path '${key}.${String(n)}.ipv4' <address>, ` +
        "and .ipv6 and .hostKey; every node of a stack is an existing server, or none)",
    );
  for (const n of names.filter((x) => !nodes.includes(x)))
    problems.push(`${key}.${n} is not in ${PROJECT}:nodes (hint: add it to nodes, or remove the entry)`);
  for (const [n, s] of Object.entries(servers)) {
    if (typeof s.ipv4 === "string" && !ipaddr.IPv4.isValidFourPartDecimal(s.ipv4))
      problems.push(`${key}.${n}.ipv4 "${s.ipv4}" is not an IPv4 address (hint: e.g. 203.0.113.10)`);
    if (typeof s.ipv6 === "string" && !ipaddr.IPv6.isValid(s.ipv6))
      problems.push(`${key}.${n}.ipv6 "${s.ipv6}" is not an IPv6 address (hint: e.g. 2001:db8::10)`);
  }
  if (Array.isArray(values.rebuildNodes) && values.rebuildNodes.length)
    problems.push(
      `${PROJECT}:rebuildNodes rebuilds OpenStack servers, and this stack lists servers that exist already in ` +
        `${key} (hint: remove rebuildNodes; rebuild such a server yourself, and set its new hostKey)`,
    );
  return problems;
}

/** Whether the stack's certificates need the OVH API key (acmeDnsOvhCredentials): dns-01 or tenantCertificates. */
export function needsDnsCredentials(cfg: StackConfig): boolean {
  return cfg.acmeChallenge === "dns-01" || Object.keys(cfg.tenantCertificates).length > 0;
}

/** What a stack that needs it is told when the OVH API key is missing. */
export const DNS_CREDENTIALS_REQUIRED =
  `${PROJECT}:acmeDnsOvhCredentials is required for acmeChallenge dns-01 and for tenantCertificates ` +
  '(hint: see docs/microsoft-365.md, "Certificates")';

/** A relay node as every stage names it. */
export interface NodeIdentity {
  name: string;
  fqdn: string;
}

export function nodeIdentity(cfg: StackConfig, name: string): NodeIdentity {
  return { name, fqdn: nodeFqdn(cfg, name) };
}

export function nodeFqdn(cfg: StackConfig, node: string): string {
  return `${node}.${cfg.dnsZone}`;
}

export function serviceFqdn(cfg: StackConfig): string {
  return `${cfg.serviceName}.${cfg.dnsZone}`;
}

/** The keys of the project namespace, for reading them one by one from pulumi.Config. */
export const CONFIG_KEYS = Object.keys(SCHEMA.properties);
/** The keys a stack must set (in its file or with pulumi config set). */
export const SCHEMA_REQUIRED = SCHEMA.required;

/** Reads Pulumi.<stack>.yaml without the Pulumi CLI (for `npm run render`); secrets are not needed there. */
export function readStackFile(
  root: string,
  stack: string,
): {
  raw: Record<string, unknown>;
  region?: string;
  tenantName?: string;
  file: string;
  all: Record<string, unknown>;
} {
  const file = path.join(root, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(file))
    throw new ConfigError(`Pulumi.${stack}.yaml`, [
      `no such stack file (hint: stacks are ${listStacks(root).join(", ")})`,
    ]);
  const doc = YAML.parse(fs.readFileSync(file, "utf8")) as { config?: Record<string, unknown> } | null;
  const config = doc?.config ?? {};
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (k.startsWith(`${PROJECT}:`) && !(SECRET_KEYS as readonly string[]).includes(k))
      raw[k.slice(PROJECT.length + 1)] = v;
  }
  const region =
    typeof config["openstack:region"] === "string" ? (config["openstack:region"] as string) : undefined;
  const tenantName =
    typeof config["openstack:tenantName"] === "string"
      ? (config["openstack:tenantName"] as string)
      : undefined;
  return { raw, region, tenantName, file: path.basename(file), all: config };
}

/** One stack's validated configuration, read from Pulumi.<stack>.yaml. */
export function loadStackConfig(stack: string, root = PROJECT_ROOT): StackConfig {
  const { raw, region, tenantName, file } = readStackFile(root, stack);
  return parseStackConfig(raw, region, file, tenantName);
}

export function listStacks(root = PROJECT_ROOT): string[] {
  return fs
    .readdirSync(root)
    .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
    .filter((s): s is string => !!s)
    .sort();
}

/** Reads and validates this stack's configuration through Pulumi (pulumi up / preview / mocks). */
export function configFromPulumi(
  pulumiConfig: (ns?: string) => { get(key: string): string | undefined },
  stack: string,
  allKeys: string[] = [],
): StackConfig {
  const project = pulumiConfig();
  const raw: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) raw[key] = project.get(key);
  // Keys of the namespace the program does not know (a misspelled optional key would otherwise
  // pass silently): the schema refuses them with the same message as npm run validate and render.
  for (const full of allKeys) {
    const key = full.slice(PROJECT.length + 1);
    if (
      full.startsWith(`${PROJECT}:`) &&
      !CONFIG_KEYS.includes(key) &&
      !(SECRET_KEYS as readonly string[]).includes(full)
    )
      raw[key] = project.get(key);
  }
  const openstack = pulumiConfig("openstack");
  return parseStackConfig(raw, openstack.get("region"), `Pulumi.${stack}.yaml`, openstack.get("tenantName"));
}
