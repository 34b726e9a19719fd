// Runs the Pulumi program for one stack under Pulumi's own mocks and records the resource graph, with
// the fake stack configuration in test/fixtures. Mocks are process-global: one stack per process.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import * as pulumi from "@pulumi/pulumi";
import { PROJECT_ROOT } from "../../src/project";
import { hostKeyIn } from "../../sandbox/host-keys";

/** The mocked tls.PrivateKey pairs (one per resource name, made once per test process). */
const MOCK_KEYS = fs.mkdtempSync(path.join(os.tmpdir(), "hr-mock-host-keys-"));

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, any>;
  order: number;
  /** Options as the program passed them (seen through a stack transformation). */
  opts: {
    protect?: boolean;
    ignoreChanges?: string[];
    deleteBeforeReplace?: boolean;
    dependsOn: string[];
    parent?: string;
  };
  /** The SDK object, for output-level checks such as secrecy. */
  resource?: pulumi.Resource;
}

export interface StackRun {
  resources: Registered[];
  calls: { token: string; args: Record<string, any> }[];
  program: Record<string, any>;
  byType(type: string): Registered[];
  /** performance.now() when the last resource was registered (evaluation time without settling). */
  lastRegistrationAt: number;
  one(type: string, name: string): Registered;
}

export function fixture(stack: string): { config: Record<string, string>; secretKeys: string[] } {
  return JSON.parse(
    fs.readFileSync(path.join(PROJECT_ROOT, "test", "fixtures", `${stack}.config.json`), "utf8"),
  );
}

/**
 * Ext-Net as the mocks present it: two IPv4 subnets (a region may have several; only the second
 * holds the ports' addresses) and one IPv6 subnet, its gateway unabbreviated as OpenStack may write it.
 * Each node's port gets .10+i addresses, v6 in brackets as OpenStack may.
 */
interface MockSubnet {
  cidr: string;
  gatewayIp: string;
  ipVersion: 4 | 6;
  dnsNameservers: string[];
}
const EXT_NET_SUBNETS: Record<string, MockSubnet> = {
  "ext-v4-a": { cidr: "198.51.100.0/24", gatewayIp: "198.51.100.1", ipVersion: 4, dnsNameservers: [] },
  "ext-v4-b": {
    cidr: "203.0.113.0/24",
    gatewayIp: "203.0.113.1",
    ipVersion: 4,
    dnsNameservers: ["192.0.2.53"],
  },
  "ext-v6": {
    cidr: "2001:db8:ffff::/64",
    gatewayIp: "2001:db8:ffff:0:0:0:0:1",
    ipVersion: 6,
    dnsNameservers: [],
  },
};

/** The MAC address the mocks give the Nth port (OpenStack's fa:16:3e prefix). */
export function mockPortMac(n: number): string {
  return `fa:16:3e:00:00:${n.toString(16).padStart(2, "0")}`;
}

/** Config on top of a stack's fixture: extra or changed keys, and which of them are secrets. */
export interface StackVariant {
  config?: Record<string, string>;
  secretKeys?: string[];
  /** Outputs of other stacks, by the name a StackReference gives ("organization/header-rewrite/lon"). */
  stackOutputs?: Record<string, Record<string, unknown>>;
}

/** The configuration a run sees: the stack's fixture with the variant on top. */
export function stackConfig(
  stack: string,
  variant: StackVariant = {},
): { config: Record<string, string>; secretKeys: string[] } {
  const f = fixture(stack);
  return {
    config: { ...f.config, ...variant.config },
    secretKeys: [...new Set([...f.secretKeys, ...(variant.secretKeys ?? [])])],
  };
}

