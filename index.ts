// header-rewrite: maps/ + stack config → validate → render → deploy scripts → cloud resources.
import * as pulumi from "@pulumi/pulumi";
import { configFromPulumi, serviceFqdn } from "./src/config";
import { loadMaps } from "./src/maps";
import { MAPS_DIR } from "./src/project";
import { createRegion } from "./src/cloud";
import { RelayNode } from "./src/node";
import type { DnsOvhCredentials } from "./src/deploy";

const stack = pulumi.getStack();

// 1. Validate everything before a single resource is registered.
const cfg = configFromPulumi((ns) => new pulumi.Config(ns), stack);
const maps = loadMaps(MAPS_DIR, {
  widestV4: cfg.widestClientRangeV4,
  widestV6: cfg.widestClientRangeV6,
});
const project = new pulumi.Config();
const deployPrivateKey = project.requireSecret("deploySshPrivateKey");
const secrets = pulumi.secret(
  pulumi
    .all([
      project.getSecretObject<Record<string, string>>("clientCertificates"),
      project.getSecretObject<DnsOvhCredentials>("acmeDnsOvhCredentials"),
      project.getSecret("pinSecret"),
    ])
    .apply(([clientCertificates, dnsCredentials, pinSecret]) => ({
      clientCertificates: clientCertificates ?? {},
      dnsCredentials,
      pinSecret,
    })),
);

// 2. Regional resources, then one relay node per configured name (render + deploy happen inside).
const region = createRegion(stack, cfg, maps);
const nodes = cfg.nodes.map(
  (name) => new RelayNode(name, { stack, cfg, maps, region, deployPrivateKey, secrets }),
);

// 3. What operators need next: addresses, names, and the smart hosts for the M365 connector.
export const nodeAddresses = Object.fromEntries(
  nodes.map((n) => [n.fqdn.split(".")[0], { fqdn: n.fqdn, ipv4: n.ipv4, ipv6: n.ipv6 }]),
);
export const serviceName = serviceFqdn(cfg);
export const smartHosts = nodes.map((n) => n.fqdn);
export const postfixBundles = Object.fromEntries(
  nodes.map((n) => [n.fqdn, n.bundleHash.apply((h) => h.slice(0, 12))]),
);
