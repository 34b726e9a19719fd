// Reads and validates the operator's Postfix maps (maps/*) into a typed model. Everything downstream
// renders from this model; nothing else re-parses the files. Every problem names file:line:col,
// says what is wrong and how to fix it; all problems are reported at once.
import * as fs from "node:fs";
import * as path from "node:path";
import * as ipaddr from "ipaddr.js";
import {
  type MapLine,
  MapValidationError,
  type Origin,
  type Problem,
  Report,
  duplicates,
  extraWords,
  isDomain,
  logicalLines,
  midLineComment,
} from "./postfix-table";
import { type TenantPin, parseTenantPins, pinFor } from "./tenant-pins";
import { type CalendarRule, parseCalendarRules } from "./calendar-addresses";

export { MapValidationError, formatProblem } from "./postfix-table";

/** The operator's maps, named by their file under maps/ everywhere (texts, messages, renders). */
export const MAP_NAMES = [
  "translate_domains",
  "allowed_senders",
  "per_sender_relayhosts",
  "allow_relay_by_ip",
  "tenant_pins",
  "calendar_addresses",
] as const;

export type MapName = (typeof MAP_NAMES)[number];

export type MapTexts = Record<MapName, string>;

/** Maps that may be absent (added after the first release): missing reads as empty. */
const OPTIONAL_MAPS = new Set<MapName>(["calendar_addresses"]);

type TranslationKind = "domain" | "address" | "exception";

/** sender_canonical_maps entry: the sender as tenant A sends it → the sender tenant B sees. */
interface Translation extends Origin {
  kind: TranslationKind;
  from: string; // "@old.example" or "alice@old.example" (lower case)
  to: string; // "@new.example" or "a.smith@new.example" (lower case)
  fromDomain: string;
  toDomain: string;
}

/** access(5) entry keyed by the sender *before* rewriting. */
interface AllowedSender extends Origin {
  key: string; // "old.example", "alice@old.example", "alice@" or "<>"
  action: string; // "OK" or a reject action
}

/** One Microsoft 365 tenant as the relay sees it: a next hop (the tenant's MX host). */
interface Tenant {
  id: string; // short name for transports and files, derived from the host
  nexthop: string; // exactly as written in the map: "[host]" or "[host]:port"
  host: string;
  port: number;
}

/** sender_dependent_relayhost_maps entry keyed by the sender *after* rewriting. */
interface Relayhost extends Origin {
  key: string; // "@new.example" or "ceo@old.example" or "<>"
  nexthop: string;
  tenantId: string;
}

/** A client range allowed to relay (mynetworks); also opens TCP 25 in the security group. */
interface ClientRange extends Origin {
  cidr: string; // normalised "192.0.2.0/24" / "2001:db8::/32"
  family: 4 | 6;
  action: string;
}

export interface RelayMaps {
  translations: Translation[];
  allowedSenders: AllowedSender[];
  relayhosts: Relayhost[];
  tenants: Tenant[];
  clientRanges: ClientRange[];
  pins: TenantPin[];
  /** Calendar modes per sender domain (maps/calendar_addresses); unlisted domains are rewritten. */
  calendar: CalendarRule[];
  /** Legal but surprising things; fatal only with --strict. */
  warnings: Problem[];
}

export interface ValidationOptions {
  /** Widest client range accepted, as a prefix length (IPv4, IPv6). */
  widestV4?: number;
  widestV6?: number;
  /** Treat warnings as errors. */
  strict?: boolean;
  /** How the maps directory is named in messages (default "maps"). */
  displayDir?: string;
}

const DEFAULT_WIDEST = { v4: 8, v6: 32 };

/** How a map is named in messages: "maps/translate_domains". */
type FileName = (map: MapName) => string;

// RFC 5321 dot-atom local part; quoted local parts are not something a tenant sends from.
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

function splitAddress(a: string): { local: string; domain: string } | undefined {
  const at = a.lastIndexOf("@");
  if (at < 0) return undefined;
  return { local: a.slice(0, at), domain: a.slice(at + 1) };
}

