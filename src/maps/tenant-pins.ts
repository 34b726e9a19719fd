// maps/tenant_pins: what proves that a message comes from tenant A, per allowed sender domain.
// Exchange Online's sending addresses are shared by every tenant, so the client address proves
// nothing; the pinning milter on each node checks these requirements before anything is rewritten.
import { type MapLine, type Origin, type Report, isDomain } from "./postfix-table";

export type PinMode = "enforce" | "monitor" | "unpinned";

export interface TenantPin extends Origin {
  /** "old.example", or ".old.example" for its subdomains (like access(5) in allowed_senders). */
  key: string;
  mode: PinMode;
  /** A valid DKIM signature by one of these domains, with From among its signed headers. */
  dkim: string[];
  /** X-OriginatorOrg must equal this (stamped by Exchange Online; weak on its own). */
  originatorOrg?: string;
  /** X-MS-Exchange-CrossTenant-Id must equal this tenant GUID (weak on its own). */
  tenantId?: string;
  /** This header must carry the secret value set by tenant A's transport rule. */
  secretHeader?: string;
  /** The signed Date may be at most this many hours old (bounds replay of a genuine message). */
  maxAgeHours: number;
  /** Keep tenant A's DKIM signatures after a pass (they break once From is rewritten). */
  keepSignatures: boolean;
}

/** The one header that carries the verdict; any copy arriving from outside is removed first. */
export const PIN_VERDICT_HEADER = "X-Header-Rewrite-Pin";

/**
 * Seven days: Exchange Online dates a message when the user pressed Send, so mail scheduled over a
 * weekend or sent from a device that was offline arrives with an older Date (docs/tenant-pinning.md, "Replay, and
 * what remains").
 */
export const DEFAULT_MAX_AGE_HOURS = 168;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEADER_NAME = /^[A-Za-z0-9-]{1,64}$/;
const MODES = new Set<PinMode>(["enforce", "monitor", "unpinned"]);
const HINT = "e.g. old.example enforce dkim=old.example,tenanta.onmicrosoft.com";

/** Parses one line's value; returns the pin or reports why it is not one. */
function parsePin(l: MapLine, r: Report): TenantPin | undefined {
  const key = l.key.toLowerCase();
  if (!isDomain(key.replace(/^\./, ""))) {
    r.error(
      l,
      1,
      `key "${l.key}" is not a sender domain`,
      `key by the domain as in allowed_senders, ${HINT}`,
    );
    return undefined;
  }
  const pin: TenantPin = {
    file: l.file,
    line: l.line,
    key,
    mode: "enforce",
    dkim: [],
    maxAgeHours: 0,
    keepSignatures: false,
  };
  let maxAge: number | undefined;
  let modeSeen = false;
  let col = l.valueCol;
  const bad = (token: string, message: string, hint: string) => {
    r.error(l, col, `"${token}" ${message}`, hint);
    return undefined;
  };
  for (const token of l.value.split(" ").filter(Boolean)) {
    const [name, arg] = token.includes("=")
      ? [token.slice(0, token.indexOf("=")), token.slice(token.indexOf("=") + 1)]
      : [token, undefined];
    const lname = name.toLowerCase();
    if (arg === undefined && MODES.has(lname as PinMode)) {
      if (modeSeen) return bad(token, "is a second mode", "write one of enforce, monitor or unpinned");
      pin.mode = lname as PinMode;
      modeSeen = true;
    } else if (lname === "keep-signatures" && arg === undefined) {
      pin.keepSignatures = true;
    } else if (lname === "dkim" && arg) {
      const domains = arg.toLowerCase().split(",");
      const wrong = domains.find((d) => !isDomain(d));
      if (wrong !== undefined)
        return bad(
          token,
          `lists "${wrong}", which is not a domain`,
          "list the d= domains, comma-separated, no spaces",
        );
      pin.dkim = domains;
    } else if (lname === "originator-org" && arg) {
      if (!isDomain(arg.toLowerCase()))
        return bad(token, "is not a domain", "write tenant A's domain as X-OriginatorOrg shows it");
      pin.originatorOrg = arg.toLowerCase();
    } else if (lname === "tenant-id" && arg) {
      if (!GUID.test(arg.toLowerCase()))
        return bad(
          token,
          "is not a tenant GUID",
          "write the directory (tenant) ID, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47",
        );
      pin.tenantId = arg.toLowerCase();
    } else if (lname === "secret-header" && arg) {
      if (!HEADER_NAME.test(arg))
        return bad(token, "is not a header name", "letters, digits and hyphens, e.g. X-Tenant-A-Relay-Token");
      pin.secretHeader = arg;
    } else if (lname === "max-age" && arg) {
      const m = /^(\d{1,4})([hd])$/.exec(arg);
      if (!m || Number(m[1]) === 0)
        return bad(token, "is not a duration", "write hours or days, e.g. max-age=168h or max-age=14d");
      maxAge = Number(m[1]) * (m[2] === "d" ? 24 : 1);
    } else {
      return bad(
        token,
        "is not a pin requirement",
        `use enforce|monitor|unpinned, dkim=, originator-org=, tenant-id=, secret-header=, max-age=, keep-signatures (${HINT})`,
      );
    }
    col += token.length + 1;
  }
  const requirements =
    pin.dkim.length + (pin.originatorOrg ? 1 : 0) + (pin.tenantId ? 1 : 0) + (pin.secretHeader ? 1 : 0);
  if (pin.mode === "unpinned") {
    if (requirements || maxAge || pin.keepSignatures) {
      r.error(
        l,
        l.valueCol,
        `"${l.key}" is unpinned but lists requirements`,
        "drop the requirements, or write enforce or monitor",
      );
      return undefined;
    }
    r.warn(
      l,
      l.valueCol,
      `"${l.key}" is unpinned: any Microsoft 365 tenant on the shared Exchange Online ranges can send as it through this relay`,
      `pin it, ${HINT} (docs/tenant-pinning.md, "Tenant pinning")`,
    );
    return pin;
  }
  if (pin.dkim.length === 0 && !pin.secretHeader) {
    r.error(
      l,
      l.valueCol,
      `"${l.key}" has no requirement that only tenant A can meet`,
      `add dkim= (and optionally secret-header=), ${HINT}`,
    );
    return undefined;
  }
  pin.maxAgeHours = maxAge ?? (pin.dkim.length ? DEFAULT_MAX_AGE_HOURS : 0);
  return pin;
}

