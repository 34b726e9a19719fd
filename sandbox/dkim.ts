// Tenant A's DKIM key and signature for test mail: the sandbox DNS publishes the public key, the
// sender signs with dkimpy (sandbox/dkim-sign.py) like Exchange Online would, the relay verifies.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { shellQuote as q } from "../src/deploy/shell-text";
import { must, sh } from "./shell";

const SIGNER = path.join(__dirname, "dkim-sign.py");

/** A signing key as topology.json records it (clients.allowed.dkim). */
export interface DkimKey {
  domain: string;
  selector: string;
  /** The private key, PEM. */
  keyFile: string;
}

export interface DkimSignature extends DkimKey {
  /** Defaults: relaxed/relaxed and the headers Exchange Online signs. */
  canon?: string;
  headers?: string[];
  /** Adds l= (the signed body length), which Exchange Online never does. */
  length?: boolean;
}

/** What Exchange Online lists in h= (seen in its signatures): From first, Date among them. */
export const EXO_SIGNED_HEADERS = ["From", "Date", "Subject", "Message-ID", "Content-Type", "MIME-Version"];

/** Tenant A's initial domain in the committed maps (Exchange Online signs with it by default). */
export const TENANT_A_INITIAL_DOMAIN = "tenanta.onmicrosoft.com";

/**
 * How Exchange Online signs tenant A's mail from SENDER: with the sender domain's own key where DKIM
 * is enabled for it (here: the key's domain), otherwise with the tenant's initial domain.
 */
export function tenantSignature(key: DkimKey, sender: string): DkimKey {
  const domain = sender.slice(sender.lastIndexOf("@") + 1).toLowerCase();
  return domain === key.domain ? key : { ...key, domain: TENANT_A_INITIAL_DOMAIN };
}

/** Where DOMAIN's key lives in DIR (Exchange Online's first selector is "selector1"). */
export function dkimKeyIn(dir: string, domain: string, selector = "selector1"): DkimKey {
  return { domain, selector, keyFile: path.join(dir, `dkim-${domain}.pem`) };
}

/** Creates the key's RSA-2048 private key file unless it exists. */
export function createDkimKey(key: DkimKey): DkimKey {
  if (!fs.existsSync(key.keyFile)) {
    fs.mkdirSync(path.dirname(key.keyFile), { recursive: true });
    must(sh(`openssl genrsa -out ${q(key.keyFile)} 2048 2>/dev/null`), `DKIM key for ${key.domain}`);
  }
  return key;
}

/** The key record: name and TXT value, as any DNS server publishes it. */
export function dkimRecord(key: DkimKey, domain = key.domain): { name: string; value: string } {
  const der = must(
    sh(`openssl rsa -in ${q(key.keyFile)} -pubout -outform DER 2>/dev/null | base64 -w0`),
    "public key",
  );
  return { name: `${key.selector}._domainkey.${domain}`, value: `v=DKIM1; k=rsa; p=${der.stdout.trim()}` };
}

/**
 * dnsmasq options publishing these key records, the rest of their domains answered NXDOMAIN. A TXT
 * string holds at most 255 octets, so the value is split (a key value has no commas).
 */
export function dnsmasqKeys(records: { name: string; value: string }[]): string {
  const domains = [...new Set(records.map((r) => r.name.split("._domainkey.")[1]))];
  const txt = records.map(
    (r) => `--txt-record=${q(`${r.name},${(r.value.match(/.{1,255}/g) ?? []).join(",")}`)}`,
  );
  // An hour (a usual TTL for DKIM records), so the milter's cache works as it would on a node.
  return [`--local=/${domains.join("/")}/`, "--local-ttl=3600", ...txt].join(" ");
}

/** MESSAGE (CRLF lines) with a DKIM-Signature header prepended. */
export function signMessage(message: string, s: DkimSignature): string {
  const r = spawnSync(
    "/usr/bin/python3",
    [
      SIGNER,
      s.keyFile,
      s.domain,
      s.selector,
      s.canon ?? "relaxed/relaxed",
      (s.headers ?? EXO_SIGNED_HEADERS).join(","),
      ...(s.length ? ["l="] : []),
    ],
    { input: Buffer.from(message, "latin1") },
  );
  if (r.status !== 0) throw new Error(`dkim-sign.py failed: ${r.stderr.toString()}`);
  return r.stdout.toString("latin1");
}
