// Reads the operator's Postfix maps (maps/*) into a typed model. Everything downstream renders from
// this model; nothing else re-parses the files.
import * as fs from "node:fs";
import * as path from "node:path";
import * as ipaddr from "ipaddr.js";

export const MAP_FILES = {
  translations: "translate_domains",
  allowedSenders: "allowed_senders",
  relayhosts: "per_sender_relayhosts",
  clientRanges: "allow_relay_by_ip",
} as const;

/** Where a value came from, for messages in the compiler style `file:line:col`. */
export interface Origin {
  file: string;
  line: number;
}

/** One logical line of a Postfix table: key, value, and where the key stands. */
export interface MapLine extends Origin {
  key: string;
  value: string;
}

export interface Problem extends Origin {
  col: number;
  severity: "error" | "warning";
  message: string;
  hint: string;
}

export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.severity}: ${p.message} (hint: ${p.hint})`;
}

export class MapValidationError extends Error {
  constructor(readonly problems: Problem[]) {
    super(
      `maps/ has ${problems.filter((p) => p.severity === "error").length} error(s); nothing was deployed:\n` +
        problems.map(formatProblem).join("\n"),
    );
    this.name = "MapValidationError";
  }
}

export type TranslationKind = "domain" | "address" | "exception";

/** sender_canonical_maps entry: the sender as tenant A sends it → the sender tenant B sees. */
export interface Translation extends Origin {
  kind: TranslationKind;
  from: string; // "@old.example" or "alice@old.example" (lower case)
  to: string; // "@new.example" or "a.smith@new.example" (lower case)
  fromDomain: string;
  toDomain: string;
}

/** access(5) entry keyed by the sender *before* rewriting. */
export interface AllowedSender extends Origin {
  key: string; // "old.example", "alice@old.example", "alice@" or "<>"
  action: string; // "OK" or a reject action
}

/** One Microsoft 365 tenant as the relay sees it: a next hop (the tenant's MX host). */
export interface Tenant {
  id: string; // short name for transports and files, derived from the host
  nexthop: string; // exactly as written in the map: "[host]" or "[host]:port"
  host: string;
  port: number;
}

/** sender_dependent_relayhost_maps entry keyed by the sender *after* rewriting. */
export interface Relayhost extends Origin {
  key: string; // "@new.example" or "ceo@old.example" or "<>"
  nexthop: string;
  tenantId: string;
}

/** A client range allowed to relay (mynetworks); also opens TCP 25 in the security group. */
export interface ClientRange extends Origin {
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
  /** Warnings that do not stop a deploy. */
  warnings: Problem[];
}

/**
 * Splits a Postfix table into logical lines the way Postfix reads them: `#` starts a comment only as
 * the first non-blank character, blank lines are ignored, a line starting with whitespace continues
 * the previous logical line.
 */
export function logicalLines(text: string, file: string, problems: Problem[]): MapLine[] {
  const out: MapLine[] = [];
  let current: { start: number; text: string } | undefined;
  const flush = () => {
    if (!current) return;
    const t = current.text.trim();
    const m = /^(\S+)(?:\s+([\s\S]*))?$/.exec(t);
    if (m) out.push({ file, line: current.start, key: m[1], value: (m[2] ?? "").replace(/\s+/g, " ").trim() });
    current = undefined;
  };
  const lines = text.split("\n");
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    const n = i + 1;
    if (/^\s*(#|$)/.test(line)) {
      return; // comment or blank: does not end a logical line in Postfix either
    }
    if (/^\s/.test(line)) {
      if (!current) {
        problems.push({
          file, line: n, col: 1, severity: "error",
          message: "continuation line (starts with whitespace) without a preceding entry",
          hint: "remove the leading whitespace or join it to the entry above",
        });
        return;
      }
      current.text += " " + line.trim();
      return;
    }
    flush();
    current = { start: n, text: line };
  });
  flush();
  return out;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export function isDomain(d: string): boolean {
  if (d.length > 253 || !d.includes(".")) return false;
  return d.split(".").every((l) => LABEL.test(l));
}

// RFC 5321 dot-atom local part; quoted local parts are not something a tenant sends from.
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

export function splitAddress(a: string): { local: string; domain: string } | undefined {
  const at = a.lastIndexOf("@");
  if (at < 0) return undefined;
  return { local: a.slice(0, at), domain: a.slice(at + 1) };
}

function err(problems: Problem[], o: Origin, message: string, hint: string, col = 1): void {
  problems.push({ file: o.file, line: o.line, col, severity: "error", message, hint });
}

