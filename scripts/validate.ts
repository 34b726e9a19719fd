// npm run validate [-- --strict]: checks maps/ against every stack, offline, with the same rules and
// messages as `pulumi preview`. Exit 0 when clean (warnings allowed unless --strict), 1 otherwise.
import * as path from "node:path";
import { parseArgs } from "node:util";
import { listStacks } from "../src/config";
import { validateProject } from "../src/review";

const { values } = parseArgs({
  options: { strict: { type: "boolean", default: false }, maps: { type: "string" } },
});
const { ok, lines } = validateProject(
  values.strict ?? false,
  values.maps ? path.resolve(values.maps) : undefined,
);
for (const l of lines) console.log(l);
const errors = lines.filter((l) => / error: /.test(l)).length;
const warnings = lines.filter((l) => / warning: /.test(l)).length;
console.log(
  ok
    ? `maps/ is valid for stacks ${listStacks().join(", ")} (${warnings} warning(s))`
    : `maps/: ${errors} error(s), ${warnings} warning(s); nothing may be deployed`,
);
process.exit(ok ? 0 : 1);
