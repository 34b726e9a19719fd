// The sandbox's `pulumi up -s lon` then `pulumi up -s bhs`: stacks in rollout order, each stack's
// nodes one after the other, each through every production deploy step (the post-deploy check
// included). The stack outputs that rolloutAfter reads are a file here (rollout.json).
import * as fs from "node:fs";
import * as path from "node:path";
import type { NodeSecrets } from "../src/deploy/steps";
import type { RelayMaps } from "../src/maps/relay-maps";
import { FORCE_RELEASE_ENV, releaseId, rolloutOrder, rolloutRefusal } from "../src/deploy/region-gate";
import { deployNode, nodeContext } from "./nodes";
import type { Result } from "./shell";
import type { StackInput, Topology } from "./topology";

export interface NodeOutcome {
  node: string;
  stack: string;
  result: Result;
}

export interface RolloutOutcome {
  release: string;
  /** The nodes deployed, in order; the last one failed if the rollout stopped. */
  deployed: NodeOutcome[];
  /** The stacks that completed the release (every node passed its check). */
  completed: string[];
  ok: boolean;
}

/** What each stack last completed, as its `release` stack output would say. */
export function ranReleases(t: Topology): Record<string, string> {
  const file = path.join(t.dir, "rollout.json");
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, string>) : {};
}

function recordRelease(t: Topology, stack: string, release: string): void {
  const ran = { ...ranReleases(t), [stack]: release };
  fs.writeFileSync(path.join(t.dir, "rollout.json"), JSON.stringify(ran, null, 2) + "\n");
}

/** Rolls MAPS out to the relay nodes of STACKS (or only those named in `only`), stopping at the first failure. */
export function rollout(
  t: Topology,
  stacks: StackInput[],
  maps: RelayMaps,
  opts: { only?: string[]; forced?: string; secrets?: NodeSecrets } = {},
): RolloutOutcome {
  const release = releaseId(maps);
  const outcome: RolloutOutcome = { release, deployed: [], completed: [], ok: true };
  for (const { stack, cfg } of rolloutOrder(stacks)) {
    if (opts.only && !opts.only.includes(stack)) continue;
    const after = cfg.rolloutAfter.split("/").pop() ?? "";
    const refusal = after
      ? rolloutRefusal({
          stack,
          after,
          release,
          ran: ranReleases(t)[after],
          forced: opts.forced ?? process.env[FORCE_RELEASE_ENV],
        })
      : undefined;
    for (const name of cfg.nodes) {
      const n = t.nodes.find((x) => x.name === name && x.kind !== "stock")!;
      const result = deployNode(t, n, nodeContext(t, n, stacks, maps), { refusal, secrets: opts.secrets });
      outcome.deployed.push({ node: name, stack, result });
      if (result.status !== 0) return { ...outcome, ok: false };
    }
    recordRelease(t, stack, release);
    outcome.completed.push(stack);
  }
  return outcome;
}
