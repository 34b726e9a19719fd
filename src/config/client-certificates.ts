// Operator-supplied client certificates (one per target tenant) for Exchange Online's certificate
// attribution: checked before anything is pushed, because a missing intermediate only shows up as
// "550 5.7.64 TenantAttribution" at tenant B.
import * as crypto from "node:crypto";
import type { RelayMaps } from "../maps/relay-maps";
import type { StackConfig } from "./stack-config";

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

/** Checks one PEM bundle (private key + leaf + intermediates); returns the problems found. */
export function checkClientBundle(tenantId: string, pem: string): string[] {
  const where = `header-rewrite:clientCertificates.${tenantId}`;
  const blocks = [...pem.matchAll(BLOCK)].map((m) => ({ type: m[1], text: m[0] }));
  const keys = blocks.filter((b) => b.type.endsWith("PRIVATE KEY"));
  const certs = blocks.filter((b) => b.type === "CERTIFICATE");
  if (keys.length !== 1)
    return [
      `${where}: expected exactly one private key, found ${keys.length} (hint: cat key.pem fullchain.pem)`,
    ];
  if (certs.length === 0) return [`${where}: no certificate (hint: cat key.pem fullchain.pem)`];
  let key: crypto.KeyObject;
  let chain: crypto.X509Certificate[];
  try {
    key = crypto.createPrivateKey(keys[0].text);
    chain = certs.map((c) => new crypto.X509Certificate(c.text));
  } catch (e) {
    return [`${where}: unreadable PEM: ${(e as Error).message}`];
  }
  const problems: string[] = [];
  if (!chain[0].checkPrivateKey(key))
    problems.push(
      `${where}: the private key does not belong to the first certificate (hint: put the leaf first)`,
    );
  problems.push(...chainOrder(where, chain));
  const last = chain[chain.length - 1];
  if (chain.length === 1 && last.checkIssued(last) && last.verify(last.publicKey)) {
    problems.push(
      `${where}: the certificate is self-signed; Exchange Online attributes mail only by a certificate from a ` +
        "public CA whose name is an accepted domain of the tenant (MC1226222) (hint: have a public CA issue it, " +
        "or let the nodes obtain one: header-rewrite:tenantCertificates)",
    );
  } else if (!last.checkIssued(last) && chain.length === 1) {
    problems.push(
      `${where}: only the leaf is present; Exchange Online answers 550 5.7.64 TenantAttribution ` +
        "without the intermediates (hint: use fullchain.pem)",
    );
  }
  chain.forEach((c, i) => {
    const which = i === 0 ? "the certificate" : `certificate ${i + 1} of the chain`;
    if (new Date(c.validTo).getTime() < Date.now()) {
      problems.push(`${where}: ${which} expired on ${c.validTo} (hint: renew it and set the new bundle)`);
    } else if (new Date(c.validFrom).getTime() > Date.now()) {
      problems.push(
        `${where}: ${which} is not valid before ${c.validFrom} (hint: check the issuing CA's clock)`,
      );
    }
  });
  return problems;
}

/** Each certificate must be issued by the next; a bundle holding the right certificates in the wrong order says so. */
function chainOrder(where: string, chain: crypto.X509Certificate[]): string[] {
  const broken = chain.slice(0, -1).flatMap((c, i) => (c.checkIssued(chain[i + 1]) ? [] : [i]));
  if (broken.length === 0) return [];
  // Follow issuers from the leaf: if that walk visits every certificate, only the order is wrong.
  const order = [0];
  for (let at = 0; ;) {
    const next = chain.findIndex((c, j) => !order.includes(j) && chain[at].checkIssued(c));
    if (next < 0) break;
    order.push(next);
    at = next;
  }
  if (order.length === chain.length) {
    return [
      `${where}: the certificates are out of order ` +
        `(hint: put them as leaf, then each one's issuer: positions ${order.map((k) => k + 1).join(", ")})`,
    ];
  }
  return broken.map(
    (i) =>
      `${where}: certificate ${i + 2} did not issue certificate ${i + 1} ` +
      "(hint: the bundle holds a certificate of another chain; use the CA's fullchain.pem)",
  );
}

export function checkClientCertificates(
  certs: Record<string, string>,
  maps: RelayMaps,
  obtained: Record<string, string> = {},
): void {
  const known = new Set(maps.tenants.map((t) => t.id));
  const problems: string[] = [];
  for (const id of Object.keys(obtained)) {
    if (!known.has(id))
      problems.push(
        `header-rewrite:tenantCertificates.${id}: no such tenant in maps/per_sender_relayhosts ` +
          `(hint: tenants are ${[...known].join(", ")})`,
      );
    else if (certs[id])
      problems.push(
        `tenant ${id} has both a supplied certificate (header-rewrite:clientCertificates.${id}) and an obtained one ` +
          `(header-rewrite:tenantCertificates.${id}: ${obtained[id]}): keep one`,
      );
  }
  for (const [id, pem] of Object.entries(certs)) {
    if (!known.has(id)) {
      problems.push(
        `header-rewrite:clientCertificates.${id}: no such tenant in maps/per_sender_relayhosts ` +
          `(hint: tenants are ${[...known].join(", ")})`,
      );
      continue;
    }
    problems.push(...checkClientBundle(id, pem));
  }
  if (problems.length)
    throw new Error(
      `invalid client certificates; nothing was deployed:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
}

/**
 * Tenants that would present one certificate name: each without a certificate of its own presents
 * the node certificate (*.<dnsZone>). A name can be an accepted domain of one tenant only, and
 * Exchange Online attributes relayed mail by it first (MC1226222); a tenant with Reject Direct Send
 * on refuses what it does not attribute by certificate (550 5.7.68). A warning, not a refusal: the
 * others still attribute by the envelope sender, which is their own domain, unless they turn Reject
 * Direct Send on. SUPPLIED: the tenants with an operator certificate, undefined where the secrets
 * cannot be read (npm run validate).
 */
export function sharedCertificateWarning(
  cfg: StackConfig,
  maps: RelayMaps,
  supplied: string[] | undefined,
): string | undefined {
  const why =
    ": a certificate name can be an accepted domain of one tenant only, so at most one of them attributes the " +
    "relays' mail by it (MC1226222), and one with Reject Direct Send on refuses the rest (550 5.7.68) " +
    '(hint: a certificate per tenant: header-rewrite:tenantCertificates; docs/microsoft-365.md, "Certificates and ' +
    'Microsoft 365 attribution")';
  const byName = new Map<string, string[]>();
  for (const [id, name] of Object.entries(cfg.tenantCertificates))
    byName.set(name.toLowerCase(), [...(byName.get(name.toLowerCase()) ?? []), id]);
  const twice = [...byName].find(([, ids]) => ids.length > 1);
  if (twice)
    return `header-rewrite:tenantCertificates gives tenants ${twice[1].sort().join(", ")} one name (${twice[0]})${why}`;
  const own = new Set([...Object.keys(cfg.tenantCertificates), ...(supplied ?? [])]);
  const sharing = maps.tenants.map((t) => t.id).filter((id) => !own.has(id));
  if (sharing.length < 2) return undefined;
  return (
    `tenants ${sharing.join(", ")} would all be presented the node certificate (*.${cfg.dnsZone})` +
    (supplied === undefined ? " unless header-rewrite:clientCertificates gives them their own" : "") +
    why
  );
}