export function parseTenantPins(lines: MapLine[], r: Report): TenantPin[] {
  return lines.map((l) => parsePin(l, r)).filter((p): p is TenantPin => p !== undefined);
}

/** The value column as the relay renders it back (canonical order; max-age only when not the default). */
export function pinValue(p: TenantPin): string {
  const parts: string[] = [p.mode];
  if (p.dkim.length) parts.push(`dkim=${p.dkim.join(",")}`);
  if (p.originatorOrg) parts.push(`originator-org=${p.originatorOrg}`);
  if (p.tenantId) parts.push(`tenant-id=${p.tenantId}`);
  if (p.secretHeader) parts.push(`secret-header=${p.secretHeader}`);
  if (p.mode !== "unpinned" && p.maxAgeHours !== (p.dkim.length ? DEFAULT_MAX_AGE_HOURS : 0))
    parts.push(`max-age=${p.maxAgeHours}h`);
  if (p.keepSignatures) parts.push("keep-signatures");
  return parts.join(" ");
}

/** Which pin line covers a sender domain: the domain itself, else the nearest ".parent" line. */
export function pinFor(pins: TenantPin[], domain: string): TenantPin | undefined {
  const byKey = new Map(pins.map((p) => [p.key, p]));
  if (byKey.has(domain)) return byKey.get(domain);
  const labels = domain.split(".");
  for (let i = 1; i < labels.length - 1; i++) {
    const p = byKey.get("." + labels.slice(i).join("."));
    if (p) return p;
  }
  return undefined;
}

/** Header-safe and long enough not to be guessed; no spaces, so transport rules copy it intact. */
const SECRET_SHAPE = /^[A-Za-z0-9._~+/=-]{24,200}$/;

/**
 * header-rewrite:pinSecret must exist (with a usable shape) exactly when a pin asks for a secret
 * header; checked before any node is pushed anything.
 */
export function checkPinSecret(secret: string | undefined, pins: TenantPin[]): void {
  const users = pins.filter((p) => p.secretHeader);
  const fix = 'pulumi config set --secret header-rewrite:pinSecret "$(openssl rand -base64 32)"';
  if (users.length && !secret) {
    throw new Error(
      `${users[0].file}:${users[0].line}: secret-header=${users[0].secretHeader} needs the secret ` +
        `header-rewrite:pinSecret, which is not set (hint: ${fix}, and put the same value in tenant A's transport rule)`,
    );
  }
  if (secret && !SECRET_SHAPE.test(secret)) {
    throw new Error(
      "header-rewrite:pinSecret must be 24 to 200 characters of letters, digits and ._~+/=- " +
        `(no spaces; a header value tenant A's transport rule can carry) (hint: ${fix})`,
    );
  }
}
