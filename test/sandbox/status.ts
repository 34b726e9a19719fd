// `npm run status` against the sandbox, as an operator (or cron) runs it: a healthy fleet, a tenant
// next hop down with mail waiting for it, and a node left on an older release.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { expect, it } from "vitest";
import { deployKeyFile, nodeHostKey } from "../../sandbox/nodes";
import { inNetns } from "../../sandbox/shell";
import { queue } from "../../sandbox/node-host";
import { rollout } from "../../sandbox/rollout";
import { restartSink, stopSink } from "../../sandbox/services";
import { sandboxStatusTargets } from "../../sandbox/status";
import { pollUntil, sh } from "../../sandbox/shell";
import { PROJECT_ROOT } from "../../src/project";
import { type FleetStatus, fleetStatus } from "../../src/status/fleet-status";
import { shellQuote as q } from "../../src/deploy/shell-text";
import { editedMaps } from "../helpers/maps";
import type { Suite } from "./harness";

/** The command an operator types, against this sandbox; exit status and the JSON report. */
export function statusCommand(
  sb: Suite,
  args = "",
): { status: number | null; report: FleetStatus; stderr: string } {
  const r = sh(
    `cd ${q(PROJECT_ROOT)} && HEADER_REWRITE_SANDBOX=${q(sb.t.dir)} npx tsx sandbox/status-cli.ts --json ${args}`,
    undefined,
    300_000,
  );
  return { status: r.status, report: JSON.parse(r.stdout) as FleetStatus, stderr: r.stderr };
}