function domainHint(d: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(d)) return "write internationalised domains in their xn-- (punycode) form";
  return "a domain is dot-separated labels of letters, digits and inner hyphens, e.g. old.example";
}

/** Checks an address or @domain; returns a problem text or undefined. */
function addressProblem(a: string, allowDomainOnly: boolean): string | undefined {
  const s = splitAddress(a);
  if (!s) return "is not an address";
  if (s.local === "")
    return allowDomainOnly ? (isDomain(s.domain) ? undefined : "has an invalid domain") : "has no local part";
  if (s.local.length > 64) return "has a local part longer than 64 characters";
  if (!LOCAL_PART.test(s.local)) return "has a local part that is not a plain dot-atom";
  return isDomain(s.domain) ? undefined : "has an invalid domain";
}

function parseTranslations(lines: MapLine[], r: Report): Translation[] {
  const out: Translation[] = [];
  for (const l of lines) {
    const from = l.key.toLowerCase();
    const to = (l.words[0]?.text ?? "").toLowerCase();
    if (from.startsWith('"')) {
      r.error(
        l,
        1,
        'quoted local parts ("a b"@old.example) are not supported',
        "tenants send from plain addresses; write user@old.example",
      );
      continue;
    }
    if (!from.includes("@")) {
      if (isDomain(from)) {
        r.error(
          l,
          1,
          `"${l.key}" is looked up as a local user name, not as a domain, and never matches a sender`,
          `write "@${from}" to rewrite every address of that domain`,
        );
      } else {
        r.error(
          l,
          1,
          `"${l.key}" is a local user name; this relay has no local users`,
          `write the full address, e.g. "${from}@old.example"`,
        );
      }
      continue;
    }
    const keyProblem = addressProblem(from, true);
    if (keyProblem) {
      r.error(
        l,
        1,
        `key "${l.key}" ${keyProblem}`,
        from.startsWith("@") ? domainHint(from.slice(1)) : "write user@old.example or @old.example",
      );
      continue;
    }
    if (!to) {
      r.error(
        l,
        l.valueCol,
        `"${l.key}" has no replacement`,
        `write "${l.key} @new.example" or "${l.key} user@new.example"`,
      );
      continue;
    }
    if (
      extraWords(
        l,
        1,
        r,
        "a translation has exactly one replacement address",
        "one translation per line; a comment must start its own line with #",
      )
    )
      continue;
    const f = splitAddress(from)!;
    const valueProblem = addressProblem(to, true);
    if (valueProblem) {
      r.error(
        l,
        l.valueCol,
        `replacement "${to}" ${valueProblem}`,
        "write @new.example (keeps the local part) or user@new.example",
      );
      continue;
    }
    const t = splitAddress(to)!;
    if (f.local === "" && t.local !== "") {
      r.error(
        l,
        l.valueCol,
        `the domain key "${l.key}" maps to one address "${to}": every sender of ${f.domain} would become ${to}`,
        `write "@${f.domain} @${t.domain}" to keep local parts, or list addresses one by one`,
      );
      continue;
    }
    if (f.local !== "" && t.local === "") {
      r.error(
        l,
        l.valueCol,
        `the address key "${l.key}" maps to a bare domain "${to}"`,
        `write the full new address, e.g. "${f.local}${to}"`,
      );
      continue;
    }
    const kind: TranslationKind = from === to ? "exception" : f.local === "" ? "domain" : "address";
    // Exchange Online caps mail from onmicrosoft.com (MOERA) addresses at 100 external recipients per
    // tenant per 24 h, NDR 550 5.7.236 (Exchange Team, 2025; all tenants from 2026-06-01): a relay that
    // rewrites into that domain would stop delivering after the hundredth recipient of the day.
    if (kind !== "exception" && (t.domain === "onmicrosoft.com" || t.domain.endsWith(".onmicrosoft.com"))) {
      r.error(
        l,
        l.valueCol,
        `replacement "${to}" is an onmicrosoft.com address: Exchange Online delivers mail from those to ` +
          "100 external recipients per tenant per 24 h, then refuses it (550 5.7.236)",
        "rewrite to a domain tenant B has added and verified, e.g. @new.example (docs/maps.md, \"Validation\")",
      );
      continue;
    }
    out.push({ file: l.file, line: l.line, kind, from, to, fromDomain: f.domain, toDomain: t.domain });
  }
  return out;
}

