// THE SANDBOX OVERLAY: every way a sandbox node differs from an OVH node. Everything else a node
// gets is the production-rendered file, byte for byte. `npm start` prints this list.
import type { NodeBundle } from "../src/render/bundle";
import type { StackConfig } from "../src/config/stack-config";
import * as YAML from "yaml";
import { NETWORKS, type SandboxNode, gatewayOf } from "./topology";

export const OVERLAY_DESCRIPTION = [
  "config: deploySshPublicKey = the sandbox's own deploy key (sandbox/keys), not the stack's",
  "SSH host keys: made by ssh-keygen (sandbox/host-keys.ts) where the program's @pulumi/tls makes them;",
  "  the same user-data delivers them, and the deployer pins them in its known_hosts as remote.Command's hostKey",
  "config: monitoringCidrs = the sandbox router (203.0.113.1/32), where the metrics tests scrape from",
  "config: acmeServer = Pebble in the sandbox (https://acme.sandbox.example:14000/dir), not Let's Encrypt",
  "config: acmeDnsPropagationSeconds = 1 (the stand-in name servers answer at once; OVH's need the default minute)",
  "secret acmeDnsOvhCredentials: a key the OVH API stand-in accepts (SANDBOX_DNS_CREDENTIALS), for the",
  "  committed stacks' tenantCertificates",
  "DNS: tenant A's and the impostor's DKIM public keys are the sandbox's own (sandbox/dkim.ts), not Microsoft's",
  "node /etc/ssl/certs/ca-certificates.crt: the system bundle + the sandbox CA (signs the tenant sinks and Pebble's API)",
  "server: the image's Debian release as a root filesystem built by mmdebstrap from the cloud image's packages",
  "  and the user-data's (sandbox/image.ts), booted with systemd under systemd-nspawn instead of a VM",
  "user-data: package_update, package_upgrade and packages dropped (the image holds those packages already;",
  "  a node cannot reach Debian's mirror)",
  "datasource: a NoCloud seed instead of OpenStack's metadata service: instance-id and host name, and",
  "  the port's IPv4 statically where OVH hands it out by DHCP (the sandbox has no DHCP server)",
  "Ext-Net: the port's subnets list the sandbox DNS (dnsmasq in the wan namespace) as resolver",
  "OVH API and name servers for the tenants' domains: a stand-in (sandbox/ovh-api.ts) behind eu.api.ovh.com",
  "node /etc/systemd/network/10-sandbox-keep-mac.link: udev changes no MAC (in the container /sys lists this",
  "  machine's devices, not the node's, and udev would give the port's veth a generated MAC; a VM's NIC keeps it)",
  "under scripts/test-future.sh only: libfaketime moves the node's clock (sandbox/nodes.ts, startNode)",
  "node /etc/chrony/sources.d/sandbox.sources: chrony follows the sandbox's time server (sandbox/ntp-server.py,",
  "  on the DNS server's address), polled every 2-4 s, instead of Debian's pool; a test can skew it",
  "node /etc/systemd/system/chrony.service.d/10-sandbox.conf: chronyd -x, which measures the clock without",
  "  setting it (a container shares this machine's clock and may not set it), and so starts without CAP_SYS_TIME",
];

/** The OVH API key every sandbox deploy gets: the stand-in (sandbox/ovh-api.ts) checks the signature only. */
export const SANDBOX_DNS_CREDENTIALS = {
  endpoint: "ovh-eu",
  applicationKey: "sandbox-application-key",
  applicationSecret: "sandbox-application-secret",
  consumerKey: "sandbox-consumer-key",
};

/** Where the sandbox's monitoring scrapes from: the router (wan namespace) on the nodes' network. */
export const SANDBOX_MONITORING = "203.0.113.1/32";

export function overlayConfig(cfg: StackConfig, deployPublicKey: string, acmeDirectory: string): StackConfig {
  return {
    ...cfg,
    deploySshPublicKey: deployPublicKey,
    acmeServer: acmeDirectory,
    acmeDnsPropagationSeconds: 1,
    monitoringCidrs: [SANDBOX_MONITORING],
  };
}

/** The rendered bundle as a sandbox node gets it; EDIT is for tests that break a deploy on purpose. */
export function overlayBundle(
  bundle: NodeBundle,
  edit: (files: Record<string, string>) => Record<string, string> = (f) => f,
): NodeBundle {
  return { ...bundle, files: edit({ ...bundle.files }) };
}

/** Files placed in a node's own /etc (relative to /etc) before it boots. */
export function overlayNodeEtc(
  systemBundle: string,
  sandboxCa: string,
  timeServer: string,
): Record<string, string> {
  return {
    "chrony/sources.d/sandbox.sources": `# sandbox overlay\nserver ${timeServer} iburst minpoll 1 maxpoll 2\n`,
    "systemd/system/chrony.service.d/10-sandbox.conf":
      "# sandbox overlay\n[Unit]\nConditionCapability=\n\n[Service]\nExecStart=\nExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n",
    "systemd/network/10-sandbox-keep-mac.link":
      "# sandbox overlay\n[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel\nMACAddressPolicy=none\n",
    "ssl/certs/ca-certificates.crt": systemBundle + (systemBundle.endsWith("\n") ? "" : "\n") + sandboxCa,
  };
}

/** The rendered user-data without what needs Debian's mirror; everything else byte for byte. */
export function overlayUserData(userData: string): string {
  const doc = YAML.parseDocument(userData);
  for (const key of ["package_update", "package_upgrade", "packages"]) doc.delete(key);
  return doc.toString();
}

/** The NoCloud seed that stands in for OpenStack's metadata service. */
export function nocloudSeed(n: SandboxNode, iface: string): Record<string, string> {
  return {
    "meta-data": `instance-id: sandbox-${n.name}\nlocal-hostname: ${n.name}\n`,
    "network-config": YAML.stringify({
      version: 2,
      ethernets: {
        [iface]: {
          addresses: [`${n.ipv4}/32`],
          routes: [{ to: "0.0.0.0/0", via: gatewayOf(NETWORKS.nodes.v4), "on-link": true }],
        },
      },
    }),
  };
}
