// The Microsoft 365 half, generated from the same source as the relays: tenant A's outbound
// connector and transport rules, each target tenant's inbound connector and checks, and read-only
// drift checks for both. Pure: maps + stacks (+ stack outputs) in, PowerShell text out.
import { type StackConfig, nodeFqdn } from "../config/stack-config";
import type { RelayMaps } from "../maps/relay-maps";

/** The stacks the fleet is made of, and what `pulumi stack output --json` said of each (if given). */
export interface FleetStack {
  stack: string;
  cfg: StackConfig;
  /** Node name -> IPv4, from the stack's outputs; absent before `pulumi up`. */
  ipv4?: Record<string, string>;
}

export interface M365Options {
  /** Attribute the relays' mail in tenant B by their IPv4 addresses instead of the certificate. */
  ipBased?: boolean;
  /** Roll out in waves: only members of this group are routed through the relays. */
  waveGroup?: string;
  /** The rule takes effect from this moment (ISO 8601). */
  activationDate?: string;
  /**
   * Per tenant id: the name on the client certificate the relays present to that tenant, when it is
   * not the node certificate (header-rewrite:clientCertificates; e.g. relay.new.example).
   */
  clientCertificateNames?: Record<string, string>;
}

/** Stable names: a re-run finds and updates these instead of creating duplicates. */
export const M365_NAMES = {
  outboundConnector: "header-rewrite relays",
  domainRule: "header-rewrite: senders whose domain is rewritten",
  addressRule: "header-rewrite: single addresses that are rewritten",
  inboundConnector: "header-rewrite relays",
} as const;

export class M365Error extends Error {}

/**
 * A PowerShell single-quoted string. Inside one only a quote is special, and PowerShell counts the
 * typographic single quotes as quotes too: each is doubled, so no map line can end the string.
 */
export function psString(s: string): string {
  return `'${s.replace(/['\u2018\u2019\u201a\u201b]/g, (q) => q + q)}'`;
}

/** A PowerShell expression written by the generator itself (never from a map). */
interface PsExpression {
  expression: string;
}

type PsValue = string | boolean | string[] | PsExpression;

function psValue(v: PsValue): string {
  if (typeof v === "object" && "expression" in v) return v.expression;
  if (typeof v === "boolean") return v ? "$true" : "$false";
  if (Array.isArray(v)) return `@(${v.map(psString).join(", ")})`;
  return psString(v);
}

/** One cmdlet call, a parameter per line (review-friendly diffs). */
function call(cmdlet: string, params: [string, PsValue][], indent = ""): string {
  const lines = params.map(([k, v]) => `${indent}  -${k} ${psValue(v)}`);
  return [`${indent}${cmdlet}`, ...lines].join(" `\n") + "\n";
}

/** Create-or-update: Set-X when an object of that name exists, else New-X with the same settings. */
function upsert(noun: string, name: string, params: [string, PsValue][]): string {
  return (
    `if (Get-${noun} -Identity ${psString(name)} -ErrorAction SilentlyContinue) {\n` +
    call(`  Set-${noun}`, [["Identity", name], ...params]) +
    `} else {\n` +
    call(`  New-${noun}`, [["Name", name], ...params]) +
    `}\n`
  );
}

interface TenantB {
  id: string;
  host: string;
  /** The client certificate name the relays present to this tenant. */
  certificateName: string;
  /** Why this tenant may not attribute the relays' mail (a name it shares with another tenant). */
  warning?: string;
  /** New sender domains whose mail goes to this tenant. */
  domains: string[];
}

/** What both sides must agree on, derived once. */
export interface M365Plan {
  smartHosts: string[];
  /** TLS name tenant A checks on the relays (the node certificates). */
  certificateName: string;
  loopGuard: { header: string; words: string[] };
  /** Old domains rewritten whole, and single old addresses rewritten (or routed unchanged). */
  senderDomains: string[];
  senderAddresses: string[];
  /** Addresses of rewritten domains that allowed_senders refuses: never sent to the relays. */
  notRouted: string[];
  tenantsB: TenantB[];
  relayIPv4: string[];
  /** What is allowed but likely wrong; `npm run m365` prints them, and each affected script says so. */
  warnings: string[];
}