// access(5) actions that make sense for a relay's sender check.
const ACCESS_ACTION = /^(OK|DUNNO|REJECT|DEFER|[45]\d\d)(\s.*)?$/i;

function parseAllowedSenders(lines: MapLine[], r: Report): AllowedSender[] {
  const out: AllowedSender[] = [];
  for (const l of lines) {
    const key = l.key.toLowerCase();
    if (key.startsWith("@")) {
      r.error(
        l,
        1,
        `"${l.key}" is not an access(5) key and never matches`,
        `write the bare domain "${key.slice(1)}" to allow every sender of that domain`,
      );
      continue;
    }
    if (key !== "<>") {
      const s = splitAddress(key);
      const bad = s
        ? s.domain === ""
          ? LOCAL_PART.test(s.local)
            ? undefined
            : "has a local part that is not a plain dot-atom"
          : addressProblem(key, false)
        : isDomain(key.replace(/^\./, ""))
          ? undefined
          : "is not a domain, an address, user@ or <>";
      if (bad) {
        r.error(
          l,
          1,
          `key "${l.key}" ${bad}`,
          "use old.example, .old.example (subdomains), user@old.example, user@ or <>",
        );
        continue;
      }
      if (s && s.domain === "") {
        r.warn(
          l,
          1,
          `"${l.key}" allows ${s.local} at every domain`,
          `write "${s.local}@old.example" unless every domain is meant`,
        );
      }
    }
    if (!l.value) {
      r.error(
        l,
        l.valueCol,
        `"${l.key}" has no action`,
        "write OK to allow, or REJECT / a 5xx code with text to refuse",
      );
      continue;
    }
    if (!ACCESS_ACTION.test(l.value)) {
      r.error(
        l,
        l.valueCol,
        `"${l.value}" is not an action this relay supports for "${l.key}"`,
        "write OK to allow, or REJECT / a 5xx code with text to refuse",
      );
      continue;
    }
    // access(5): "OK or RELAY means YES; trailing text is ignored"; a refusal's text is its reply.
    const action = l.words[0].text;
    const continued = l.words.findIndex((w) => w.line !== l.line);
    const takesText = !/^(ok|dunno)$/i.test(action);
    if (
      extraWords(
        l,
        takesText ? continued : 1,
        r,
        takesText
          ? `Postfix reads it as the reply text of ${action}`
          : `Postfix ignores everything after ${action.toUpperCase()}`,
        `one action per line: "${l.key} ${action}"; a comment must start its own line with #`,
      )
    )
      continue;
    out.push({ file: l.file, line: l.line, key, action: /^ok$/i.test(action) ? "OK" : l.value });
  }
  return out;
}

/**
 * Where Microsoft 365 tenants receive mail: worldwide, DNSSEC-enabled domains (2024 on), GCC High /
 * DoD, and 21Vianet (docs/maps.md, "Maps", for the sources).
 */
export const TENANT_MX_SUFFIXES = [
  ".mail.protection.outlook.com",
  ".mx.microsoft",
  ".mail.protection.office365.us",
  ".mail.protection.partner.outlook.cn",
];

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** The known MX host a next hop was probably meant to be, or undefined when it is one already. */
function tenantMxProblem(host: string): { nearest?: string } | undefined {
  if (TENANT_MX_SUFFIXES.some((suffix) => host.endsWith(suffix) && host.length > suffix.length))
    return undefined;
  const labels = host.split(".");
  let best: { host: string; distance: number } | undefined;
  for (const suffix of TENANT_MX_SUFFIXES) {
    const k = suffix.split(".").length - 1;
    for (const take of [k - 1, k, k + 1]) {
      if (take < 1 || take >= labels.length) continue;
      const distance = editDistance(labels.slice(-take).join("."), suffix.slice(1));
      const candidate = `${labels.slice(0, -take).join(".")}${suffix}`;
      if (distance <= 3 && (!best || distance < best.distance)) best = { host: candidate, distance };
    }
  }
  return { nearest: best?.host };
}

