// One relay node: its port (stable addresses), server, DNS names, PTRs and the config push.
import * as pulumi from "@pulumi/pulumi";
import * as openstack from "@pulumi/openstack";
import * as ovh from "@ovhcloud/pulumi-ovh";
import * as command from "@pulumi/command";
import * as tls from "@pulumi/tls";
import * as ipaddr from "ipaddr.js";
import { type StackConfig, nodeIdentity } from "../config/stack-config";
import { PUBLIC_NETWORK, type Region } from "./region";
import { type NodeAddresses, type RenderContext, renderUserData } from "../render/node-render";
import { type Project, planNode } from "../plan";
import { type NodeSecrets, SECRET_STEPS, STEPS, type StepId, drainScript } from "../deploy/steps";
import { bundleHash } from "../render/bundle";
import { RUN_AS_ROOT, SSH_DIAL } from "../node-layout";
import { gatedSteps } from "../deploy/region-gate";

interface RelayNodeArgs extends Project {
  /** The OpenStack region's network, security group and keypair; none for servers that exist already. */
  region?: Region;
  deployPrivateKey: pulumi.Output<string>;
  /** Pulumi secrets: operator client certificates per tenant id, OVH credentials for dns-01. */
  secrets: pulumi.Output<NodeSecrets>;
  /** The node before this one in the rollout: its post-deploy check must pass before this node changes. */
  after?: pulumi.Resource;
  /** Why this stack must not take the release yet (src/deploy/region-gate.ts); the Postfix step then refuses. */
  refusal: pulumi.Output<string | undefined>;
}

/** OpenStack may hand IPv6 addresses back in brackets ("[2001:db8::1]"). */
function splitFamilies(ips: string[]): { ipv4: string; ipv6: string } {
  const clean = ips.map((ip) => ip.replace(/^\[|\]$/g, ""));
  const ipv4 = clean.find((ip) => ipaddr.IPv4.isValidFourPartDecimal(ip));
  const ipv6 = clean.find((ip) => ipaddr.IPv6.isValid(ip));
  if (!ipv4 || !ipv6)
    throw new Error(
      `Ext-Net port has no dual-stack addresses (got ${JSON.stringify(ips)}); OVH Public Cloud regions UK1 and BHS5 assign both`,
    );
  return { ipv4, ipv6: ipaddr.IPv6.parse(ipv6).toString() };
}

interface ExtNetSubnet {
  cidr: string;
  gatewayIp: string;
  dnsNameservers?: string[];
}

/** The gateway and resolvers of the Ext-Net subnet that holds ADDRESS; an error names the subnets. */
export function subnetHolding(
  node: string,
  address: string,
  ipVersion: 4 | 6,
  subnets: ExtNetSubnet[],
): { gateway: string; dns: string[] } {
  const ip = ipaddr.parse(address);
  const holding = subnets.find((s) => ip.match(ipaddr.parseCIDR(s.cidr)));
  if (!holding) {
    throw new Error(
      `${node}: no IPv${ipVersion} subnet of ${PUBLIC_NETWORK} holds ${address} ` +
        `(subnets: ${subnets.map((s) => s.cidr).join(", ") || "none"})`,
    );
  }
  return { gateway: ipaddr.parse(holding.gatewayIp).toString(), dns: holding.dnsNameservers ?? [] };
}

/**
 * The node's resolvers: the stack's own, else those of its subnets. The static configuration
 * replaces DHCP, and with it the resolvers DHCP handed out, so none at all is an error.
 */
export function nodeResolvers(
  node: string,
  cfg: StackConfig,
  addresses: string[],
  listed: string[][],
): string[] {
  const dns = cfg.dnsResolvers.length ? cfg.dnsResolvers : [...new Set(listed.flat())];
  if (!dns.length) {
    throw new Error(
      `${node}: the ${PUBLIC_NETWORK} subnets holding ${addresses.join(" and ")} list no DNS resolvers ` +
        `(hint: pulumi config set --path 'header-rewrite:dnsResolvers[0]' <resolver address>)`,
    );
  }
  return dns;
}

