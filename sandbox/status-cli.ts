// npm run sandbox:status [-- --json]: `npm run status` for the local sandbox's relay nodes, judged
// the same way (src/status/fleet-status.ts); exits 0 only when the sandbox fleet is healthy.
import { parseArgs } from "node:util";
import { limitsFromArgs, reportStatus } from "../src/status/fleet-status";
import { sandboxStatusTargets } from "./status";
import { DEFAULT_DIR, loadFleet, planTopology } from "./topology";

try {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean" },
      "max-deferred-age": { type: "string" },
      "min-certificate-days": { type: "string" },
    },
  });
  const project = loadFleet();
  const dir = process.env.HEADER_REWRITE_SANDBOX ?? DEFAULT_DIR;
  const targets = sandboxStatusTargets(planTopology(dir, project.stacks, project.maps), project);
  process.exit(reportStatus(targets, limitsFromArgs(values), values.json ?? false));
} catch (e) {
  console.error((e as Error).message);
  process.exit(2);
}