const NEXTHOP = /^(\[)?([^\][:]+)(\])?(?::(\d+))?$/;

/** A stable short id for a tenant next hop, used for transport names and file names. */
export function tenantId(host: string): string {
  return host
    .replace(/\.mail\.protection\.outlook\.com$/, "")
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_|_$/g, "");
}

function parseRelayhosts(lines: MapLine[], r: Report): { relayhosts: Relayhost[]; tenants: Tenant[] } {
  const relayhosts: Relayhost[] = [];
  const tenants = new Map<string, Tenant>();
  for (const l of lines) {
    const key = l.key.toLowerCase();
    if (key !== "<>") {
      if (!key.includes("@")) {
        r.error(
          l,
          1,
          `"${l.key}" is never looked up by sender_dependent_relayhost_maps`,
          `write "@${key}" for the whole domain`,
        );
        continue;
      }
      const bad = addressProblem(key, true);
      if (bad) {
        r.error(
          l,
          1,
          `key "${l.key}" ${bad}`,
          "key by the NEW sender after rewriting: @new.example or user@new.example",
        );
        continue;
      }
    }
    const value = (l.words[0]?.text ?? "").toLowerCase();
    if (
      extraWords(
        l,
        1,
        r,
        "each sender has exactly one next hop here",
        `one next hop per line: "${l.key} ${l.words[0]?.text}"; a comment must start its own line with #`,
      )
    )
      continue;
    if (!value) {
      r.error(
        l,
        l.valueCol,
        `"${l.key}" has no next hop`,
        "write the tenant's MX host in brackets, e.g. [new-example.mail.protection.outlook.com]",
      );
      continue;
    }
    const m = NEXTHOP.exec(value);
    if (!m || !!m[1] !== !!m[3]) {
      r.error(
        l,
        l.valueCol,
        `"${value}" is not a next hop`,
        "write [host] or [host]:port, e.g. [new-example.mail.protection.outlook.com]",
      );
      continue;
    }
    const [, open, host, , port] = m;
    if (ipaddr.isValid(host)) {
      r.error(
        l,
        l.valueCol,
        `"${value}" is an address; verified TLS ("secure") needs a host name to check the certificate against`,
        "write the tenant's MX host name, e.g. [new-example.mail.protection.outlook.com]",
      );
      continue;
    }
    if (!isDomain(host)) {
      r.error(l, l.valueCol, `next hop host "${host}" is not a valid host name`, domainHint(host));
      continue;
    }
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
      r.error(
        l,
        l.valueCol,
        `port ${port} of "${value}" is out of range`,
        "ports are 1-65535; Exchange Online listens on 25",
      );
      continue;
    }
    if (!open) {
      r.warn(
        l,
        l.valueCol,
        `"${value}" without brackets makes Postfix look up MX records of ${host}`,
        `write "[${host}]${port ? `:${port}` : ""}" to connect to that host directly`,
      );
    }
    const unknown = tenantMxProblem(host);
    if (unknown) {
      r.warn(
        l,
        l.valueCol,
        `next hop host "${host}" is not a Microsoft 365 MX host (${TENANT_MX_SUFFIXES.map((x) => `*${x}`).join(", ")})`,
        unknown.nearest
          ? `did you mean "${unknown.nearest}"?`
          : "copy the MX host the tenant's admin center shows for the domain, unless this next hop is not Exchange Online",
      );
    }
    const id = tenantId(host) + (port && port !== "25" ? `_${port}` : "") + (open ? "" : "_mx");
    if (!tenants.has(value)) tenants.set(value, { id, nexthop: value, host, port: port ? Number(port) : 25 });
    relayhosts.push({ file: l.file, line: l.line, key, nexthop: value, tenantId: id });
  }
  return { relayhosts, tenants: [...tenants.values()].sort((x, y) => x.id.localeCompare(y.id)) };
}