function parseTranslations(lines: MapLine[], problems: Problem[]): Translation[] {
  const out: Translation[] = [];
  for (const l of lines) {
    const from = l.key.toLowerCase();
    const to = l.value.toLowerCase();
    const valueCol = l.key.length + 2;
    if (!to || /\s/.test(to)) {
      err(problems, l, `expected exactly one replacement address after "${l.key}"`,
        "write `@old.example @new.example` or `user@old.example user@new.example`", valueCol);
      continue;
    }
    const f = splitAddress(from);
    const t = splitAddress(to);
    if (!f || (f.local === "" && !isDomain(f.domain)) || (f.local !== "" && (!LOCAL_PART.test(f.local) || !isDomain(f.domain)))) {
      err(problems, l, `"${l.key}" is not a sender canonical key this relay can use`,
        "use `@old.example` for a whole domain or `user@old.example` for one address (a bare word means a local user)");
      continue;
    }
    if (!t || !isDomain(t.domain) || (t.local !== "" && !LOCAL_PART.test(t.local))) {
      err(problems, l, `"${l.value}" is not a valid replacement address`,
        "use `@new.example` (keeps the local part) or `user@new.example`", valueCol);
      continue;
    }
    if (f.local === "" && t.local !== "") {
      err(problems, l, `a domain key "${l.key}" must map to a domain ("@${t.domain}"), not to one address`,
        "a whole-domain rewrite keeps the local part: write `@old.example @new.example`", valueCol);
      continue;
    }
    const kind: TranslationKind = from === to ? "exception" : f.local === "" ? "domain" : "address";
    out.push({ file: l.file, line: l.line, kind, from, to, fromDomain: f.domain, toDomain: t.domain });
  }
  return out;
}

const ACCESS_ACTION = /^(OK|REJECT|DISCARD|[45]\d\d)(\s.*)?$/i;

function parseAllowedSenders(lines: MapLine[], problems: Problem[]): AllowedSender[] {
  const out: AllowedSender[] = [];
  for (const l of lines) {
    const key = l.key.toLowerCase();
    if (key.startsWith("@")) {
      err(problems, l, `"${l.key}" is not an access(5) key and never matches`,
        `write the bare domain "${key.slice(1)}" to allow every sender of that domain`);
      continue;
    }
    const a = splitAddress(key);
    const ok = key === "<>" || (a ? (a.local === "" || LOCAL_PART.test(a.local)) && (a.domain === "" ? a.local !== "" : isDomain(a.domain)) : isDomain(key));
    if (!ok) {
      err(problems, l, `"${l.key}" is not a sender this relay can match`,
        "use `old.example OK`, `user@old.example OK`, `user@ OK` or `<> OK`");
      continue;
    }
    if (!ACCESS_ACTION.test(l.value)) {
      err(problems, l, `"${l.value || "(nothing)"}" is not an access(5) action for "${l.key}"`,
        "write OK to allow, or REJECT / a 5xx code with text to refuse", l.key.length + 2);
      continue;
    }
    out.push({ file: l.file, line: l.line, key, action: l.value.replace(/^ok$/i, "OK") });
  }
  return out;
}

const NEXTHOP = /^\[([a-z0-9.-]+)\](?::(\d{1,5}))?$/;

/** A stable short id for a tenant next hop, used for transport names and file names. */
export function tenantId(host: string): string {
  return host.replace(/\.mail\.protection\.outlook\.com$/, "").replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "");
}

function parseRelayhosts(lines: MapLine[], problems: Problem[]): { relayhosts: Relayhost[]; tenants: Tenant[] } {
  const relayhosts: Relayhost[] = [];
  const tenants = new Map<string, Tenant>();
  for (const l of lines) {
    const key = l.key.toLowerCase();
    const a = splitAddress(key);
    const keyOk = key === "<>" || (a !== undefined && isDomain(a.domain) && (a.local === "" || LOCAL_PART.test(a.local)));
    if (!keyOk) {
      err(problems, l, `"${l.key}" is not a sender key for sender_dependent_relayhost_maps`,
        "key by the NEW sender after rewriting: `@new.example` or `user@new.example`");
      continue;
    }
    const value = l.value.toLowerCase();
    const m = NEXTHOP.exec(value);
    if (!m || !isDomain(m[1]) || (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535))) {
      err(problems, l, `"${l.value || "(nothing)"}" is not a bracketed next hop`,
        "write the tenant's MX host in brackets, e.g. `[new-example.mail.protection.outlook.com]` (brackets: no MX lookup)",
        l.key.length + 2);
      continue;
    }
    const id = tenantId(m[1]) + (m[2] && m[2] !== "25" ? `_${m[2]}` : "");
    if (!tenants.has(value)) tenants.set(value, { id, nexthop: value, host: m[1], port: m[2] ? Number(m[2]) : 25 });
    relayhosts.push({ file: l.file, line: l.line, key, nexthop: value, tenantId: id });
  }
  return { relayhosts, tenants: [...tenants.values()].sort((x, y) => x.id.localeCompare(y.id)) };
}

