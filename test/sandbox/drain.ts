// Removing nodes that hold mail for a tenant that is down (sandbox/remove.ts runs what `pulumi up`
// runs when a node leaves a stack): out of DNS first, no new mail, and nothing lost -- one node's
// queue moved to the other with the commands its stopped removal printed, the other drained once
// the tenant is back. Last in the sandbox: afterwards no node is left.
import { expect, it } from "vitest";
import { readSink } from "../../sandbox/mail";
import { onNode, queue } from "../../sandbox/node-host";
import { removeNode } from "../../sandbox/remove";
import { restartSink, stopSink } from "../../sandbox/services";
import { pollUntil } from "../../sandbox/shell";
import type { SandboxNode } from "../../sandbox/topology";
import type { Suite } from "./harness";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function drainTests(sb: Suite): void {
  it("removing both nodes while tenant B is down: the removal stops, the queue moves, every message arrives once", async () => {
    const sink = sb.t.sinks.find((s) => s.tenantId === "new_example")!;
    const node = (name: string): SandboxNode => sb.t.nodes.find((n) => n.name === name)!;
    const [bhs1, lon1] = [node("bhs1"), node("lon1")];
    const sent = new Map<string, string>();
    stopSink(sink);
    try {
      for (const n of [bhs1, lon1]) {
        for (let i = 0; i < 3; i++) {
          // Like Exchange Online, retry a 421 (the security battery's burst may still throttle lon1).
          for (let attempt = 0; ; attempt++) {
            const { r, id } = sb.send(n, { from: "alice@old.example", to: `drain${i}@partner.example` });
            if (r.status === 0) {
              sent.set(id, n.name);
              break;
            }
            expect(attempt, sb.explain(r, n)).toBeLessThan(20);
            await sleep(5000);
          }
        }
      }
      const deferred = (n: SandboxNode) => queue(n).filter((e) => e.recipients[0]?.delay_reason);
      for (const n of [bhs1, lon1])
        await pollUntil(`3 deferred on ${n.name}`, () => deferred(n).length === 3, 60_000);
      const bhsQueue = deferred(bhs1).map((e) => e.queue_id);

      // bhs1 goes first; the tenant stays down past its bound: the removal stops, the node stays.
      const stopped = await removeNode(sb.t, bhs1, sb.sandbox, { drainSeconds: 15 });
      expect(stopped.removed).toBe(false);
      expect(stopped.drain.stdout).toContain("bhs1.example.net: port 25 closed, no new mail is accepted");
      const said = stopped.drain.stderr;
      expect(said).toContain("bhs1.example.net still holds 3 queued message(s) after 15 s");
      for (const id of bhsQueue) expect(said).toContain(id);
      // It left DNS first: the shared name carries lon1 only; and it takes no new mail.
      const resolved = onNode(lon1, "getent ahostsv4 relay.example.net").stdout;
      expect(resolved).toContain(lon1.ipv4);
      expect(resolved).not.toContain(bhs1.ipv4);
      const late = sb.send(bhs1, { from: "alice@old.example" });
      expect(late.r.status).not.toBe(0);
      expect(late.r.stdout + late.r.stderr).toMatch(/Connection refused/i);

      // Move the queue to lon1 with exactly the commands it printed (the copy is what scp would do).
      const here = /on bhs1\.example\.net:\s+(.+)$/m.exec(said)![1];
      const there = /and there:\s+(.+)$/m.exec(said)![1];
      expect(onNode(bhs1, here).status, "the commands for bhs1 run").toBe(0);
      const archive = onNode(bhs1, "base64 -w0 /tmp/header-rewrite-queue.tgz").stdout;
      expect(onNode(lon1, "base64 -d > /tmp/header-rewrite-queue.tgz", archive).status).toBe(0);
      const moved = onNode(lon1, there);
      expect(moved.status, moved.stderr).toBe(0);
      await pollUntil("bhs1's messages queued on lon1", () => queue(lon1).length === 6, 60_000);

      // The removal again: bhs1's queue is empty, its server goes.
      const gone = await removeNode(sb.t, bhs1, sb.sandbox, { drainSeconds: 15 });
      expect(gone.drain.stdout).toMatch(/bhs1\.example\.net: drained in \d+ s, the queue is empty/);
      expect(gone.removed).toBe(true);

      // lon1 goes while the tenant comes back: it delivers everything before its server goes.
      const removal = removeNode(sb.t, lon1, sb.sandbox, { drainSeconds: 180 });
      await sleep(8000);
      await restartSink(sb.t, sink);
      const last = await removal;
      expect(last.drain.stdout).toMatch(/lon1\.example\.net: drained in \d+ s, the queue is empty/);
      expect(last.removed).toBe(true);
    } finally {
      await restartSink(sb.t, sink).catch(() => undefined);
    }
    const arrived = readSink(sink.dir).filter(
      (r) => r.messageId && sent.has(r.messageId.replace(/^<|>$/g, "")),
    );
    const ids = arrived.map((r) => r.messageId!.replace(/^<|>$/g, ""));
    expect(new Set(ids).size, "every message arrived").toBe(6);
    expect(ids.length, "each exactly once").toBe(6);
    // bhs1's messages reached tenant B through lon1, where they were moved.
    for (const r of arrived) expect(r.node).toBe("lon1");
    console.log(`drain: 6 messages queued on two removed nodes, all delivered once through lon1`);
  }, 600_000);
}
