// The rendered cloud-init user-data and interfaces file, checked by cloud-init and ifupdown themselves.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { renderStack } from "../src/review";
import type { NodeAddresses } from "../src/render";

const run = (cmd: string, args: string[], input?: string) => {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  return { status: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
};

const STACKS = { lon: "lon1", bhs: "bhs1" } as const;
const ADDRS: NodeAddresses = {
  ipv4: { address: "198.51.100.20", gateway: "198.51.100.1" },
  ipv6: { address: "2001:db8:20::20", gateway: "2001:db8:20::1" },
};
let out: string;

beforeAll(() => {
  out = fs.mkdtempSync(path.join(os.tmpdir(), "hr-consumers-"));
  for (const [stack, node] of Object.entries(STACKS)) renderStack(stack, out, { [node]: ADDRS });
});

describe("cloud-init accepts the user-data", () => {
  for (const node of Object.values(STACKS)) {
    it(`${node}: cloud-init schema says valid`, () => {
      const r = run("cloud-init", ["schema", "-c", path.join(out, node, "cloud-init", "user-data")]);
      expect(r.out).toContain("Valid cloud-config");
      expect(r.status, r.out).toBe(0);
    });
  }
  it("and the same check rejects a broken one (the check can fail)", () => {
    const bad = path.join(out, "bad-user-data");
    fs.writeFileSync(
      bad,
      fs
        .readFileSync(path.join(out, "lon1", "cloud-init", "user-data"), "utf8")
        .replace("package_update: true", "package_update: 7"),
    );
    const r = run("cloud-init", ["schema", "-c", bad]);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/package_update/);
  });
});

describe("ifupdown reads and applies the interfaces file", () => {
  for (const node of Object.values(STACKS)) {
    it(`${node}: ifquery -i parses both families with on-link gateways`, () => {
      const file = path.join(out, node, "network", "interfaces");
      const r = run("ifquery", ["-i", file, "ens3"]);
      expect(r.status, r.out).toBe(0);
      expect(r.out).toContain("address: 198.51.100.20\n");
      expect(r.out).toContain("netmask: 255.255.255.255\n");
      expect(r.out).toContain("up: ip -4 route add 198.51.100.1 dev ens3\n");
      expect(r.out).toContain("address: 2001:db8:20::20\n");
      expect(r.out).toContain("netmask: 128\n");
      expect(r.out).toContain("up: ip -6 route add default via 2001:db8:20::1 dev ens3\n");
      expect(run("ifquery", ["-i", file, "--list", "-a"]).out.split("\n").filter(Boolean)).toEqual([
        "lo",
        "ens3",
      ]);
    });
  }

  it("ifup in a fresh network namespace gives ens3 its addresses and default routes", () => {
    const file = path.join(out, "lon1", "network", "interfaces");
    // A veth ens3 (its peer stands in for OVH's router) in a private network and mount namespace;
    // ifupdown's state lives in a private /run.
    const script = `set -e
      mount -t tmpfs tmpfs /run && mkdir -p /run/network
      ip link set lo up
      ip link add ens3 type veth peer name upstream0 && ip link set upstream0 up
      ifup -i ${file} ens3
      echo "== v4"; ip -4 -o addr show dev ens3; ip -4 route show
      echo "== v6"; ip -6 -o addr show dev ens3 scope global; ip -6 route show default
      ifdown -i ${file} ens3
      echo "== down"; ip -4 route show; ip -6 route show default`;
    const r = run("unshare", ["--net", "--mount", "--propagation", "private", "bash", "-c", script]);
    expect(r.status, r.out).toBe(0);
    const [, up4, up6, down] = r.out.split(/== (?:v4|v6|down)\n/);
    expect(up4).toMatch(/inet 198\.51\.100\.20\/32/);
    expect(up4).toMatch(/^default via 198\.51\.100\.1 dev ens3/m);
    expect(up4).toMatch(/^198\.51\.100\.1 dev ens3 scope link/m);
    expect(up6).toMatch(/inet6 2001:db8:20::20\/128/);
    expect(up6).toMatch(/^default via 2001:db8:20::1 dev ens3/m);
    expect(down).not.toMatch(/default/);
    console.log(`ifup applied:\n${up4.trim()}\n${up6.trim()}`);
  });
});
