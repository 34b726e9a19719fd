// THE SANDBOX OVERLAY: every way a sandbox node differs from an OVH node. Everything else a node
// gets is the production-rendered file, byte for byte. `npm start` prints this list.
import type { NodeBundle } from "../src/bundle";
import type { StackConfig } from "../src/config";
import type { StepId } from "../src/deploy";
import type { Topology } from "./topology";

export const OVERLAY_DESCRIPTION = [
  "config: deploySshPublicKey = the sandbox's own deploy key (sandbox/keys), not the stack's",
  "config: acmeServer = Pebble in the sandbox (https://acme.sandbox.example:14000/dir), not Let's Encrypt",
  "main.cf: + `maillog_file = /var/log/postfix.log` (a namespace has no syslog)",
  "node /etc/resolv.conf: the sandbox DNS (dnsmasq in the wan namespace) instead of OVH's resolvers",
  "DNS: tenant A's and the impostor's DKIM public keys are the sandbox's own (sandbox/dkim.ts), not Microsoft's",
  "node /etc/ssl/certs/ca-certificates.crt: the system bundle + the sandbox CA (signs the tenant sinks and Pebble's API)",
  "skipped step: cloud-init wait (no cloud-init runs in a namespace; its write_files, SSH keys and",
  "  network commands are applied by sandbox/nodes.ts, node-boot.sh and node-init.sh)",
];

/** Steps of deploySteps() that the sandbox runs over SSH, in order. */
export const SANDBOX_STEPS: readonly StepId[] = [
  "certificate",
  "client-certificates",
  "pin-secret",
  "postfix",
];

const MAILLOG_LINE = "\n# sandbox overlay: a namespace has no syslog\nmaillog_file = /var/log/postfix.log\n";

export function overlayConfig(cfg: StackConfig, deployPublicKey: string, acmeDirectory: string): StackConfig {
  return { ...cfg, deploySshPublicKey: deployPublicKey, acmeServer: acmeDirectory };
}

/** The rendered bundle as a sandbox node gets it; EDIT is for tests that break a deploy on purpose. */
export function overlayBundle(
  bundle: NodeBundle,
  edit: (files: Record<string, string>) => Record<string, string> = (f) => f,
): NodeBundle {
  return { ...bundle, files: edit({ ...bundle.files, "main.cf": bundle.files["main.cf"] + MAILLOG_LINE }) };
}

/** Files placed in a node's own /etc (relative to /etc) before it boots. */
export function overlayNodeEtc(t: Topology, systemBundle: string, sandboxCa: string): Record<string, string> {
  return {
    "resolv.conf": `# sandbox overlay\nnameserver ${t.dns.ipv4}\nnameserver ${t.dns.ipv6}\n`,
    "ssl/certs/ca-certificates.crt": systemBundle + (systemBundle.endsWith("\n") ? "" : "\n") + sandboxCa,
  };
}
