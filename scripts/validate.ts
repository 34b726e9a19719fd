// npm run validate [-- --strict]: checks maps/ against every stack, offline, with the same rules and
// messages as `pulumi preview`. Exit 0 when clean (warnings allowed unless --strict), 1 otherwise.
import * as path from "node:path";
import { parseArgs } from "node:util";
import { listStacks } from "../src/config/stack-config";
import { validateProject } from "../src/review/offline-review";

const { values } = parseArgs({
  options: { strict: { type: "boolean", default: false }, maps: { type: "string" } },
});
// Messages name the maps as the operator wrote the path: maps/x for the project's, DIR/x for --maps DIR.
const mapsDir = values.maps ? path.resolve(values.maps) : undefined;
const shown = mapsDir ? path.relative(process.cwd(), mapsDir) : "maps";
const displayDir = !mapsDir ? "maps" : shown === "" ? "." : shown.startsWith("..") ? mapsDir : shown;
const r = validateProject(values.strict ?? false, mapsDir, displayDir);
for (const l of r.lines) console.log(l);
console.log(
  r.ok
    ? `${displayDir}/ is valid for stacks ${listStacks().join(", ")} (${r.warnings} warning(s))`
    : `${r.errors} error(s), ${r.warnings} warning(s) in ${r.files.join(", ")}; nothing may be deployed`,
);
process.exit(r.ok ? 0 : 1);
