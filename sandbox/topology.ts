// Where everything lives in the local sandbox: one node per node of every committed stack, one sink
// per tenant next hop, a tenant A client, an outsider, DNS. Documentation addresses only.
import * as path from "node:path";
import { listStacks, loadStackConfig, nodeFqdn, type StackConfig } from "../src/config/stack-config";
import { type MapName, type RelayMaps, loadMaps, parseMaps, readMapTexts } from "../src/maps/relay-maps";
import { MAPS_DIR } from "../src/project";
import type { NodeHost } from "./node-host";
import { type DkimKey, dkimKeyIn } from "./dkim";

export const DEFAULT_DIR = "/var/tmp/header-rewrite-sandbox";

interface Host {
  netns: string;
  ipv4: string;
  ipv6: string;
  /** host-side veth name (in the wan namespace) */
  veth: string;
}

export interface SandboxNode extends Host, NodeHost {
  stack: string;
  /** The OpenStack port's MAC address (fa:16:3e: prefix); the node's network file matches on it. */
  mac: string;
  /** The booted image's root filesystem, as this machine sees it (an overlay on the cached image). */
  root: string;
  /** "stock": a plain Debian Postfix relay for benchmarks (npm run bench), not a header-rewrite node. */
  kind?: "relay" | "stock";
}

export interface Sink extends Host {
  nexthop: string;
  host: string;
  tenantId: string;
  dir: string;
}

export interface Topology {
  dir: string;
  wan: { netns: string };
  dns: { ipv4: string; ipv6: string };
  /** Pebble, the ACME test CA, standing in for Let's Encrypt. */
  acme: { host: string; ipv4: string; directory: string; management: string };
  /**
   * OVH's DNS zone API and name servers for the tenants' domains (sandbox/ovh-api.ts): certbot's
   * OVH plugin and lego write dns-01 records there, and the sandbox DNS forwards those zones to it.
   */
  ovhApi: { host: string; ipv4: string; zones: string[]; dir: string };
  nodes: SandboxNode[];
  /**
   * allowed: tenant A on Exchange Online (signs with its old.example key); impostor: another tenant
   * on the same shared addresses (inside the allowed range, signs as itself); outsider: anyone else.
   */
  clients: { allowed: Host & { dkim: DkimKey }; impostor: Host & { dkim: DkimKey }; outsider: Host };
  sinks: Sink[];
  /** Stands in for the rest of the Internet: MX and A of recipient domains. Mail here is a relay leak. */
  trap: Host & { host: string; dir: string; domains: string[] };
}

/** Each network the sandbox router (the wan namespace) serves: gateway and prefix. */
export const NETWORKS = {
  tenantA: { v4: "192.0.2.1/24", v6: "2001:db8:a::1/64" },
  services: { v4: "198.51.100.1/24", v6: "2001:db8:5::1/64" },
  nodes: { v4: "203.0.113.1/24", v6: "2001:db8:ffff::1/64" },
  outsider: { v6: "2001:db8:bad::1/64" },
};

/** The router's address on one of NETWORKS ("203.0.113.1/24" -> "203.0.113.1"): the hosts' gateway. */
export function gatewayOf(network: string): string {
  return network.split("/")[0];
}

export interface StackInput {
  stack: string;
  cfg: StackConfig;
}

/** What the sandbox runs: every committed stack and the committed maps (src/plan.ts has one stack's Project). */
export interface Fleet {
  stacks: StackInput[];
  maps: RelayMaps;
}

export function loadFleet(): Fleet {
  const stacks = listStacks().map((stack) => ({ stack, cfg: loadStackConfig(stack) }));
  return { stacks, maps: loadMaps(MAPS_DIR) };
}

/** The committed maps with extra lines appended (a typical edit; the bench's large maps). */
export function committedMapsWith(extra: Partial<Record<MapName, string[]>>): RelayMaps {
  const texts = readMapTexts(MAPS_DIR);
  for (const [name, lines] of Object.entries(extra) as [MapName, string[]][]) {
    texts[name] += lines.map((l) => `${l}\n`).join("");
  }
  return parseMaps(texts);
}

/** The sandbox's names under the tenants' domains for tenant certificates: relay.<domain>. */
export const TENANT_CERT_LABEL = "relay";