export function statusTests(sb: Suite): void {
  it("reports a healthy fleet and exits 0", () => {
    const { status, report, stderr } = statusCommand(sb);
    expect(report.problems, stderr).toEqual([]);
    expect(status).toBe(0);
    expect(report.nodes.map((n) => n.node).sort()).toEqual(["bhs1", "lon1"]);
    for (const n of report.nodes) {
      expect(n.status!.postfixRunning).toBe(true);
      expect(n.status!.release!.bundle).toBe(n.expectedBundle);
      expect(n.status!.nexthops.map((h) => [h.tenant, h.ok])).toEqual([
        ["new_example", true],
        ["other_example", true],
      ]);
      expect(n.status!.certificates[0]).toMatchObject({ label: "node certificate", clientAuth: true });
      expect(n.status!.certificates[0].daysLeft).toBeGreaterThan(14);
    }
  });

  it("with a tenant sink down: the deferred mail, its reason and age, a failed handshake, exit 1", async () => {
    const sink = sb.t.sinks.find((s) => s.tenantId === "new_example")!;
    const lon1 = sb.t.nodes.find((n) => n.name === "lon1")!;
    stopSink(sink);
    try {
      const { r, id } = sb.send(lon1, { from: "alice@old.example", to: "status@partner.example" });
      expect(r.status, sb.explain(r, lon1)).toBe(0);
      await pollUntil(
        "the message deferred on lon1",
        () => queue(lon1).some((e) => e.queue_name === "deferred"),
        60_000,
      );
      const { status, report } = statusCommand(sb, "--max-deferred-age 0");
      expect(status).toBe(1);
      const lon = report.nodes.find((n) => n.node === "lon1")!;
      const deferred = lon.problems.find((p) => p.includes("deferred message(s)"));
      expect(deferred).toMatch(
        /^1 deferred message\(s\), the oldest \d+ s old; top reason at new-example\.mail\.protection\.outlook\.com/,
      );
      expect(deferred).toMatch(/Connection refused|timed out/);
      expect(deferred).toContain("hint: the tenant next hop does not answer from this node");
      const hop = lon.status!.nexthops.find((h) => h.tenant === "new_example")!;
      expect(hop.ok).toBe(false);
      expect(report.problems).toContainEqual(
        expect.stringMatching(/^bhs1: tenant new_example next hop .*no verified TLS handshake/),
      );
      console.log(`status with ${id} deferred:\n  ${report.problems.join("\n  ")}`);
    } finally {
      await restartSink(sb.t, sink);
    }
    await pollUntil("lon1's queue empty again", () => queue(lon1).length === 0, 60_000);
  }, 180_000);

  it("a node left on an older release is reported as drift", () => {
    const edited = editedMaps();
    const project = { ...sb.sandbox, maps: edited };
    try {
      // The repository moved on (edited maps); only lon rolled it out.
      const out = rollout(sb.t, sb.sandbox.stacks, edited, { only: ["lon"] });
      expect(out.ok, out.deployed.map((d) => d.result.stderr).join("\n")).toBe(true);
      const report = fleetStatus(sandboxStatusTargets(sb.t, project));
      expect(report.healthy).toBe(false);
      const bhs = report.nodes.find((n) => n.node === "bhs1")!;
      const lon = report.nodes.find((n) => n.node === "lon1")!;
      expect(lon.problems).toEqual([]);
      expect(bhs.problems).toEqual([
        `drift: runs bundle ${bhs.status!.release!.bundle.slice(0, 12)}, the repository renders ` +
          `${bhs.expectedBundle.slice(0, 12)} (roll it out: pulumi up, docs/operations.md "Rolling out")`,
      ]);
      expect(bhs.status!.release!.bundle).not.toBe(bhs.expectedBundle);
    } finally {
      const back = rollout(sb.t, sb.sandbox.stacks, sb.sandbox.maps);
      expect(back.ok).toBe(true);
    }
  });

  it("from the operator's seat: the stack's outputs through the Pulumi CLI, the deploy key over SSH", () => {
    const lon1 = sb.t.nodes.find((n) => n.name === "lon1")!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-status-"));
    // The Pulumi CLI as `pulumi stack output --json --stack lon` answers after `pulumi up -s lon`.
    const bhs1 = sb.t.nodes.find((n) => n.name === "bhs1")!;
    // The Pulumi CLI as `pulumi stack output --json --stack lon` answers; HOSTKEY is lon1's pinned key.
    const status = (hostKey: string) => {
      const outputs = {
        nodeAddresses: { lon1: { fqdn: lon1.fqdn, ipv4: lon1.ipv4 } },
        clientCertificateTenants: [],
        sshHostKeys: { lon1: hostKey },
      };
      fs.writeFileSync(
        path.join(dir, "pulumi"),
        `#!/bin/sh\n[ "$*" = "stack output --json --stack lon" ] || exit 3\necho ${q(JSON.stringify(outputs))}\n`,
        { mode: 0o755 },
      );
      return inNetns(
        sb.t.wan.netns,
        `cd ${q(PROJECT_ROOT)} && PATH=${q(dir)}:$PATH npx tsx scripts/status.ts --stack lon --json ` +
          `--identity ${q(deployKeyFile(sb.t))}`,
        undefined,
        300_000,
      );
    };
    // Another node's key where lon1's should be: status refuses to talk to it (no trust on first use).
    const wrong = JSON.parse(status(nodeHostKey(sb.t, bhs1).publicKey.trim()).stdout) as FleetStatus;
    expect(wrong.nodes.map((n) => [n.node, n.answered])).toEqual([["lon1", false]]);
    expect(wrong.problems.join("\n")).toMatch(/Host key verification failed/);
    const r = status(nodeHostKey(sb.t, lon1).publicKey.trim());
    const report = JSON.parse(r.stdout) as FleetStatus;
    expect(report.nodes.map((n) => [n.node, n.answered])).toEqual([["lon1", true]]);
    // The production render is byte for byte what the sandbox deployed: no drift, healthy.
    expect(report.problems, r.stderr).toEqual([]);
    expect(r.status).toBe(0);
    expect(report.nodes[0].status!.release!.bundle).toBe(report.nodes[0].expectedBundle);
    expect(report.nodes[0].status!.nexthops.every((h) => h.ok)).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });
}