function sorted(xs: Iterable<string>): string[] {
  return [...new Set(xs)].sort();
}

export function planM365(maps: RelayMaps, fleet: FleetStack[], opts: M365Options = {}): M365Plan {
  const nodes = fleet.flatMap((s) =>
    s.cfg.nodes.map((n) => ({ stack: s, name: n, fqdn: nodeFqdn(s.cfg, n) })),
  );
  const zones = sorted(fleet.map((s) => s.cfg.dnsZone));
  if (zones.length !== 1) {
    throw new M365Error(
      `the stacks use several DNS zones (${zones.join(", ")}): tenant A's connector validates one name ` +
        `(TlsDomain), so every node must be under one zone`,
    );
  }
  // Every node certificate is for <node>.<zone>: one wildcard name covers them all.
  const nodeCertName = `*.${zones[0]}`;
  const headers = sorted(fleet.map((s) => s.cfg.loopGuardHeader));
  if (headers.length !== 1)
    throw new M365Error(`the stacks stamp different loop-guard headers (${headers.join(", ")}): use one`);

  const whole = maps.translations.filter((t) => t.kind === "domain");
  const wholeDomains = new Set(whole.map((t) => t.fromDomain));
  const routedBy = new Set(maps.relayhosts.map((r) => r.key));
  // An exception keeps its old address and still goes through the relays (validation makes sure
  // per_sender_relayhosts routes it); the domain rule covers those of whole domains.
  const routedExceptions = maps.translations.filter(
    (t) => t.kind === "exception" && routedBy.has(t.from) && !wholeDomains.has(t.fromDomain),
  );
  // Addresses allowed_senders refuses (REJECT, 5xx, DEFER…) would only bounce or wait at the relays:
  // they leave tenant A the usual way instead.
  const notRouted = sorted(
    maps.allowedSenders
      .filter((a) => a.action !== "OK" && /^[^@]+@[^@]+$/.test(a.key))
      .filter((a) => wholeDomains.has(a.key.split("@")[1]))
      .map((a) => a.key),
  );
  const singles = maps.translations
    .filter((t) => t.kind === "address" && !wholeDomains.has(t.fromDomain))
    .map((t) => t.from);

  // The names the nodes obtain certificates for (tenantCertificates), the same in every stack;
  // --client-certificate names an operator-supplied one.
  const obtained: Record<string, string> = {};
  for (const s of fleet)
    for (const [id, name] of Object.entries(s.cfg.tenantCertificates ?? {})) {
      if (obtained[id] && obtained[id] !== name)
        throw new M365Error(
          `the stacks give tenant ${id} different certificate names (${obtained[id]}, ${name}): ` +
            "tenant B's connector checks one name (header-rewrite:tenantCertificates)",
        );
      obtained[id] = name;
    }
  const named = { ...obtained, ...opts.clientCertificateNames };
  const unknown = Object.keys(named).filter((id) => !maps.tenants.some((t) => t.id === id));
  if (unknown.length) {
    throw new M365Error(
      `--client-certificate or tenantCertificates names tenant ${unknown.join(", ")}, ` +
        "which maps/per_sender_relayhosts does not " +
        `(tenants: ${maps.tenants.map((t) => t.id).join(", ")})`,
    );
  }
  const tenantsB = maps.tenants.map((tenant) => ({
    id: tenant.id,
    host: tenant.host,
    certificateName: named[tenant.id] ?? nodeCertName,
    domains: sorted(
      maps.relayhosts
        .filter((r) => r.tenantId === tenant.id && r.key.startsWith("@"))
        .map((r) => r.key.slice(1)),
    ),
  }));

  // A certificate name can be an accepted domain of one tenant only, and Exchange Online attributes
  // relayed mail by it first (MC1226222): tenants sharing one attribute by the envelope sender at
  // best, and one with Reject Direct Send on refuses that mail (5.7.68). With --ip-based the name
  // attributes nothing.
  const warnings: string[] = [];
  if (!opts.ipBased) {
    for (const name of sorted(tenantsB.map((t) => t.certificateName))) {
      const sharing = tenantsB.filter((t) => t.certificateName === name);
      if (sharing.length < 2) continue;
      const warning =
        `tenants ${sharing.map((t) => t.id).join(", ")} are all given the certificate name ${name}: it can be an ` +
        "accepted domain of one of them only, so the others do not attribute the relays' mail by it (MC1226222), " +
        "and one with RejectDirectSend on refuses it (550 5.7.68); give each tenant a certificate of its own " +
        "(header-rewrite:tenantCertificates, or --client-certificate)";
      warnings.push(warning);
      for (const t of sharing) (t as TenantB).warning = warning;
    }
  }
  const relayIPv4 = sorted(nodes.map((n) => n.stack.ipv4?.[n.name] ?? ""));
  if (opts.ipBased && relayIPv4.includes("")) {
    const missing = nodes.filter((n) => !n.stack.ipv4?.[n.name]).map((n) => n.name);
    throw new M365Error(
      `--ip-based needs every node's IPv4, and ${missing.join(", ")} has none: pass each stack's outputs ` +
        `(pulumi stack output --json -s <stack> > <stack>.json; npm run m365 -- --outputs <stack>.json ...)`,
    );
  }
  return {
    smartHosts: sorted(nodes.map((n) => n.fqdn)),
    certificateName: nodeCertName,
    loopGuard: { header: headers[0], words: sorted(nodes.map((n) => n.fqdn)) },
    senderDomains: sorted(wholeDomains),
    senderAddresses: sorted([...singles, ...routedExceptions.map((t) => t.from)]),
    notRouted,
    tenantsB,
    relayIPv4: relayIPv4.filter(Boolean),
    warnings,
  };
}