export function planTopology(
  dir: string,
  stacks: StackInput[],
  maps: RelayMaps,
  opts: { stockNode?: boolean } = {},
): Topology {
  const nodes: SandboxNode[] = [];
  const add = (stack: string, cfg: StackConfig, name: string, kind?: "stock") => {
    const i = nodes.length;
    nodes.push({
      name,
      stack,
      fqdn: nodeFqdn(cfg, name),
      netns: `hr-${name}`,
      dir: path.join(dir, "nodes", name),
      root: path.join(dir, "nodes", name, "root"),
      logDir: path.join(dir, "nodes", name, "root", "var", "log"),
      mac: `fa:16:3e:5a:00:${(10 + i).toString(16).padStart(2, "0")}`,
      veth: `vn${i}`,
      ipv4: `203.0.113.${10 + i}`,
      ipv6: `2001:db8:ffff::${(10 + i).toString(16)}`,
      ...(kind ? { kind } : {}),
    });
  };
  for (const { stack, cfg } of stacks) for (const name of cfg.nodes) add(stack, cfg, name);
  if (opts.stockNode) add(stacks[0].stack, stacks[0].cfg, "stock1", "stock");
  const tenantDomains = [
    ...new Set(maps.relayhosts.filter((r) => r.key.startsWith("@")).map((r) => r.key.slice(1))),
  ].sort();
  const sinks: Sink[] = maps.tenants.map((t, i) => ({
    nexthop: t.nexthop,
    host: t.host,
    tenantId: t.id,
    netns: `hr-sink-${t.id}`,
    veth: `vs${i}`,
    ipv4: `198.51.100.${20 + i}`,
    ipv6: `2001:db8:5::${(0x20 + i).toString(16)}`,
    dir: path.join(dir, "sinks", t.id),
  }));
  return {
    dir,
    wan: { netns: "hr-wan" },
    dns: { ipv4: "198.51.100.53", ipv6: "2001:db8:5::53" },
    ovhApi: {
      host: "eu.api.ovh.com",
      ipv4: "198.51.100.71",
      zones: tenantDomains,
      dir: path.join(dir, "ovh-api"),
    },
    acme: {
      host: "acme.sandbox.example",
      ipv4: "198.51.100.14",
      directory: "https://acme.sandbox.example:14000/dir",
      management: "https://acme.sandbox.example:15000",
    },
    nodes,
    clients: {
      allowed: {
        netns: "hr-tenant-a",
        veth: "vca",
        ipv4: "192.0.2.10",
        ipv6: "2001:db8:a::10",
        dkim: dkimKeyIn(path.join(dir, "keys"), "old.example"),
      },
      impostor: {
        netns: "hr-impostor",
        veth: "vci",
        ipv4: "192.0.2.66",
        ipv6: "2001:db8:a::66",
        dkim: dkimKeyIn(path.join(dir, "keys"), "impostor.example"),
      },
      outsider: { netns: "hr-outsider", veth: "vco", ipv4: "198.51.100.200", ipv6: "2001:db8:bad::10" },
    },
    sinks,
    trap: {
      netns: "hr-trap",
      veth: "vtr",
      ipv4: "198.51.100.66",
      ipv6: "2001:db8:5::66",
      host: "mx.partner.example",
      dir: path.join(dir, "trap"),
      domains: ["partner.example", "elsewhere.example", "relay-target.example"],
    },
  };
}

/** The documented shape of topology.json (docs/testing.md, "Try it locally"). */
export function topologyJson(t: Topology): unknown {
  const host = (h: Host) => ({ netns: h.netns, ipv4: h.ipv4, ipv6: h.ipv6 });
  return {
    dir: t.dir,
    nodes: t.nodes.map((n) => ({
      name: n.name,
      stack: n.stack,
      netns: n.netns,
      fqdn: n.fqdn,
      ipv4: n.ipv4,
      ipv6: n.ipv6,
      mac: n.mac,
      root: n.root,
      // Log in as the deployer does, from the node's network (ip netns exec hr-wan ssh ...), verifying
      // the node's pinned host key (StrictHostKeyChecking=yes with this known_hosts).
      ssh: {
        user: "debian",
        keyFile: path.join(t.dir, "keys", "deploy"),
        knownHosts: path.join(t.dir, "keys", "known_hosts"),
        from: t.wan.netns,
        host: n.ipv4,
      },
    })),
    clients: {
      allowed: { ...host(t.clients.allowed), dkim: t.clients.allowed.dkim },
      impostor: { ...host(t.clients.impostor), dkim: t.clients.impostor.dkim },
      outsider: host(t.clients.outsider),
    },
    sinks: t.sinks.map((s) => ({
      nexthop: s.nexthop,
      netns: s.netns,
      ipv4: s.ipv4,
      ipv6: s.ipv6,
      dir: s.dir,
    })),
    dns: t.dns,
    acme: t.acme,
    trap: { ...host(t.trap), dir: t.trap.dir, domains: t.trap.domains },
  };
}
