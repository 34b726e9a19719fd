// header-rewrite: maps/ + stack config → validate → render → deploy scripts → cloud resources.
import * as pulumi from "@pulumi/pulumi";
import { configFromPulumi, existingServers, serviceFqdn } from "./src/config/stack-config";
import { validatedProject } from "./src/plan";
import { createRegion } from "./src/cloud/region";
import { RelayNode } from "./src/cloud/relay-node";
import type { DnsOvhCredentials } from "./src/deploy/steps";
import { FORCE_RELEASE_ENV, releaseId, rolloutRefusal } from "./src/deploy/region-gate";

const stack = pulumi.getStack();

// 1. Validate everything before a single resource is registered.
const cfg = configFromPulumi((ns) => new pulumi.Config(ns), stack, Object.keys(pulumi.runtime.allConfig()));
const { maps, warnings } = validatedProject(stack, cfg, pulumi.runtime.allConfig(), `Pulumi.${stack}.yaml`);
for (const w of warnings ?? []) pulumi.log.warn(w);
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

// 2. The release this run rolls out; a stack with rolloutAfter takes only what that stack has run.
const thisRelease = releaseId(maps);
const refusal: pulumi.Output<string | undefined> = cfg.rolloutAfter
  ? new pulumi.StackReference(
      cfg.rolloutAfter.includes("/")
        ? cfg.rolloutAfter
        : `${pulumi.getOrganization()}/${pulumi.getProject()}/${cfg.rolloutAfter}`,
    )
      .getOutput("release")
      .apply((ran: string | undefined) => {
        const why = rolloutRefusal({
          stack,
          after: cfg.rolloutAfter,
          release: thisRelease,
          ran,
          forced: process.env[FORCE_RELEASE_ENV],
        });
        if (why) pulumi.log.warn(`the Postfix steps of ${stack} will refuse: ${why}`);
        return why;
      })
  : pulumi.output(undefined);

// 3. Regional resources, then the relay nodes one after the other: each node's Postfix change
// waits for the node before it to pass its post-deploy check (render + deploy happen inside).
// (Servers that exist already bring their own network and firewall: docs/configuration.md, "Servers that exist already".)
const region = existingServers(cfg) ? undefined : createRegion(stack, cfg, maps);
const nodes: RelayNode[] = [];
for (const name of cfg.nodes) {
  const after = nodes.at(-1)?.verify;
  nodes.push(new RelayNode(name, { stack, cfg, maps, region, deployPrivateKey, secrets, after, refusal }));
}

// 4. What operators need next: addresses, names, and the smart hosts for the M365 connector.
export const nodeAddresses = Object.fromEntries(
  nodes.map((n) => [n.fqdn.split(".")[0], { fqdn: n.fqdn, ipv4: n.ipv4, ipv6: n.ipv6 }]),
);
// Each server's pinned SSH host key (public half): admins' known_hosts and `npm run status` use it.
export const sshHostKeys = Object.fromEntries(
  nodes.map((n) => [n.fqdn.split(".")[0], n.hostKey.apply((k) => k.trim())]),
);
export const serviceName = serviceFqdn(cfg);
export const smartHosts = nodes.map((n) => n.fqdn);
export const postfixBundles = Object.fromEntries(
  nodes.map((n) => [n.fqdn, n.bundleHash.apply((h) => h.slice(0, 12))]),
);
// Which tenants get an operator certificate (ids only): `npm run status` renders the same bundles.
export const clientCertificateTenants = pulumi.unsecret(
  secrets.apply((s) => Object.keys(s.clientCertificates).sort()),
);
// Set once every node passed its post-deploy check with this release: what rolloutAfter reads.
export const release = pulumi.all(nodes.map((n) => n.verify.stdout)).apply(() => thisRelease);