const PREAMBLE = `# Generated by header-rewrite (npm run m365) from maps/ and the stack files; do not edit.
# Run in Exchange Online PowerShell (Connect-ExchangeOnline) as an Exchange Administrator.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
`;

function ruleParams(plan: M365Plan, opts: M365Options): [string, PsValue][] {
  const params: [string, PsValue][] = [
    ["FromScope", "InOrganization"],
    ["SentToScope", "NotInOrganization"],
    ["RouteMessageOutboundConnector", M365_NAMES.outboundConnector],
    ["ExceptIfHeaderContainsMessageHeader", plan.loopGuard.header],
    ["ExceptIfHeaderContainsWords", plan.loopGuard.words],
  ];
  if (plan.notRouted.length) params.push(["ExceptIfFrom", plan.notRouted]);
  if (opts.waveGroup) params.push(["FromMemberOf", [opts.waveGroup]]);
  if (opts.activationDate) params.push(["ActivationDate", opts.activationDate]);
  return params;
}

/** Tenant A: the outbound connector to the relays and the rules that choose what goes there. */
export function tenantAScript(plan: M365Plan, opts: M365Options = {}): string {
  const parts = [
    PREAMBLE,
    "# The connector to the relays: used only by the rules below, TLS verified against the relays' names.\n",
    upsert("OutboundConnector", M365_NAMES.outboundConnector, outboundConnectorSettings(plan)),
    "\n# Mail from inside the organisation to outside recipients only; never mail the relays already saw.\n",
    upsert("TransportRule", M365_NAMES.domainRule, [
      ["SenderDomainIs", plan.senderDomains],
      ...ruleParams(plan, opts),
    ]),
  ];
  if (plan.senderAddresses.length) {
    parts.push(
      "\n# Single addresses of domains that are not rewritten whole.\n",
      upsert("TransportRule", M365_NAMES.addressRule, [
        ["From", plan.senderAddresses],
        ...ruleParams(plan, opts),
      ]),
    );
  }
  return parts.join("");
}

/**
 * Exchange Online attributes relayed mail first by the client certificate's domain, which must be an
 * accepted domain of the tenant (MC1226222); null-sender mail (NDRs, auto-replies) has nothing else.
 */
