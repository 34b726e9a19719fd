// A stack whose servers exist already (header-rewrite:servers): another cloud, on premises, the
// sandbox's nodes. Under Pulumi's mocks: no OpenStack or tls resource, every step to the configured
// address with the configured host key pinned, DNS and PTRs as configured, the same rolling chain,
// and bad entries refused before any resource; `npm run render` gives the user-data to boot it with.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import * as pulumi from "@pulumi/pulumi";
import * as YAML from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { type StackRun, copyProject, runRefused, runStack, value } from "../helpers/pulumi-mocks";
import { renderStack } from "../../src/review/offline-review";

const KEY = {
  lon1: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExistingServerLon1HostKeyForTestsOnly000000 root@lon1",
  lon2: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExistingServerLon2HostKeyForTestsOnly000000",
};
const SERVERS = {
  lon1: { ipv4: "198.51.100.10", ipv6: "2001:db8:100:0::10", hostKey: KEY.lon1 },
  lon2: { ipv4: "198.51.100.11", ipv6: "2001:db8:100::11", hostKey: KEY.lon2, reverseAtOvh: true },
};
const servers = (s: object, more: Record<string, string> = {}) => ({
  config: {
    "header-rewrite:nodes": JSON.stringify(Object.keys(s)),
    "header-rewrite:servers": JSON.stringify(s),
    ...more,
  },
});
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const unsecret = (v: any) => (v && v[SECRET_SIG] ? v.value : v);

describe("a stack of servers that exist already", () => {
  let run: StackRun;
  beforeAll(async () => {
    run = await runStack("lon", servers(SERVERS));
  });

  it("registers no OpenStack or tls resource: no network, security group, keypair, port, server, host key", () => {
    const types = new Set(run.resources.map((r) => r.type));
    expect([...types].filter((t) => /^(openstack|tls):/.test(t))).toEqual([]);
    expect(run.calls.filter((c) => c.token.startsWith("openstack:"))).toEqual([]);
  });

  for (const [name, s] of Object.entries(SERVERS)) {
    it(`${name}: every step and the drain go to its address and pin its host key; a new key reruns them`, () => {
      const commands = run.byType("command:remote:Command").filter((c) => c.name.startsWith(`${name}-`));
      expect(commands.map((c) => c.name.slice(name.length + 1)).sort()).toEqual(
        [
          "certificate",
          "client-certificates",
          "cloud-init",
          "drain",
          "metrics",
          "pin-secret",
          "postfix",
          "verify",
        ].sort(),
      );
      for (const c of commands) {
        expect(unsecret(c.inputs.connection)).toMatchObject({
          host: s.ipv4,
          user: "debian",
          hostKey: s.hostKey,
        });
        if (c.name !== `${name}-drain`) expect(c.inputs.triggers).toEqual([s.hostKey]);
      }
      expect(run.one("command:remote:Command", `${name}-cloud-init`).opts.dependsOn).toEqual([]);
    });
  }

  it("the rolling chain and the records: lon2's Postfix waits for lon1's check; A/AAAA at OVH; PTRs only where asked", () => {
    const postfix2 = run.one("command:remote:Command", "lon2-postfix");
    expect(postfix2.opts.dependsOn).toEqual(["lon2-pin-secret", "lon1-verify"]);
    expect(run.one("command:remote:Command", "lon1-certificate").opts.dependsOn).toEqual([
      "lon1-cloud-init",
      "lon1-a",
      "lon1-aaaa",
    ]);
    const records = run.byType("ovh:Domain/zoneRecord:ZoneRecord");
    const lon1 = records.filter((r) => r.name.startsWith("lon1-")).map((r) => [r.name, r.inputs.target]);
    expect(lon1.sort()).toEqual([
      ["lon1-a", "198.51.100.10"],
      ["lon1-aaaa", "2001:db8:100::10"],
      ["lon1-service-a", "198.51.100.10"],
      ["lon1-service-aaaa", "2001:db8:100::10"],
    ]);
    // Records go before the drain runs on removal (they depend on it), as for OpenStack nodes.
    for (const r of records) expect(r.opts.dependsOn).toEqual([`${r.name.split("-")[0]}-drain`]);
    const ptrs = run
      .byType("ovh:Ip/reverse:Reverse")
      .map((r) => [r.name, r.inputs.ReverseIp, r.opts.dependsOn]);
    expect(ptrs).toEqual([
      ["lon2-ptr4", "198.51.100.11", ["lon2-a"]],
      ["lon2-ptr6", "2001:db8:100::11", ["lon2-aaaa"]],
    ]);
  });

  it("outputs the configured addresses and host keys (npm run status and admins' known_hosts read them)", async () => {
    const addresses = await value(pulumi.output(run.program.nodeAddresses));
    expect(addresses.lon1).toEqual({
      fqdn: "lon1.example.net",
      ipv4: "198.51.100.10",
      ipv6: "2001:db8:100::10",
    });
    const keys = await value(pulumi.output(run.program.sshHostKeys));
    expect(keys).toEqual({ lon1: KEY.lon1, lon2: KEY.lon2 });
  });

  it("dnsAtOvh false: no record at OVH, and the certificate step waits for cloud-init only", async () => {
    // A copy of the project: index.ts runs once per module path.
    const copy = copyProject();
    const r = await runStack("lon", servers(SERVERS, { "header-rewrite:dnsAtOvh": "false" }), copy).finally(
      () => fs.rmSync(copy, { recursive: true, force: true }),
    );
    expect(r.byType("ovh:Domain/zoneRecord:ZoneRecord")).toEqual([]);
    expect(r.one("command:remote:Command", "lon1-certificate").opts.dependsOn).toEqual(["lon1-cloud-init"]);
    // lon2's PTRs still go through OVH, with no forward record of ours to wait for.
    expect(r.byType("ovh:Ip/reverse:Reverse").map((p) => p.opts.dependsOn)).toEqual([[], []]);
  });
});

