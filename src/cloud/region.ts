// Regional cloud resources shared by the nodes of one stack: keypair, security group, Ext-Net.
import * as pulumi from "@pulumi/pulumi";
import * as openstack from "@pulumi/openstack";
import type { StackConfig } from "../config/stack-config";
import type { RelayMaps } from "../maps/relay-maps";
import { EXPORTERS } from "../node-layout";

export const PUBLIC_NETWORK = "Ext-Net";

interface Firewall {
  cidr: string;
  family: 4 | 6;
  port: number;
  why: string;
}

function family(cidr: string): 4 | 6 {
  return cidr.includes(":") ? 6 : 4;
}

/** Every inbound rule of the security group, as data (tested directly and rendered into rules). */
export function firewallRules(cfg: StackConfig, maps: RelayMaps): Firewall[] {
  const rules: Firewall[] = [];
  for (const r of maps.clientRanges)
    rules.push({ cidr: r.cidr, family: r.family, port: 25, why: "smtp from allow-listed clients" });
  for (const c of cfg.adminCidrs)
    rules.push({ cidr: c, family: family(c), port: 22, why: "ssh from admins and the deployer" });
  for (const c of cfg.monitoringCidrs) {
    for (const e of Object.values(EXPORTERS))
      rules.push({ cidr: c, family: family(c), port: e.port, why: `prometheus scrape (${e.name})` });
  }
  if (cfg.acmeChallenge === "http-01") {
    rules.push({ cidr: "0.0.0.0/0", family: 4, port: 80, why: "ACME http-01 challenge" });
    rules.push({ cidr: "::/0", family: 6, port: 80, why: "ACME http-01 challenge" });
  }
  return rules;
}

export interface Region {
  keypair: openstack.compute.Keypair;
  securityGroup: openstack.networking.SecGroup;
  network: pulumi.Output<openstack.networking.GetNetworkResult>;
}

export function createRegion(stack: string, cfg: StackConfig, maps: RelayMaps): Region {
  const region = cfg.region;
  // Nova keypair names are unique and publicKey forces replacement (provider d.ts: "A unique name
  // for the keypair", "Changing this creates a new keypair"): the old one must go before the
  // new one (same name) is created, or Nova answers 409. Servers keep running; the name they boot
  // with is unchanged, so rotating the deploy key replaces no server.
  const keypair = new openstack.compute.Keypair(
    `deploy-${stack}`,
    { name: `header-rewrite-${stack}`, publicKey: cfg.deploySshPublicKey, region },
    { deleteBeforeReplace: true },
  );
  const securityGroup = new openstack.networking.SecGroup(`relay-${stack}`, {
    name: `header-rewrite-${stack}`,
    description: "header-rewrite relay nodes: SMTP from tenant A, SSH from admins",
    region,
  });
  const ruleName = (r: Firewall) =>
    `${stack}-tcp${r.port}-${r.cidr.replace(/[^0-9a-f]+/gi, "-").replace(/-$/, "")}`;
  for (const r of firewallRules(cfg, maps)) {
    new openstack.networking.SecGroupRule(
      ruleName(r),
      {
        direction: "ingress",
        ethertype: r.family === 4 ? "IPv4" : "IPv6",
        protocol: "tcp",
        portRangeMin: r.port,
        portRangeMax: r.port,
        remoteIpPrefix: r.cidr,
        securityGroupId: securityGroup.id,
        description: r.why,
        region,
      },
      // Every field forces a new rule ("Changing this creates a new security group rule", provider
      // docs) and Neutron refuses an identical second rule (409): delete first. The port is closed
      // for the seconds in between; senders retry.
      { parent: securityGroup, deleteBeforeReplace: true },
    );
  }
  // Path MTU discovery and reachability checks need ICMP in both families.
  new openstack.networking.SecGroupRule(
    `${stack}-icmp`,
    {
      direction: "ingress",
      ethertype: "IPv4",
      protocol: "icmp",
      securityGroupId: securityGroup.id,
      region,
    },
    { parent: securityGroup, deleteBeforeReplace: true },
  );
  new openstack.networking.SecGroupRule(
    `${stack}-icmpv6`,
    {
      direction: "ingress",
      ethertype: "IPv6",
      protocol: "ipv6-icmp",
      securityGroupId: securityGroup.id,
      region,
    },
    { parent: securityGroup, deleteBeforeReplace: true },
  );
  const network = openstack.networking.getNetworkOutput({ name: PUBLIC_NETWORK, region });
  return { keypair, securityGroup, network };
}