function parseClientRanges(
  lines: MapLine[],
  r: Report,
  opts: Required<Pick<ValidationOptions, "widestV4" | "widestV6">>,
): ClientRange[] {
  const out: ClientRange[] = [];
  for (const l of lines) {
    if (l.key.startsWith("!") || /^(if|endif)$/i.test(l.key)) {
      r.error(
        l,
        1,
        `"${l.key}" (negation or if/endif) is not supported: "!net" matches every client outside net`,
        "list only the networks that may relay",
      );
      continue;
    }
    const text = l.key.replace(/^\[([^\]]+)\](\/\d+)?$/, "$1$2");
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    let bits: number;
    try {
      if (text.includes("/")) [addr, bits] = ipaddr.parseCIDR(text);
      else {
        addr = ipaddr.parse(text);
        bits = addr.kind() === "ipv4" ? 32 : 128;
      }
    } catch {
      r.error(l, 1, `"${l.key}" is not a network address`, "write e.g. 192.0.2.0/24 OK or 2001:db8::/32 OK");
      continue;
    }
    if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
      r.error(
        l,
        1,
        `"${l.key}" is an IPv4-mapped IPv6 range; Postfix sees IPv4 clients as IPv4`,
        `write it as IPv4: ${(addr as ipaddr.IPv6).toIPv4Address().toString()}/${Math.max(0, bits - 96)}`,
      );
      continue;
    }
    const family = addr.kind() === "ipv4" ? 4 : 6;
    const base = (family === 4 ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(
      `${addr.toString()}/${bits}`,
    );
    if (base.toString() !== addr.toString()) {
      r.error(
        l,
        1,
        `"${l.key}" has host bits set; Postfix skips this line with a warning`,
        `write the network address: ${base.toString()}/${bits}`,
      );
      continue;
    }
    if (bits === 0) {
      r.error(
        l,
        1,
        `"${l.key}" lets every client on the Internet relay (open relay)`,
        "list only your clients' ranges, e.g. Exchange Online's published outbound ranges",
      );
      continue;
    }
    const widest = family === 4 ? opts.widestV4 : opts.widestV6;
    if (bits < widest) {
      r.error(
        l,
        1,
        `"${l.key}" is wider than /${widest}, the widest client range this project accepts for IPv${family}`,
        `split it into the ranges your clients really use (the bound is header-rewrite:widestClientRangeV${family})`,
      );
      continue;
    }
    if (!l.value) {
      r.error(
        l,
        l.valueCol,
        `"${l.key}" has no result; Postfix skips a cidr line without one`,
        `write "${l.key} OK"`,
      );
      continue;
    }
    // mynetworks only asks whether the client matches; the result is never read.
    if (!/^ok$/i.test(l.words[0].text)) {
      r.errorAt(
        l.words[0],
        `"${l.value}" does not refuse anything: this table is mynetworks, which ignores the result, ` +
          `so "${l.key}" may relay whatever it says`,
        `write "${l.key} OK" to allow the range, or remove the line to refuse it`,
      );
      continue;
    }
    if (
      extraWords(
        l,
        1,
        r,
        "Postfix ignores the result here (mynetworks), so this text allows nothing",
        "one range per line, each followed by OK; a comment must start its own line with #",
      )
    )
      continue;
    out.push({ file: l.file, line: l.line, cidr: `${base.toString()}/${bits}`, family, action: "OK" });
  }
  return out;
}

/** The same key twice (Postfix keys are case-insensitive) is a mistake whichever line wins. */

function cidrKey(k: string): string {
  try {
    const t = k.replace(/^\[([^\]]+)\](\/\d+)?$/, "$1$2");
    const [a, b] = t.includes("/") ? ipaddr.parseCIDR(t) : [ipaddr.parse(t), t.includes(":") ? 128 : 32];
    return `${a.toString()}/${b}`;
  } catch {
    return k.toLowerCase();
  }
}