describe("servers that exist already: bad entries refused before any resource", () => {
  const cases: [string, Record<string, string>, string[]][] = [
    [
      "a node without an entry, and an entry without a node",
      {
        "header-rewrite:nodes": '["lon1","lon3"]',
        "header-rewrite:servers": JSON.stringify({ lon1: SERVERS.lon1, lon9: SERVERS.lon2 }),
      },
      [
        "header-rewrite:servers has no entry for node lon3 " +
          "(hint: pulumi config set --path 'header-rewrite:servers.lon3.ipv4' <address>",
        "header-rewrite:servers.lon9 is not in header-rewrite:nodes (hint: add it to nodes, or remove the entry)",
      ],
    ],
    [
      "addresses that are not, a host key that is not one, a missing field",
      {
        "header-rewrite:servers": JSON.stringify({
          lon1: { ipv4: "198.51.100.300", ipv6: "2001:db8::g", hostKey: "AAAAC3Nza root@lon1" },
        }),
      },
      [
        'header-rewrite:servers.lon1.ipv4 "198.51.100.300" is not an IPv4 address (hint: e.g. 203.0.113.10)',
        'header-rewrite:servers.lon1.ipv6 "2001:db8::g" is not an IPv6 address (hint: e.g. 2001:db8::10)',
        "header-rewrite:servers item lon1 must match pattern",
      ],
    ],
    [
      "rebuildNodes, which only OpenStack servers have",
      {
        "header-rewrite:servers": JSON.stringify({ lon1: SERVERS.lon1 }),
        "header-rewrite:rebuildNodes": '["lon1"]',
        "header-rewrite:protectServers": "false",
      },
      [
        "header-rewrite:rebuildNodes rebuilds OpenStack servers, and this stack lists servers that exist already",
      ],
    ],
  ];
  for (const [what, config, said] of cases) {
    it(what, async () => {
      const copy = copyProject();
      try {
        const { error, registered } = await runRefused(copy, "lon", config);
        expect(error?.message).toContain(
          "Pulumi.lon.yaml: invalid stack configuration; nothing was deployed:",
        );
        for (const s of said) expect(error?.message).toContain(s);
        expect(registered).toEqual([]);
      } finally {
        fs.rmSync(copy, { recursive: true, force: true });
      }
    });
  }
});

it("npm run render: the user-data to boot such a server with keeps its own network and host key; cloud-init accepts it", () => {
  const copy = copyProject();
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-servers-"));
  try {
    const file = path.join(copy, "Pulumi.lon.yaml");
    const doc = YAML.parseDocument(fs.readFileSync(file, "utf8"));
    doc.setIn(["config", "header-rewrite:servers"], { lon1: SERVERS.lon1 });
    doc.deleteIn(["config", "openstack:region"]);
    fs.writeFileSync(file, doc.toString());
    const written = renderStack("lon", out, {}, copy);
    const rel = written.map((f) => path.relative(path.join(out, "lon1"), f));
    expect(rel).not.toContain("ADDRESSES.json");
    const firewall = fs.readFileSync(path.join(out, "lon1", "FIREWALL.txt"), "utf8");
    expect(firewall).toContain("tcp/22 from 198.51.100.0/28 (ssh from admins and the deployer)");
    expect(firewall).toMatch(/^tcp\/25 from \S+ \(smtp from allow-listed clients\)$/m);
    expect(firewall).toContain("tcp/80 from 0.0.0.0/0 (ACME http-01 challenge)");
    expect(rel.filter((f) => f.startsWith("network/"))).toEqual([]);
    const userData = fs.readFileSync(path.join(out, "lon1", "cloud-init", "user-data"), "utf8");
    expect(userData).not.toMatch(
      /PLACEHOLDER|ssh_keys:|ssh_deletekeys|99-disable-network-config|network-switch/,
    );
    const ud = YAML.parse(userData) as { packages: string[]; ssh_authorized_keys: string[] };
    expect(ud.packages).toEqual(expect.arrayContaining(["postfix", "chrony", "python3-milter"]));
    expect(ud.ssh_authorized_keys[0]).toMatch(/^ssh-ed25519 /);
    const schema = spawnSync(
      "cloud-init",
      ["schema", "-c", path.join(out, "lon1", "cloud-init", "user-data")],
      {
        encoding: "utf8",
      },
    );
    expect(schema.status, schema.stdout + schema.stderr).toBe(0);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
});
