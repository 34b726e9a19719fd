// The rendered cloud-init user-data, checked by cloud-init itself, and the first-boot network script's
// refusal of a server that runs another image. The network file itself is applied by systemd-networkd
// on both Debian releases in the sandbox (test/sandbox/relay.ts).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { renderStack } from "../../src/review/offline-review";
import type { NodeAddresses } from "../../src/render/node-render";

const run = (cmd: string, args: string[], input?: string) => {
  const r = spawnSync(cmd, args, { encoding: "utf8", input });
  return { status: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
};

const STACKS = { lon: "lon1", bhs: "bhs1" } as const;
const ADDRS: NodeAddresses = {
  mac: "fa:16:3e:12:34:56",
  dns: ["192.0.2.53"],
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

describe("shellcheck accepts every script a node runs", () => {
  for (const node of Object.values(STACKS)) {
    it(`${node}: every deploy step, the drain and the first-boot network script`, () => {
      const scripts = [
        ...fs.readdirSync(path.join(out, node, "deploy")).map((f) => path.join(out, node, "deploy", f)),
        path.join(out, node, "network", "header-rewrite-network"),
      ];
      expect(scripts.length).toBeGreaterThanOrEqual(9);
      const r = run("shellcheck", ["-S", "warning", "-s", "bash", ...scripts]);
      expect(r.status, r.out).toBe(0);
    });
  }
  it("and the same check flags a constant case word (the warning one of the steps had)", () => {
    const bad = path.join(out, "bad-step.sh");
    fs.writeFileSync(bad, '#!/bin/bash\nfor f in /x/*; do case "  " in *" $f "*) ;; esac; done\n');
    const r = run("shellcheck", ["-S", "warning", bad]);
    expect(r.status).not.toBe(0);
    expect(r.out).toContain("SC2194");
  });
});

describe("the first-boot network script refuses an image it was not rendered for", () => {
  // Each case boots the script on this machine with another /etc/os-release (private mount
  // namespace): it must stop before touching the network and say what to fix.
  const cases = [
    { node: "lon1", osRelease: 'ID=debian\nVERSION_ID="13"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n' },
    { node: "bhs1", osRelease: 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n' },
    { node: "lon1", osRelease: 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04 LTS"\n' },
  ];
  for (const c of cases) {
    it(`${c.node} on ${/PRETTY_NAME="([^"]+)"/.exec(c.osRelease)![1]}`, () => {
      const script = path.join(out, c.node, "network", "header-rewrite-network");
      const fake = path.join(out, `os-release-${c.node}`);
      fs.writeFileSync(fake, c.osRelease);
      const r = run("unshare", [
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        `mount --bind ${fake} /etc/os-release && bash ${script}`,
      ]);
      expect(r.status, r.out).toBe(1);
      const expected = c.node === "lon1" ? "Debian 12" : "Debian 13";
      expect(r.out).toContain(`the stack's image is "${expected}", but this server runs`);
      expect(r.out).toContain("hint: set header-rewrite:image");
      expect(r.out).toContain("the network is left as cloud-init set it up");
    });
  }
});
