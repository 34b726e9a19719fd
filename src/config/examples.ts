// The example values the committed stack files carry (documentation names, a key nobody holds).
// A copy of those files must never reach a real cloud: `pulumi preview` refuses them, listing each,
// before any resource; `npm run validate` names them as warnings (README "Running it").
import * as ipaddr from "ipaddr.js";
import { ConfigError, PROJECT } from "./stack-config";

/** Values that exist only in this repository's examples. */
const EXAMPLES: Record<string, { value: string; replace: string }> = {
  "openstack:tenantId": {
    value: "0123456789abcdef0123456789abcdef",
    replace: "your OpenStack project ID (OVH Control Panel > Public Cloud > Project settings)",
  },
  "openstack:userName": {
    value: "user-example",
    replace: "the OpenStack user you created for this project (Public Cloud > Users & Roles)",
  },
  [`${PROJECT}:deploySshPublicKey`]: {
    value:
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeaderRewriteExampleDeployKeyNotReal0000000 deploy@example.net",
    replace: "the public half of the key you set as the secret deploySshPrivateKey (ssh-keygen -t ed25519)",
  },
};

/** Names that can never be a real zone or mailbox domain (RFC 2606, RFC 6761). */
const RESERVED = /(^|\.)(example|test|invalid|localhost)$|(^|\.)example\.(com|net|org)$/i;

/** RFC 5737 and RFC 3849: addresses for documentation, never on a real network. */
const DOCUMENTATION = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"].map((c) =>
  ipaddr.parseCIDR(c),
);

/** The allowed escape, for the mocks harness only: a stack with it cannot obtain real names anyway. */
export const ALLOW_EXAMPLE_VALUES = `${PROJECT}:allowExampleValues`;

/** Every example value in CONFIG (a stack's whole configuration, key → value), as "key: why (hint)". */
export function exampleValues(config: Record<string, unknown>): string[] {
  const found: string[] = [];
  for (const [key, { value, replace }] of Object.entries(EXAMPLES)) {
    if (config[key] === value)
      found.push(`${key} is the repository's example "${value}" (hint: set ${replace})`);
  }
  const zone = config[`${PROJECT}:dnsZone`];
  if (typeof zone === "string" && RESERVED.test(zone))
    found.push(
      `${PROJECT}:dnsZone "${zone}" is a reserved example domain (RFC 2606) ` +
        "(hint: set the OVH zone the nodes' names go in)",
    );
  const email = config[`${PROJECT}:acmeEmail`];
  if (typeof email === "string" && RESERVED.test(email.split("@").pop() ?? ""))
    found.push(
      `${PROJECT}:acmeEmail "${email}" is at a reserved example domain, so certificate expiry notices go nowhere ` +
        "(hint: set a mailbox your team reads)",
    );
  const certificates = structured(config[`${PROJECT}:tenantCertificates`]);
  if (certificates && typeof certificates === "object") {
    const reserved = Object.entries(certificates).filter(
      ([, n]) => typeof n === "string" && RESERVED.test(n),
    );
    if (reserved.length)
      found.push(
        `${PROJECT}:tenantCertificates names reserved example domains ` +
          `(${reserved.map(([id, n]) => `${id}: ${n}`).join(", ")}): no CA issues a certificate for them ` +
          "(hint: per tenant, a name under that tenant's own accepted domain, in a zone at OVH; " +
          "or remove the entry and supply header-rewrite:clientCertificates)",
      );
  }
  const admin = structured(config[`${PROJECT}:adminCidrs`]);
  const documentation = (cidr: string) => {
    try {
      const [addr] = ipaddr.parseCIDR(cidr);
      return DOCUMENTATION.some(([net, bits]) => addr.kind() === net.kind() && addr.match(net, bits));
    } catch {
      return false; // the schema reports a malformed range
    }
  };
  const docs = Array.isArray(admin)
    ? admin.filter((c): c is string => typeof c === "string" && documentation(c))
    : [];
  if (docs.length)
    found.push(
      `${PROJECT}:adminCidrs holds documentation ranges (${docs.join(", ")}): nobody could reach the nodes over SSH ` +
        "(hint: list the networks you administer from, in the stack file)",
    );
  return found;
}

/** A list or map as the stack file holds it, or as the JSON string Pulumi hands the program. */
function structured(value: unknown): unknown {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return undefined; // the schema reports it
  }
}

/** The example values a deployment of CONFIG would be refused for (none where the harness allows them). */
function pendingExampleValues(config: Record<string, unknown>): string[] {
  const allowed = config[ALLOW_EXAMPLE_VALUES] === "true" || config[ALLOW_EXAMPLE_VALUES] === true;
  return allowed ? [] : exampleValues(config);
}

/** The keys of those values, for the warnings of validate and render. */
export function pendingExampleKeys(config: Record<string, unknown>): string[] {
  return pendingExampleValues(config).map((e) => e.split(" ")[0]);
}

/** Refuses a stack that still holds example values, unless the test harness allows them. */
export function checkExampleValues(config: Record<string, unknown>, source: string): void {
  const found = pendingExampleValues(config);
  if (found.length)
    throw new ConfigError(
      source,
      found,
      'still holds example values a real deployment must replace (README "Running it"); nothing was deployed',
    );
}