/** Cross-map rules: what Postfix would accept but what would send mail the wrong way. */
function crossCheck(m: Omit<RelayMaps, "warnings">, file: FileName, r: Report): void {
  const byFrom = new Map(m.translations.map((t) => [t.from, t]));
  const domainRewrite = new Map(
    m.translations.filter((t) => t.kind === "domain").map((t) => [t.fromDomain, t]),
  );
  const relayKeys = new Map(m.relayhosts.map((x) => [x.key, x]));
  const hasNexthop = (addr: string) => relayKeys.has(addr) || relayKeys.has(`@${splitAddress(addr)!.domain}`);
  /** What canonical lookup does to an address (or @domain): address key first, then @domain. */
  const step = (addr: string): Translation | undefined =>
    byFrom.get(addr) ?? (addr.startsWith("@") ? undefined : domainRewrite.get(splitAddress(addr)!.domain));
  /** The address after one canonical rewrite: a domain entry keeps the local part. */
  const rewrite = (t: Translation, addr: string) =>
    t.kind === "domain" && !addr.startsWith("@") ? `${splitAddress(addr)!.local}${t.to}` : t.to;

  for (const t of m.translations) {
    if (t.kind === "exception") {
      if (!domainRewrite.has(t.fromDomain)) {
        r.warn(
          t,
          1,
          `exception "${t.from}" shadows nothing: no "@${t.fromDomain}" rewrite in ${file("translate_domains")}`,
          "remove the line, or add the domain rewrite it is an exception to",
        );
      }
    } else {
      // Postfix applies canonical maps recursively: the result is looked up again.
      const trail = [t.from, t.to];
      let addr = t.to;
      for (
        let next = step(addr);
        next && next.kind !== "exception" && trail.length <= 11;
        next = step(addr)
      ) {
        addr = rewrite(next, addr);
        trail.push(addr);
        if (trail.slice(0, -1).includes(addr)) break;
      }
      if (trail.length > 2) {
        const cycle = trail.slice(0, -1).includes(trail[trail.length - 1]);
        r.error(
          t,
          t.from.length + 2,
          cycle
            ? `rewrite cycle: ${trail.join(" -> ")} (Postfix gives up after 10 rounds)`
            : `rewrite chain: ${trail.join(" -> ")}; Postfix looks the result up again, so ${t.from} ends as ${addr}`,
          cycle
            ? "a new address must never be rewritten back; remove one direction"
            : `map ${t.from} straight to its final address, or make ${t.to} an exception`,
        );
      }
    }
    if (!hasNexthop(t.to)) {
      r.error(
        t,
        t.from.length + 2,
        `"${t.from}" becomes "${t.to}", but ${file("per_sender_relayhosts")} has no next hop for it`,
        `add "@${t.toDomain} [tenant-mx-host]" (or "${t.to.startsWith("@") ? `user${t.to}` : t.to} [host]") ` +
          `to ${file("per_sender_relayhosts")}; without it mail goes straight to the recipient's MX`,
      );
    }
  }
  const allowedDomains = new Set<string>();
  for (const s of m.allowedSenders) {
    if (s.action !== "OK") continue;
    if (s.key === "<>") {
      if (!relayKeys.has("<>")) {
        r.error(
          s,
          1,
          "the null sender <> is allowed but has no next hop",
          `add "<> [tenant-mx-host]" to ${file("per_sender_relayhosts")}, ` +
            "or remove the line so bounces are refused (the default)",
        );
      }
      continue;
    }
    const a = splitAddress(s.key);
    const domain = a ? a.domain : s.key;
    if (domain === "") continue; // "user@": any domain; the domain lines decide
    if (domain.startsWith(".")) {
      r.error(
        s,
        1,
        `"${s.key}" allows every subdomain of ${domain.slice(1)}, ` +
          `but "@${domain.slice(1)}" in ${file("translate_domains")} does not match subdomains`,
        `list each subdomain you rewrite, e.g. "sub${domain}" with "@sub${domain} @new.example" in ${file("translate_domains")}`,
      );
      continue;
    }
    allowedDomains.add(domain);
    const covered =
      a && a.local !== "" ? byFrom.has(s.key) || domainRewrite.has(domain) : domainRewrite.has(domain);
    if (!covered) {
      const exception = a && a.local ? s.key : `user@${domain}`;
      r.error(
        s,
        1,
        `allowed sender "${s.key}" has no translation in ${file("translate_domains")}; it would leave under the old name`,
        `add "@${domain} @new-domain" to ${file("translate_domains")} ` +
          `(or "${exception} ${exception}" for an exception)`,
      );
    }
  }
  const allowedKeys = new Set(m.allowedSenders.filter((s) => s.action === "OK").map((s) => s.key));
  for (const t of m.translations) {
    if (t.kind !== "exception" && !allowedDomains.has(t.fromDomain) && !allowedKeys.has(t.from)) {
      r.warn(
        t,
        1,
        `"${t.from}" is rewritten but ${t.fromDomain} is not in ${file("allowed_senders")}, ` +
          "so such mail is refused before rewriting",
        `add "${t.fromDomain} OK" to ${file("allowed_senders")}, or remove the line`,
      );
    }
  }
  const producedAddresses = new Set(m.translations.map((t) => t.to));
  const producedDomains = new Set(m.translations.map((t) => t.toDomain));
  // The relayhost lookup sees the sender after rewriting: an old-domain key never matches.
  for (const x of m.relayhosts) {
    if (x.key === "<>") continue;
    const rewritten = step(x.key);
    if (rewritten && rewritten.kind !== "exception") {
      r.error(
        x,
        1,
        `"${x.key}" is an OLD sender: it is rewritten to "${rewritten.to}" before this lookup, so the line never matches`,
        `key it by the new sender, e.g. "${rewritten.to.startsWith("@") ? rewritten.to : "@" + rewritten.toDomain}"`,
      );
      continue;
    }
    const used =
      producedAddresses.has(x.key) || (x.key.startsWith("@") && producedDomains.has(x.key.slice(1)));
    if (!used) {
      r.warn(
        x,
        1,
        `no translation in ${file("translate_domains")} produces "${x.key}", so this next hop is never used`,
        "remove the line or add the translation that needs it",
      );
    }
  }
}