/** Where a node's steps run: its addresses, the host key they pin, what replaces it. */
interface Placement {
  ipv4: pulumi.Output<string>;
  ipv6: pulumi.Output<string>;
  /** Public half of the SSH host key every command verifies before it sends a script. */
  hostKey: pulumi.Output<string>;
  /** The OpenStack server the steps wait for, and its port (none when the server exists already). */
  server?: openstack.compute.Instance;
  port?: openstack.networking.Port;
  /** Changes when the server is replaced: every step runs again on the new one. */
  replaced: pulumi.Output<string>;
  /** Its PTRs are set through OVH's /ip API. */
  reverseAtOvh: boolean;
}

export class RelayNode extends pulumi.ComponentResource {
  readonly fqdn: string;
  readonly ipv4: pulumi.Output<string>;
  readonly ipv6: pulumi.Output<string>;
  readonly port?: openstack.networking.Port;
  readonly server?: openstack.compute.Instance;
  readonly records: ovh.domain.ZoneRecord[];
  readonly reverses: ovh.ip.Reverse[];
  readonly cloudInit: command.remote.Command;
  readonly certificate: command.remote.Command;
  readonly clientCertificates: command.remote.Command;
  readonly postfixConfig: command.remote.Command;
  /** Runs only when the node is removed, before its server goes: out of DNS, queue delivered. */
  readonly drain: command.remote.Command;
  /** The post-deploy check; a failure returns the node to its previous release. */
  readonly verify: command.remote.Command;
  /** Content hash of the Postfix bundle this node receives. */
  readonly bundleHash: pulumi.Output<string>;
  /** The server's SSH host key, public half (OpenStack: made by the program, its private half a secret). */
  readonly hostKey: pulumi.Output<string>;

