// The contract between render and deploy: render returns a NodeBundle, deploy ships it to a node
// as the steps under node/steps/ with the bundle's facts.
import * as crypto from "node:crypto";
import type { NodeIdentity } from "../config/stack-config";

/** A table Postfix reads as cdb: the deploy builds it with postmap and checks it lookup by lookup. */
interface IndexedMap {
  name: string;
  /** Key and value of every row, exactly as rendered. */
  rows: [string, string][];
}

export interface NodeBundle {
  node: NodeIdentity;
  /** Postfix files by name: main.cf, master.cf and the tables. */
  files: Record<string, string>;
  indexedMaps: IndexedMap[];
  /** Each tenant's next hop exactly as Postfix dials it ("[host]" or "[host]:port"), by tenant id. */
  tenantNexthops: Record<string, string>;
  /**
   * Client certificate files that master.cf names (smtp_tls_chain_files, comma-separated), by tenant
   * id: a supplied bundle (client-certificates step) or an obtained key and chain (certificate step).
   */
  clientCertificates: Record<string, string>;
  /** The node certificate files main.cf names (installed by the certificate step). */
  tls: { keyFile: string; chainFile: string };
  /**
   * How the node obtains tenant certificates (tenantCertificates): certbot's OVH plugin, or lego
   * where the release does not package it (src/config/images.ts). Decided once, here.
   */
  tenantCertTool: "certbot" | "lego";
  /**
   * What the node runs, as the files under node/ (by path relative to it): the deploy steps, their
   * shell library, the milter and status collector, systemd units, installed programs.
   */
  nodeFiles: Record<string, string>;
}

/** Content hash of a set of files, independent of object key order. */
export function bundleHash(files: Record<string, string>): string {
  const h = crypto.createHash("sha256");
  for (const name of Object.keys(files).sort()) h.update(`${name}\0${files[name]}\0`);
  return h.digest("hex");
}
