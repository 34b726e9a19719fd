// The sandbox's relay nodes as status targets (npm run sandbox:status), reached over SSH from
// the deployer's seat like a deploy step, judged against the bundle the sandbox deploys.
import { RUN_AS_ROOT } from "../src/node-layout";
import type { StatusTarget } from "../src/status/fleet-status";
import { nodeContext, ssh } from "./nodes";
import type { Fleet, Topology } from "./topology";
import { planNode } from "../src/plan";

export function sandboxStatusTargets(t: Topology, project: Fleet): StatusTarget[] {
  return t.nodes
    .filter((n) => n.kind !== "stock")
    .map((n) => {
      const ctx = nodeContext(t, n, project.stacks, project.maps);
      return {
        node: n.name,
        cfg: ctx.cfg,
        bundle: planNode(ctx, n.name, { clientCertTenants: [] }).bundle,
        run: (script: string) => ssh(t, n, RUN_AS_ROOT, script, 240_000),
      };
    });
}