/** Every allowed sender domain is pinned (or marked unpinned), and every pin serves an allowed domain. */
function pinCheck(m: Omit<RelayMaps, "warnings">, file: FileName, r: Report): void {
  const allowed = new Map<string, AllowedSender>();
  for (const s of m.allowedSenders) {
    if (s.action !== "OK" || s.key === "<>") continue;
    const domain = splitAddress(s.key)?.domain ?? s.key;
    if (domain && !allowed.has(domain)) allowed.set(domain, s);
  }
  const exact = new Set(m.pins.map((p) => p.key));
  for (const [domain, s] of allowed) {
    if (exact.has(domain) || (!domain.startsWith(".") && pinFor(m.pins, domain))) continue;
    r.error(
      s,
      1,
      `"${domain}" may relay but has no line in ${file("tenant_pins")}: ` +
        "any tenant on Exchange Online's shared ranges could send as it",
      `add "${domain} enforce dkim=${domain.replace(/^\./, "")}" (or mark it "unpinned", docs/tenant-pinning.md "Tenant pinning")`,
    );
  }
  const covers = (p: TenantPin, d: string) => p.key === d || (p.key.startsWith(".") && d.endsWith(p.key));
  for (const p of m.pins) {
    if ([...allowed.keys()].some((d) => covers(p, d))) continue;
    r.error(
      p,
      1,
      `"${p.key}" is pinned but ${file("allowed_senders")} does not allow it, so the pin never applies`,
      `add "${p.key} OK" to ${file("allowed_senders")} or remove this line`,
    );
  }
}

/** A calendar line for a domain translate_domains never rewrites changes nothing. */
function calendarCheck(m: Omit<RelayMaps, "warnings">, file: FileName, r: Report): void {
  const translated = new Set(m.translations.filter((t) => t.kind !== "exception").map((t) => t.fromDomain));
  for (const c of m.calendar) {
    if (translated.has(c.domain)) continue;
    r.warn(
      c,
      1,
      `"${c.domain}" is not rewritten by ${file("translate_domains")}, so this line changes nothing`,
      `key by a domain on the left of ${file("translate_domains")}, as tenant A sends it, or remove the line`,
    );
  }
}

