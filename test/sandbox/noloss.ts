// No-loss battery on the sandbox: redeploys under load, a tenant outage, Postfix stopped mid-load.
// Every load is bounded in count and time; every message carries its own Message-ID.
import { expect, it } from "vitest";
import { readSink, startLoad, waitForArrivals } from "../../sandbox/mail";
import { nodeLog, onNode, queue } from "../../sandbox/node-host";
import { deployNode, nodeContext } from "../../sandbox/nodes";
import { restartSink, stopSink } from "../../sandbox/services";
import { editedMaps } from "../helpers/maps";
import type { SandboxNode } from "../../sandbox/topology";
import type { Suite } from "./harness";

/** Files in the node's queue directories (what a stopped Postfix holds). */
const queueFiles = (n: SandboxNode) =>
  onNode(n, "find /var/spool/postfix/{incoming,active,deferred,maildrop} -type f | wc -l").stdout.trim();

export function noLossTests(sb: Suite): void {
  const redeploys = "2,000 messages across both nodes while a config redeploy runs on each node";
  it(`${redeploys}: every Message-ID arrives exactly once`, async () => {
    const prefix = `noloss-${Date.now()}`;
    const per = 1000;
    const loads = sb.t.nodes.map((n) =>
      startLoad(sb.t, n, { count: per, prefix: `${prefix}-${n.name}`, connections: 4 }),
    );
    await new Promise((r) => setTimeout(r, 3000));
    const { stacks } = sb.sandbox;
    const maps = [editedMaps(), sb.sandbox.maps];
    for (const [round, m] of maps.entries()) {
      for (const n of sb.t.nodes) {
        const r = deployNode(sb.t, n, nodeContext(sb.t, n, stacks, m));
        expect(r.status, r.stderr).toBe(0);
        console.log(`mid-stream redeploy ${round + 1} on ${n.name}: ${r.stdout.trim().split("\n").pop()}`);
      }
    }
    const summaries = await Promise.all(loads);
    for (const s of summaries) {
      expect(s.failed, JSON.stringify(s)).toEqual([]);
      console.log(
        `${s.prefix}: ${s.accepted} accepted in ${s.seconds.toFixed(1)} s (${s.perSecond.toFixed(0)}/s), ` +
          `${s.retries} retries ${JSON.stringify(s.errors)}`,
      );
    }
    const counts = await waitForArrivals(sb.t, prefix, per * sb.t.nodes.length, 240_000);
    const dupes = [...counts.values()].filter((c) => c > 1).length;
    console.log(
      `arrived: ${counts.size} of ${per * sb.t.nodes.length} distinct Message-IDs, ${dupes} duplicated`,
    );
    expect(counts.size).toBe(per * sb.t.nodes.length);
    expect(dupes).toBe(0);
  }, 420_000);

  it("a tenant sink down for 60 s: messages defer, none bounces, all arrive once it is back", async () => {
    const sink = sb.t.sinks.find((s) => s.host === "new-example.mail.protection.outlook.com")!;
    const prefix = `outage-${Date.now()}`;
    stopSink(sink);
    const before = readSink(sink.dir).length;
    const per = 25;
    const summaries = await Promise.all(
      sb.t.nodes.map((n) =>
        startLoad(sb.t, n, { count: per, prefix: `${prefix}-${n.name}`, connections: 2 }),
      ),
    );
    for (const s of summaries) expect(s.failed).toEqual([]);
    await new Promise((r) => setTimeout(r, 60_000));
    expect(readSink(sink.dir).length).toBe(before);
    for (const n of sb.t.nodes) {
      const q = queue(n).filter((e) => e.recipients.some((rc) => rc.delay_reason));
      expect(q.length, `${n.name} holds the messages as deferred`).toBeGreaterThanOrEqual(per);
      expect(nodeLog(n, 100_000)).not.toMatch(/status=bounced/);
    }
    await restartSink(sb.t, sink);
    const counts = await waitForArrivals(sb.t, prefix, per * sb.t.nodes.length, 120_000);
    expect(counts.size).toBe(per * sb.t.nodes.length);
    expect([...counts.values()].every((c) => c === 1)).toBe(true);
    console.log(
      `outage: ${per * sb.t.nodes.length} messages deferred for 60 s, 0 bounced, all delivered once after the sink returned`,
    );
  }, 300_000);

  it("Postfix stopped during load and started again: everything accepted is delivered", async () => {
    const n = sb.t.nodes[0];
    const prefix = `stop-${Date.now()}`;
    const count = 300;
    const load = startLoad(sb.t, n, { count, prefix, connections: 4, deadline: 120 });
    await new Promise((r) => setTimeout(r, 1500));
    const stop = onNode(n, "postfix stop 2>&1");
    expect(stop.status, stop.stdout).toBe(0);
    console.log(`postfix stopped on ${n.name} mid-load; queue holds ${queueFiles(n)} file(s)`);
    await new Promise((r) => setTimeout(r, 3000));
    const start = onNode(n, "/usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1; postfix start 2>&1");
    expect(start.status, start.stdout).toBe(0);
    const s = await load;
    expect(s.failed, JSON.stringify(s)).toEqual([]);
    onNode(n, "postqueue -f");
    const counts = await waitForArrivals(sb.t, prefix, count, 180_000);
    console.log(
      `${s.accepted} accepted (${s.retries} retries after the stop: ${JSON.stringify(s.errors)}); ` +
        `${counts.size} delivered, ${[...counts.values()].filter((c) => c > 1).length} duplicated`,
    );
    expect(counts.size).toBe(count);
  }, 300_000);
}