function certificateCheck(tenant: TenantB, list: string, opts: M365Options = {}): string {
  if (opts.ipBased) return "";
  const domain = tenant.certificateName.replace(/^\*\./, "");
  return (
    `if (-not (Get-AcceptedDomain -Identity ${psString(domain)} -ErrorAction SilentlyContinue)) {\n` +
    `  ${list} += ${psString(
      `the relays present a certificate for ${tenant.certificateName}, but ${domain} is not an accepted domain ` +
        "of this tenant: mail is not attributed to it by certificate (NDRs and auto-replies cannot be at all)",
    )}\n}\n`
  );
}

/** Tenant A's connector to the relays, as created and as verified. */
function outboundConnectorSettings(plan: M365Plan): [string, PsValue][] {
  return [
    ["ConnectorType", "OnPremises"],
    ["IsTransportRuleScoped", true],
    ["UseMXRecord", false],
    ["SmartHosts", plan.smartHosts],
    ["TlsSettings", "DomainValidation"],
    ["TlsDomain", plan.certificateName],
    ["Enabled", true],
  ];
}

/** How tenant B recognises the relays: their certificate name, or (option) their IPv4 addresses. */
function attributionSettings(plan: M365Plan, tenant: TenantB, opts: M365Options): [string, PsValue][] {
  return opts.ipBased
    ? [["SenderIPAddresses", plan.relayIPv4]]
    : [["TlsSenderCertificateName", tenant.certificateName]];
}

/** Appends to the PowerShell array LIST what the tenant lacks: accepted domains and DKIM signing. */
function tenantChecks(tenant: TenantB, list: string, opts: M365Options): string {
  const perDomain = tenant.domains.map(
    (d) =>
      `if (-not (Get-AcceptedDomain -Identity ${psString(d)} -ErrorAction SilentlyContinue)) {\n` +
      `  ${list} += ${psString(`${d} is not an accepted domain of this tenant`)}\n}\n` +
      `$dkim = Get-DkimSigningConfig -Identity ${psString(d)} -ErrorAction SilentlyContinue\n` +
      `if (-not $dkim -or -not $dkim.Enabled) {\n` +
      `  ${list} += ${psString(`DKIM signing is not enabled for ${d} (rewritten mail fails DMARC alignment)`)}\n}\n`,
  );
  return certificateCheck(tenant, list, opts) + perDomain.join("");
}

/** One target tenant: the inbound connector that attributes the relays' mail to it, and checks. */
export function tenantBScript(plan: M365Plan, tenant: TenantB, opts: M365Options = {}): string {
  const attribution = attributionSettings(plan, tenant, opts);
  const checks = tenantChecks(tenant, "$problems", opts);
  return [
    PREAMBLE,
    `# Tenant ${tenant.id} (${tenant.host}): mail the relays rewrote to ${tenant.domains.join(", ")}.\n`,
    tenant.warning ? `# WARNING: ${tenant.warning}\n` : "",
    upsert("InboundConnector", M365_NAMES.inboundConnector, [
      ["ConnectorType", "OnPremises"],
      ["SenderDomains", ["*"]],
      ...attribution,
      ["Enabled", true],
    ]),
    "\n$problems = @()\n",
    checks,
    "if ($problems.Count -gt 0) { $problems | ForEach-Object { Write-Error $_ -ErrorAction Continue }; exit 1 }\n",
  ].join("");
}

// Read-only: compares the tenant with what the maps and stacks say; exit 1 lists every difference.
const VERIFY_PREAMBLE = `${PREAMBLE}# Read-only: compares the tenant with the maps and stacks; exit 1 lists every difference.
$drift = @()
function Compare-Setting([string]$what, $actual, $expected) {
  $a = (@($actual) | Where-Object { $null -ne $_ } | ForEach-Object { "$_".ToLowerInvariant() } | Sort-Object) -join ', '
  $e = (@($expected) | ForEach-Object { "$_".ToLowerInvariant() } | Sort-Object) -join ', '
  if ($a -ne $e) { $script:drift += "$what is '$a'; the maps and stacks say '$e'" }
}
`;

const VERIFY_END = `if ($drift.Count -gt 0) {
  Write-Output 'header-rewrite: the tenant differs from the maps and stacks:'
  $drift | ForEach-Object { Write-Output "  - $_" }
  exit 1
}
Write-Output 'header-rewrite: the tenant matches the maps and stacks'
`;