export async function runStack(
  stack: string,
  variant: StackVariant = {},
  projectDir = PROJECT_ROOT,
): Promise<StackRun> {
  const resources: Registered[] = [];
  const options = new Map<string, { opts: Registered["opts"]; resource: pulumi.Resource }>();
  const calls: StackRun["calls"] = [];
  let ports = 0;
  let lastRegistrationAt = 0;
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const state: Record<string, any> = { ...args.inputs };
        if (args.type === "openstack:networking/port:Port") {
          const n = 10 + ports++;
          state.allFixedIps = [`203.0.113.${n}`, `[2001:db8:ffff::${n.toString(16)}]`];
          state.macAddress = mockPortMac(n);
        }
        if (args.type === "openstack:compute/instance:Instance") state.accessIpV4 = "203.0.113.250";
        if (args.type === "tls:index/privateKey:PrivateKey") {
          // A real ED25519 pair, as the provider makes: consumers (cloud-init, ssh) can check it.
          const key = hostKeyIn(MOCK_KEYS, args.name);
          state.privateKeyOpenssh = key.privateKey;
          state.publicKeyOpenssh = key.publicKey;
        }
        if (args.type === "pulumi:pulumi:StackReference") {
          state.outputs = variant.stackOutputs?.[args.inputs.name] ?? {};
          state.secretOutputNames = [];
        }
        lastRegistrationAt = performance.now();
        resources.push({
          type: args.type,
          name: args.name,
          inputs: args.inputs,
          order: resources.length,
          opts: options.get(`${args.type}::${args.name}`)?.opts ?? { dependsOn: [] },
          resource: options.get(`${args.type}::${args.name}`)?.resource,
        });
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        calls.push({ token: args.token, args: args.inputs });
        if (args.token === "openstack:networking/getNetwork:getNetwork")
          return { id: "ext-net-id", name: args.inputs.name };
        if (args.token === "openstack:networking/getSubnetIdsV2:getSubnetIdsV2") {
          const ids = Object.keys(EXT_NET_SUBNETS).filter(
            (id) => EXT_NET_SUBNETS[id].ipVersion === args.inputs.ipVersion,
          );
          return {
            id: "subnet-ids",
            ids,
            ipVersion: args.inputs.ipVersion,
            networkId: args.inputs.networkId,
          };
        }
        if (args.token === "openstack:networking/getSubnet:getSubnet") {
          const s = EXT_NET_SUBNETS[args.inputs.subnetId];
          if (!s) throw new Error(`no subnet ${args.inputs.subnetId}`);
          return { id: args.inputs.subnetId, ...s };
        }
        throw new Error(`unmocked invoke ${args.token}`);
      },
    },
    "header-rewrite",
    stack,
    false,
    // A non-legacy DIY backend's organization name (a StackReference names "organization/<project>/<stack>").
    "organization",
  );
  const { config, secretKeys } = stackConfig(stack, variant);
  pulumi.runtime.setAllConfig(config, secretKeys);
  let program: Record<string, any> = {};
  await pulumi.runtime.runInPulumiStack(async () => {
    pulumi.runtime.registerStackTransformation((a) => {
      const deps = a.opts.dependsOn;
      const list = (Array.isArray(deps) ? deps : deps ? [deps] : []) as pulumi.Resource[];
      options.set(`${a.type}::${a.name}`, {
        opts: {
          protect: a.opts.protect,
          ignoreChanges: a.opts.ignoreChanges,
          deleteBeforeReplace: (a.opts as pulumi.CustomResourceOptions).deleteBeforeReplace,
          dependsOn: list.map((d) => (d as any).__name as string),
          parent: (a.opts.parent as any)?.__name,
        },
        resource: a.resource,
      });
      return undefined;
    });
    program = await import(path.join(projectDir, "index.ts"));
    return {};
  });
  // Let every apply and registration settle.
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 50; i++) {
    const n = resources.length;
    await new Promise((r) => setTimeout(r, 50));
    if (resources.length === n) break;
  }
  const byType = (type: string) => resources.filter((r) => r.type === type);
  return {
    resources,
    calls,
    program,
    byType,
    lastRegistrationAt,
    one(type, name) {
      const r = resources.find((x) => x.type === type && x.name === name);
      if (!r)
        throw new Error(
          `no ${type} named ${name}; have ${resources.map((x) => `${x.type}:${x.name}`).join(", ")}`,
        );
      return r;
    },
  };
}

export function value<T>(o: pulumi.Output<T> | T): Promise<T> {
  return pulumi.Output.isInstance(o)
    ? new Promise((r) =>
        (o as pulumi.Output<T>).apply((v) => {
          r(v);
          return v;
        }),
      )
    : Promise.resolve(o as T);
}

/** A copy of the Pulumi program (index.ts, src, templates, maps, stack files) to edit and run. */
export function copyProject(): string {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), "hr-project-"));
  const stackFiles = fs.readdirSync(PROJECT_ROOT).filter((f) => /^Pulumi\..*yaml$/.test(f));
  for (const f of ["index.ts", "src", "scripts", "templates", "node", "maps", ...stackFiles]) {
    fs.cpSync(path.join(PROJECT_ROOT, f), path.join(copy, f), { recursive: true });
  }
  fs.symlinkSync(path.join(PROJECT_ROOT, "node_modules"), path.join(copy, "node_modules"));
  return copy;
}

/**
 * Runs the program in PROJECTDIR for STACK (its fixture config with CONFIG on top) where it must
 * refuse: the error it throws, and every resource it registered (none is the point).
 */
export async function runRefused(
  projectDir: string,
  stack: string,
  config: Record<string, string> = {},
): Promise<{ error: Error | undefined; registered: string[] }> {
  const registered: string[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource: (a) => {
        registered.push(`${a.type}:${a.name}`);
        return { id: `${a.name}-id`, state: a.inputs };
      },
      call: () => ({}),
    },
    "header-rewrite",
    stack,
    false,
  );
  const f = fixture(stack);
  pulumi.runtime.setAllConfig({ ...f.config, ...config }, f.secretKeys);
  let error: Error | undefined;
  try {
    await import(path.join(projectDir, "index.ts"));
  } catch (e) {
    error = e as Error;
  }
  await new Promise((r) => setTimeout(r, 200));
  return { error, registered };
}