export function parseMaps(texts: MapTexts, opts: ValidationOptions = {}): RelayMaps {
  const r = new Report();
  const file = displayName(opts.displayDir);
  const lines = (k: MapName, norm: (s: string) => string) => {
    const ls = logicalLines(texts[k], file(k), r).filter((l) => !midLineComment(l, r));
    const dropped = duplicates(
      ls,
      norm,
      r,
      k === "allow_relay_by_ip" ? "network" : "key: keys are case-insensitive",
    );
    return ls.filter((l) => !dropped.has(l));
  };
  const lower = (s: string) => s.toLowerCase();
  const translations = parseTranslations(lines("translate_domains", lower), r);
  const allowedSenders = parseAllowedSenders(lines("allowed_senders", lower), r);
  const { relayhosts, tenants } = parseRelayhosts(lines("per_sender_relayhosts", lower), r);
  const clientRanges = parseClientRanges(lines("allow_relay_by_ip", cidrKey), r, {
    widestV4: opts.widestV4 ?? DEFAULT_WIDEST.v4,
    widestV6: opts.widestV6 ?? DEFAULT_WIDEST.v6,
  });
  const pins = parseTenantPins(lines("tenant_pins", lower), r);
  const calendar = parseCalendarRules(lines("calendar_addresses", lower), r);
  const empty = (k: MapName, what: string, hint: string) => {
    if (!r.problems.some((p) => p.file === file(k))) r.error({ file: file(k), line: 1 }, 1, what, hint);
  };
  if (clientRanges.length === 0)
    empty(
      "allow_relay_by_ip",
      "no client range is allowed to relay",
      "list tenant A's outbound ranges, e.g. 192.0.2.0/24 OK",
    );
  if (translations.length === 0)
    empty(
      "translate_domains",
      "no translation: the relay would rewrite nothing",
      "add e.g. @old.example @new.example",
    );
  if (allowedSenders.length === 0)
    empty(
      "allowed_senders",
      "no allowed sender: the relay would refuse everything",
      "add e.g. old.example OK",
    );
  if (relayhosts.length === 0)
    empty(
      "per_sender_relayhosts",
      "no next hop: nothing could reach a tenant",
      "add e.g. @new.example [new-example.mail.protection.outlook.com]",
    );
  const model = { translations, allowedSenders, relayhosts, tenants, clientRanges, pins, calendar };
  if (r.errors === 0) {
    crossCheck(model, file, r);
    pinCheck(model, file, r);
    calendarCheck(model, file, r);
  }
  const sorted = [...r.problems].sort(
    (a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col,
  );
  if (r.errors > 0 || (opts.strict && sorted.length > 0)) {
    throw new MapValidationError(
      opts.strict ? sorted.map((p) => ({ ...p, severity: "error" as const })) : sorted,
    );
  }
  return { ...model, warnings: sorted };
}

function displayName(displayDir = "maps"): FileName {
  return (map) => `${displayDir}/${map}`;
}

/** Reads the maps from DIR; a missing file is reported like any other map problem (unless optional). */
export function readMapTexts(dir: string, displayDir?: string): MapTexts {
  const texts = {} as MapTexts;
  const file = displayName(displayDir);
  const problems: Problem[] = [];
  for (const name of MAP_NAMES) {
    try {
      texts[name] = fs.readFileSync(path.join(dir, name), "utf8");
    } catch {
      texts[name] = "";
      if (OPTIONAL_MAPS.has(name)) continue;
      problems.push({
        file: file(name),
        line: 1,
        col: 1,
        severity: "error",
        message: "map file is missing",
        hint: `create ${file(name)} in Postfix table syntax (see docs/maps.md, "Maps")`,
      });
    }
  }
  if (problems.length) throw new MapValidationError(problems);
  return texts;
}

/** Reads maps/ from disk; file names in messages are relative to the project (maps/translate_domains). */
export function loadMaps(dir: string, opts: ValidationOptions = {}): RelayMaps {
  return parseMaps(readMapTexts(dir, opts.displayDir), opts);
}