/** Compares one object's settings; a missing object is one difference. */
function verifyObject(noun: string, name: string, settings: [string, PsValue][]): string {
  const v = `$${noun.replace(/[^A-Za-z]/g, "")}`;
  const lines = settings.map(
    ([k, value]) => `  Compare-Setting ${psString(`${noun} '${name}' ${k}`)} ${v}.${k} ${psValue(value)}\n`,
  );
  return (
    `${v} = Get-${noun} -Identity ${psString(name)} -ErrorAction SilentlyContinue\n` +
    `if (-not ${v}) { $drift += ${psString(`${noun} '${name}' does not exist`)} } else {\n` +
    lines.join("") +
    "}\n"
  );
}

export function verifyTenantAScript(plan: M365Plan, opts: M365Options = {}): string {
  const rule = (settings: [string, PsValue][]) => settings.filter(([k]) => k !== "ActivationDate");
  const parts = [
    VERIFY_PREAMBLE,
    verifyObject("OutboundConnector", M365_NAMES.outboundConnector, outboundConnectorSettings(plan)),
    verifyObject(
      "TransportRule",
      M365_NAMES.domainRule,
      rule([["SenderDomainIs", plan.senderDomains], ...ruleParams(plan, opts)]),
    ),
  ];
  if (plan.senderAddresses.length) {
    parts.push(
      verifyObject(
        "TransportRule",
        M365_NAMES.addressRule,
        rule([["From", plan.senderAddresses], ...ruleParams(plan, opts)]),
      ),
    );
  }
  return parts.join("") + VERIFY_END;
}

/**
 * Reject Direct Send (Set-OrganizationConfig -RejectDirectSend, GA September 2025): with it on,
 * anonymous mail whose envelope sender is an accepted domain, which every rewritten message's is, is
 * refused with 550 5.7.68 unless an inbound connector matching the sender's certificate or IP
 * attributes it. Reported either way: it decides what a certificate mismatch costs.
 */
function directSendReport(plan: M365Plan, tenant: TenantB, opts: M365Options): string {
  const how = opts.ipBased
    ? `its sender IPs (${plan.relayIPv4.join(", ")})`
    : `the certificate name ${tenant.certificateName}`;
  const on =
    `RejectDirectSend is on: every message from the relays must be attributed to inbound connector ` +
    `'${M365_NAMES.inboundConnector}' by ${how}; one that is not is refused with 550 5.7.68 TenantInboundAttribution`;
  const off =
    "RejectDirectSend is off: mail from the relays that the connector does not attribute is not refused for " +
    "it, but arrives as anonymous mail from this tenant's own domain (spoofing checks apply)";
  return (
    "$org = Get-OrganizationConfig\n" +
    `if ($org.RejectDirectSend) { Write-Output ${psString(`header-rewrite: ${on}`)} } ` +
    `else { Write-Output ${psString(`header-rewrite: ${off}`)} }\n`
  );
}

export function verifyTenantBScript(plan: M365Plan, tenant: TenantB, opts: M365Options = {}): string {
  const attribution = attributionSettings(plan, tenant, opts);
  const domains = tenantChecks(tenant, "$drift", opts);
  return (
    VERIFY_PREAMBLE +
    verifyObject("InboundConnector", M365_NAMES.inboundConnector, [
      ["ConnectorType", "OnPremises"],
      ["SenderDomains", ["smtp:*;1"]],
      ...attribution,
      ["Enabled", true],
    ]) +
    domains +
    directSendReport(plan, tenant, opts) +
    VERIFY_END
  );
}

/** Every file `npm run m365` writes, by name; ROUTES (from a mailbox list) add the mail users. */
export function m365Files(
  plan: M365Plan,
  opts: M365Options = {},
  routes?: ReplyRoute[],
): Record<string, string> {
  const files: Record<string, string> = {
    "tenant-a.ps1": tenantAScript(plan, opts),
    "verify-tenant-a.ps1": verifyTenantAScript(plan, opts),
  };
  for (const t of plan.tenantsB) {
    files[`tenant-b-${t.id}.ps1`] = tenantBScript(plan, t, opts);
    files[`verify-tenant-b-${t.id}.ps1`] = verifyTenantBScript(plan, t, opts);
    if (routes) files[`tenant-b-${t.id}-mail-users.ps1`] = mailUsersScript(t, routes);
  }
  return files;
}