  constructor(name: string, args: RelayNodeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("header-rewrite:relay:Node", name, {}, opts);
    const { cfg, maps, stack } = args;
    const node = nodeIdentity(cfg, name);
    const ctx = { stack, cfg, maps, node };
    const parent = { parent: this };
    this.fqdn = node.fqdn;
    const existing = cfg.servers[name];
    const placed: Placement = existing
      ? {
          ipv4: pulumi.output(existing.ipv4),
          ipv6: pulumi.output(ipaddr.IPv6.parse(existing.ipv6).toString()),
          hostKey: pulumi.output(existing.hostKey),
          replaced: pulumi.output(existing.hostKey),
          reverseAtOvh: existing.reverseAtOvh ?? false,
        }
      : this.createServer(name, args, ctx);
    this.ipv4 = placed.ipv4;
    this.ipv6 = placed.ipv6;
    this.hostKey = placed.hostKey;
    this.port = placed.port;
    this.server = placed.server;
    const afterServer = placed.server ? [placed.server] : [];

    // Every command verifies the server by its pinned host key before it sends a byte of a script.
    const connection = {
      host: this.ipv4,
      user: cfg.sshUser,
      hostKey: this.hostKey,
      privateKey: args.deployPrivateKey,
      ...SSH_DIAL,
    };
    // Nothing runs on create. Removing the node deletes in reverse order of these dependencies:
    // its DNS records first (they depend on this), then this command drains the node, then the
    // server (this depends on it) -- and a queue that does not drain stops the removal.
    const drain = pulumi.output(drainScript(cfg, node));
    this.drain = new command.remote.Command(
      `${name}-drain`,
      {
        connection,
        delete: drain.apply((text) => `${RUN_AS_ROOT} # drain ${bundleHash({ text }).slice(0, 16)}`),
        stdin: drain,
        addPreviousOutputInEnv: false,
      },
      { ...parent, dependsOn: afterServer },
    );

    // Forward names first; OVH checks at once that a PTR resolves forward to its address.
    const record = (id: string, subdomain: string, fieldtype: "A" | "AAAA", target: pulumi.Input<string>) =>
      new ovh.domain.ZoneRecord(
        id,
        { zone: cfg.dnsZone, subdomain, fieldtype, target, ttl: cfg.dnsTtl },
        { ...parent, dependsOn: [this.drain] },
      );
    // Without dnsAtOvh the operator makes them (docs/configuration.md, "Servers that exist already").
    const forward = cfg.dnsAtOvh
      ? {
          a: record(`${name}-a`, name, "A", this.ipv4),
          aaaa: record(`${name}-aaaa`, name, "AAAA", this.ipv6),
        }
      : undefined;
    this.records = forward
      ? [
          forward.a,
          forward.aaaa,
          record(`${name}-service-a`, cfg.serviceName, "A", this.ipv4),
          record(`${name}-service-aaaa`, cfg.serviceName, "AAAA", this.ipv6),
        ]
      : [];
    const reverse = (id: string, ip: pulumi.Output<string>, bits: number, after?: ovh.domain.ZoneRecord) =>
      new ovh.ip.Reverse(
        id,
        {
          // The block OVH files the address under: its network at that prefix.
          ip: ip.apply(
            (a) =>
              `${ipaddr.IPv6.isValid(a) ? ipaddr.IPv6.networkAddressFromCIDR(`${a}/${bits}`) : a}/${bits}`,
          ),
          ReverseIp: ip,
          ReverseValue: `${node.fqdn}.`,
          readinessTimeoutDuration: "5m",
        },
        // After the server too: OVH's /ip API may not list the address before the port is attached.
        // Delete-first: every field forces a replacement and the ID is the address itself, so the old
        // resource's DELETE /ip/{block}/reverse/{address} would remove the PTR just created
        // (terraform-provider-ovh ovh/resource_ip_reverse.go: ForceNew fields, SetId(IpReverse)).
        { ...parent, dependsOn: [...(after ? [after] : []), ...afterServer], deleteBeforeReplace: true },
      );
    // OVH's /ip API holds the PTRs of OVH's addresses only.
    this.reverses = placed.reverseAtOvh
      ? [
          reverse(`${name}-ptr4`, this.ipv4, 32, forward?.a),
          reverse(`${name}-ptr6`, this.ipv6, cfg.reverseBlockV6, forward?.aaaa),
        ]
      : [];

    // Config push: every step is a script on stdin; any change of the script re-runs the step.
    // Render, then deploy scripts from the bundle; both depend on which client certificates exist.
    // (The secrets' shape was checked before any resource: checkSecrets in index.ts.)
    const pushed = args.secrets.apply((secrets) => {
      const certs = secrets.clientCertificates ?? {};
      const plan = planNode(args, name, { clientCertTenants: Object.keys(certs).sort(), secrets });
      return { bundle: plan.bundle, steps: plan.steps() };
    });
    const step = (id: StepId, dependsOn: pulumi.Resource[]) => {
      const script = pulumi
        .all([pushed, args.refusal])
        .apply(([p, refusal]) => gatedSteps(p.steps, refusal).find((s) => s.id === id)!.script);
      const stdin = SECRET_STEPS.has(id) ? script : pulumi.unsecret(script);
      const create = pulumi.unsecret(
        script.apply((text) => `${RUN_AS_ROOT} # ${id} ${bundleHash({ text }).slice(0, 16)}`),
      );
      return new command.remote.Command(
        `${name}-${id}`,
        {
          connection,
          create,
          update: create,
          stdin,
          // Default true: each update would Setenv PULUMI_COMMAND_STDOUT/STDERR, which Debian's sshd
          // refuses (AcceptEnv LANG LC_* only), warning on every run (pulumi-command
          // provider/pkg/provider/remote/commandOutputs.go). The scripts never read them.
          addPreviousOutputInEnv: false,
          // A replaced server starts empty: run the step again on the new one.
          triggers: [placed.replaced],
        },
        { ...parent, dependsOn },
      );
    };
    this.bundleHash = pulumi.unsecret(pushed.apply((p) => bundleHash(p.bundle.files)));
    // Each step waits for the one before it; http-01 also needs the forward records before certbot
    // asks the CA to connect; Postfix changes only once the node before this one passed its check.
    const alsoWaitFor: Partial<Record<StepId, pulumi.Resource[]>> = {
      certificate: forward ? [forward.a, forward.aaaa] : [],
      postfix: args.after ? [args.after] : [],
    };
    const commands = {} as Record<StepId, command.remote.Command>;
    let previous: pulumi.Resource[] = afterServer;
    for (const id of STEPS) {
      commands[id] = step(id, [...previous, ...(alsoWaitFor[id] ?? [])]);
      previous = [commands[id]];
    }
    this.cloudInit = commands["cloud-init"];
    this.certificate = commands.certificate;
    this.clientCertificates = commands["client-certificates"];
    this.postfixConfig = commands.postfix;
    this.verify = commands.verify;

    this.registerOutputs({ fqdn: this.fqdn, ipv4: this.ipv4, ipv6: this.ipv6 });
  }