function parseClientRanges(lines: MapLine[], problems: Problem[]): ClientRange[] {
  const out: ClientRange[] = [];
  for (const l of lines) {
    let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      parsed = ipaddr.parseCIDR(l.key.replace(/^\[(.*)\](\/\d+)$/, "$1$2"));
    } catch {
      err(problems, l, `"${l.key}" is not a network in CIDR form`, "write e.g. `192.0.2.0/24 OK` or `2001:db8::/32 OK`");
      continue;
    }
    const [addr, bits] = parsed;
    const family = addr.kind() === "ipv4" ? 4 : 6;
    const base = (family === 4 ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(`${addr.toString()}/${bits}`);
    if (base.toString() !== addr.toString()) {
      err(problems, l, `"${l.key}" has host bits set`, `write the network address: ${base.toString()}/${bits}`);
      continue;
    }
    if (bits === 0) {
      err(problems, l, `"${l.key}" allows the whole Internet to relay (open relay)`,
        "list only your clients' ranges, e.g. Exchange Online's published outbound ranges");
      continue;
    }
    out.push({ file: l.file, line: l.line, cidr: `${base.toString()}/${bits}`, family, action: l.value || "OK" });
  }
  return out;
}

/** Cross-map rules: what Postfix would accept but what would send mail the wrong way. */
function crossCheck(m: Omit<RelayMaps, "warnings">, files: Record<keyof typeof MAP_FILES, string>, problems: Problem[]): void {
  const exact = new Set(m.translations.map((t) => t.from));
  const domainRewrite = new Map(m.translations.filter((t) => t.kind === "domain").map((t) => [t.fromDomain, t]));
  // After rewriting, which sender does the relayhost lookup see? (address key first, then @domain)
  const relayKeys = new Set(m.relayhosts.map((r) => r.key));
  const hasNexthop = (addr: string) => {
    const a = splitAddress(addr)!;
    return relayKeys.has(addr) || relayKeys.has(`@${a.domain}`);
  };
  for (const t of m.translations) {
    if (!hasNexthop(t.to)) {
      err(problems, t, `"${t.from}" is rewritten to "${t.to}", but ${files.relayhosts} has no next hop for it`,
        `add \`@${t.toDomain} [tenant-mx-host]\` (or \`${t.to} [host]\`) to ${files.relayhosts}; without it mail goes straight to the recipient's MX`);
    }
  }
  for (const s of m.allowedSenders) {
    if (s.action !== "OK") continue;
    if (s.key === "<>") {
      if (!relayKeys.has("<>")) {
        err(problems, s, "the null sender <> is allowed but has no next hop",
          `add \`<> [tenant-mx-host]\` to ${files.relayhosts}, or remove the line so bounces are refused (the default)`);
      }
      continue;
    }
    const a = splitAddress(s.key);
    const domain = a ? a.domain : s.key;
    if (domain === "") continue; // "user@" keys: any domain; covered by the domain lines
    const covered = a && a.local !== "" ? exact.has(s.key) || domainRewrite.has(domain) : domainRewrite.has(domain);
    if (!covered) {
      err(problems, s, `allowed sender "${s.key}" has no translation in ${files.translations}`,
        `add \`@${domain} @new-domain\` to ${files.translations} (or map the address to itself as an exception)`);
    }
  }
}

export function parseMaps(texts: Record<keyof typeof MAP_FILES, string>, files: Record<keyof typeof MAP_FILES, string>): RelayMaps {
  const problems: Problem[] = [];
  const lines = (k: keyof typeof MAP_FILES) => logicalLines(texts[k], files[k], problems);
  const translations = parseTranslations(lines("translations"), problems);
  const allowedSenders = parseAllowedSenders(lines("allowedSenders"), problems);
  const { relayhosts, tenants } = parseRelayhosts(lines("relayhosts"), problems);
  const clientRanges = parseClientRanges(lines("clientRanges"), problems);
  if (clientRanges.length === 0 && !problems.some((p) => p.file === files.clientRanges)) {
    problems.push({ file: files.clientRanges, line: 1, col: 1, severity: "error",
      message: "no client range is allowed to relay", hint: "list tenant A's outbound ranges, e.g. `192.0.2.0/24 OK`" });
  }
  const model = { translations, allowedSenders, relayhosts, tenants, clientRanges };
  if (!problems.some((p) => p.severity === "error")) crossCheck(model, files, problems);
  if (problems.some((p) => p.severity === "error")) throw new MapValidationError(problems);
  return { ...model, warnings: problems };
}

/** Reads maps/ from disk; file names in messages are relative to the project (maps/translate_domains). */
export function loadMaps(dir: string, displayDir = "maps"): RelayMaps {
  const texts = {} as Record<keyof typeof MAP_FILES, string>;
  const files = {} as Record<keyof typeof MAP_FILES, string>;
  const problems: Problem[] = [];
  for (const [k, name] of Object.entries(MAP_FILES) as [keyof typeof MAP_FILES, string][]) {
    files[k] = `${displayDir}/${name}`;
    try {
      texts[k] = fs.readFileSync(path.join(dir, name), "utf8");
    } catch {
      texts[k] = "";
      problems.push({ file: files[k], line: 1, col: 1, severity: "error", message: "map file is missing",
        hint: `create ${files[k]} in Postfix table syntax (see README, "Maps")` });
    }
  }
  if (problems.length) throw new MapValidationError(problems);
  return parseMaps(texts, files);
}
