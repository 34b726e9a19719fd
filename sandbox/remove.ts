// Removing a node from the sandbox as `pulumi up` does after it leaves a stack's nodes: its DNS
// records go first, then its drain (the production script, src/deploy/steps.ts) runs on it, and only a
// drained node's server goes; a drain that fails leaves the node running.
import * as fs from "node:fs";
import * as path from "node:path";
import { drainScript } from "../src/deploy/steps";
import { RUN_AS_ROOT } from "../src/node-layout";
import { killNamespace, unmountBelow } from "./node-host";
import { nodeContext, sshAsync } from "./nodes";
import { type Result, sh } from "./shell";
import type { Fleet, SandboxNode, Topology } from "./topology";

/** Takes the node's addresses out of the sandbox DNS (its own name and the shared service name). */
function removeFromDns(t: Topology, n: SandboxNode): void {
  const file = path.join(t.dir, "dns", "hosts");
  const kept = fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => !l.startsWith(`${n.ipv4} `) && !l.startsWith(`${n.ipv6} `));
  fs.writeFileSync(file, kept.join("\n"));
  // dnsmasq re-reads its --addn-hosts files on SIGHUP.
  sh(`kill -HUP $(cat ${path.join(t.dir, "dns", "dnsmasq.pid")})`);
}

export interface Removal {
  drain: Result;
  /** The server is gone (the drain succeeded). */
  removed: boolean;
}

export async function removeNode(
  t: Topology,
  n: SandboxNode,
  project: Fleet,
  opts: { drainSeconds?: number } = {},
): Promise<Removal> {
  removeFromDns(t, n);
  const ctx = nodeContext(t, n, project.stacks, project.maps);
  const cfg = { ...ctx.cfg, ...(opts.drainSeconds ? { drainSeconds: opts.drainSeconds } : {}) };
  const drain = await sshAsync(t, n, RUN_AS_ROOT, drainScript(cfg, ctx.node));
  if (drain.status !== 0) return { drain, removed: false };
  killNamespace(n.netns);
  unmountBelow(n.root);
  return { drain, removed: true };
}
