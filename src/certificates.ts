// Operator-supplied client certificates (one per target tenant) for Exchange Online's certificate
// attribution: checked before anything is pushed, because a missing intermediate only shows up as
// "550 5.7.64 TenantAttribution" at tenant B.
import * as crypto from "node:crypto";
import type { RelayMaps } from "./maps";

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
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i].checkIssued(chain[i + 1]))
      problems.push(
        `${where}: certificate ${i + 2} did not issue certificate ${i + 1} (hint: order leaf, intermediate, …)`,
      );
  }
  const last = chain[chain.length - 1];
  if (!last.checkIssued(last) && chain.length === 1) {
    problems.push(
      `${where}: only the leaf is present; Exchange Online answers 550 5.7.64 TenantAttribution ` +
        "without the intermediates (hint: use fullchain.pem)",
    );
  }
  if (new Date(chain[0].validTo).getTime() < Date.now())
    problems.push(`${where}: the certificate expired on ${chain[0].validTo}`);
  return problems;
}

export function checkClientCertificates(certs: Record<string, string>, maps: RelayMaps): void {
  const known = new Set(maps.tenants.map((t) => t.id));
  const problems: string[] = [];
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