  /** An OVH Public Cloud server: its port (stable addresses), host key and instance. */
  private createServer(name: string, args: RelayNodeArgs, ctx: RenderContext): Placement {
    const { cfg } = args;
    const region = args.region!;
    const parent = { parent: this };
    const keep = { protect: cfg.protectServers };
    // The port comes first: its addresses are known before the server exists and outlive it.
    const port = new openstack.networking.Port(
      `${name}-port`,
      {
        name: `header-rewrite-${name}`,
        networkId: region.network.id,
        securityGroupIds: [region.securityGroup.id],
        adminStateUp: true,
        region: cfg.region,
      },
      { ...parent, ...keep },
    );
    const families = port.allFixedIps.apply(splitFamilies);

    // Ext-Net may hold several subnets of a family: gateway and resolvers are those of the subnet
    // that holds the port's address (a lookup by family alone fails with "more than one result").
    const subnetOf = (address: pulumi.Output<string>, ipVersion: 4 | 6) =>
      pulumi
        .all([
          address,
          openstack.networking.getSubnetIdsV2Output(
            { networkId: region.network.id, ipVersion, region: cfg.region },
            parent,
          ),
        ])
        .apply(async ([addr, found]) => {
          const subnets = await Promise.all(
            found.ids.map((subnetId) =>
              openstack.networking.getSubnet({ subnetId, region: cfg.region }, parent),
            ),
          );
          return subnetHolding(name, addr, ipVersion, subnets);
        });
    const addresses: pulumi.Output<NodeAddresses> = pulumi
      .all([families, port.macAddress, subnetOf(families.ipv4, 4), subnetOf(families.ipv6, 6)])
      .apply(([f, mac, net4, net6]) => {
        const dns = nodeResolvers(name, cfg, [f.ipv4, f.ipv6], [net4.dns, net6.dns]);
        return {
          mac: mac.toLowerCase(),
          ipv4: { address: f.ipv4, gateway: net4.gateway },
          ipv6: { address: f.ipv6, gateway: net6.gateway },
          dns,
        };
      });

    // The server's SSH host key, created once and kept in the stack's state (encrypted, a secret);
    // protected with the server: rotating it is a rebuild (docs/security.md, "Security model").
    const key = new tls.PrivateKey(`${name}-host-key`, { algorithm: "ED25519" }, { ...parent, ...keep });
    const hostKey = pulumi
      .all([key.privateKeyOpenssh, key.publicKeyOpenssh])
      .apply(([privateKey, publicKey]) => ({ privateKey, publicKey }));

    const server = new openstack.compute.Instance(
      name,
      {
        name: ctx.node.fqdn,
        imageName: cfg.image,
        flavorName: cfg.flavor,
        keyPair: region.keypair.name,
        networks: [{ port: port.id }],
        // Holds the host key's private half: secret in the state and in every preview.
        userData: pulumi.secret(
          pulumi.all([addresses, hostKey]).apply(([a, k]) => renderUserData(ctx, a, k)),
        ),
        region: cfg.region,
        metadata: { project: "header-rewrite", stack: ctx.stack, node: name },
      },
      // Delete-first: the new server cannot attach the port the old one still holds (PortInUse).
      // Day-2 changes of image and user-data are ignored: the engine then keeps the values recorded
      // at creation, even for a replacement (pulumi/pulumi#2657). A node in rebuildNodes takes the
      // current ones, and since they force a new server it is rebuilt on this run.
      {
        ...parent,
        ...keep,
        deleteBeforeReplace: true,
        ignoreChanges: cfg.rebuildNodes.includes(name) ? [] : ["userData", "imageName", "imageId", "keyPair"],
      },
    );
    return {
      port,
      ipv4: families.ipv4,
      ipv6: families.ipv6,
      hostKey: key.publicKeyOpenssh,
      server,
      replaced: server.id,
      reverseAtOvh: true,
    };
  }
}