/** One mailbox of tenant A, as `Get-Mailbox | Export-Csv` lists it. */
export interface SourceMailbox {
  address: string;
  displayName: string;
  /** Where it was read from ("users.csv:12"), for messages. */
  origin: string;
}

/** What a sender address becomes at the relays (sender_canonical_maps: address first, then domain). */
export function rewrittenAddress(maps: RelayMaps, address: string): string | undefined {
  const a = address.toLowerCase();
  const domain = a.slice(a.lastIndexOf("@") + 1);
  const byAddress = maps.translations.find((t) => t.from === a);
  if (byAddress) return byAddress.to;
  const byDomain = maps.translations.find((t) => t.kind === "domain" && t.fromDomain === domain);
  return byDomain ? `${a.slice(0, a.lastIndexOf("@"))}@${byDomain.toDomain}` : undefined;
}

export interface ReplyRoute {
  mailbox: SourceMailbox;
  /** The address the mailbox's mail now carries, owned by tenant B. */
  newAddress: string;
  tenantId: string;
}

/**
 * Which tenant B mail users replies need: one per mailbox whose address the relays rewrite to
 * another address; an exception keeps its old address and needs none.
 */
export function replyRoutes(maps: RelayMaps, mailboxes: SourceMailbox[]): ReplyRoute[] {
  const routes: ReplyRoute[] = [];
  for (const m of mailboxes) {
    const newAddress = rewrittenAddress(maps, m.address);
    if (!newAddress || newAddress === m.address.toLowerCase()) continue;
    const relayhost =
      maps.relayhosts.find((r) => r.key === newAddress) ??
      maps.relayhosts.find((r) => r.key === `@${newAddress.split("@")[1]}`);
    if (!relayhost)
      throw new M365Error(`${m.origin}: ${m.address} becomes ${newAddress}, which no tenant receives`);
    routes.push({ mailbox: m, newAddress, tenantId: relayhost.tenantId });
  }
  return routes;
}

/**
 * Tenant B's mail users that carry replies back to the mailboxes in tenant A: a mail user whose
 * account name is the new address and whose external address is the old mailbox (Microsoft's own
 * New-MailUser example 1 for Exchange Online). The account gets a random password nobody knows.
 */
export function mailUsersScript(tenant: { id: string }, routes: ReplyRoute[]): string {
  const mine = routes.filter((r) => r.tenantId === tenant.id);
  const users = mine
    .map(
      (r) =>
        // The origin names a file the operator chose: only printable characters reach the comment.
        `# ${r.mailbox.origin.replace(/[^\x20-\x7e]/g, "?")}\n` +
        `if (Get-MailUser -Identity ${psString(r.newAddress)} -ErrorAction SilentlyContinue) {\n` +
        call("  Set-MailUser", [
          ["Identity", r.newAddress],
          ["ExternalEmailAddress", r.mailbox.address],
        ]) +
        `} else {\n` +
        call("  New-MailUser", [
          ["Name", r.mailbox.displayName],
          ["MicrosoftOnlineServicesID", r.newAddress],
          ["ExternalEmailAddress", r.mailbox.address],
          ["Password", { expression: "(New-UnusablePassword)" }],
        ]) +
        `}\n`,
    )
    .join("");
  return (
    PREAMBLE +
    `# Tenant ${tenant.id}: ${mine.length} mail user(s); mail to each new address goes on to the mailbox in tenant A.\n` +
    "# Routing to a mail user's external address is not automatic forwarding (Inbox rules and mailbox\n" +
    "# forwarding are), so the outbound spam policy needs no exception for it.\n" +
    "function New-UnusablePassword {\n" +
    "  $bytes = [byte[]]::new(32)\n" +
    "  [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)\n" +
    "  ConvertTo-SecureString -String ([Convert]::ToBase64String($bytes) + 'aA1!') -AsPlainText -Force\n" +
    "}\n" +
    users
  );
}
