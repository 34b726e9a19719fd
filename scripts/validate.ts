// npm run validate [-- --strict]: checks maps/ against every stack, offline, with the same rules and
// messages as `pulumi preview`. Exit 0 when clean (warnings allowed unless --strict), 1 otherwise.
import * as path from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, listStacks, parseStackConfig, readStackFile } from "../src/config";
import { MapValidationError, formatProblem, readMapTexts, parseMaps } from "../src/maps";

const ROOT = path.join(__dirname, "..");

export function validate(
  strict: boolean,
  mapsDir = path.join(ROOT, "maps"),
): { ok: boolean; lines: string[] } {
  const lines = new Set<string>();
  let ok = true;
  for (const stack of listStacks(ROOT)) {
    try {
      const { raw, region, file } = readStackFile(ROOT, stack);
      const cfg = parseStackConfig(raw, region, file);
      const { texts, files } = readMapTexts(mapsDir);
      const maps = parseMaps(texts, files, {
        widestV4: cfg.widestClientRangeV4,
        widestV6: cfg.widestClientRangeV6,
        strict,
      });
      for (const w of maps.warnings) lines.add(formatProblem(w));
    } catch (e) {
      ok = false;
      if (e instanceof MapValidationError) for (const p of e.problems) lines.add(formatProblem(p));
      else if (e instanceof ConfigError) lines.add(e.message);
      else throw e;
    }
  }
  return { ok, lines: [...lines] };
}

if (require.main === module) {
  const { values } = parseArgs({
    options: { strict: { type: "boolean", default: false }, maps: { type: "string" } },
  });
  const { ok, lines } = validate(values.strict ?? false, values.maps ? path.resolve(values.maps) : undefined);
  for (const l of lines) console.log(l);
  const errors = lines.filter((l) => / error: /.test(l)).length;
  const warnings = lines.filter((l) => / warning: /.test(l)).length;
  console.log(
    ok
      ? `maps/ is valid for stacks ${listStacks(ROOT).join(", ")} (${warnings} warning(s))`
      : `maps/: ${errors} error(s), ${warnings} warning(s); nothing may be deployed`,
  );
  process.exit(ok ? 0 : 1);
}
