// npm run bench:maps — validates and renders maps with 100,000 translation entries (per-address
// overrides, the shape a large migration has), then builds a node's full deploy script.
// Reports the median of several runs and peak memory. Not a test: nothing here can fail a build.
import { performance } from "node:perf_hooks";
import * as path from "node:path";
import { type MapKind, mapDisplayNames, parseMaps } from "../src/maps";
import { parseStackConfig, readStackFile } from "../src/config";
import { nodeIdentity } from "../src/render";
import { nodeSteps } from "../src/deploy";

const ROOT = path.join(__dirname, "..");
const N = Number(process.env.BENCH_ENTRIES ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

function bigMaps(n: number): Record<MapKind, string> {
  const t: string[] = ["@old.example @new.example", "@legacy.example @other.example"];
  for (let i = 0; i < n - 2; i++) t.push(`user${i}@old.example first${i}.last${i}@new.example`);
  return {
    translations: t.join("\n") + "\n",
    allowedSenders: "old.example OK\nlegacy.example OK\n",
    relayhosts:
      "@new.example [new-example.mail.protection.outlook.com]\n@other.example [other-example.mail.protection.outlook.com]\n",
    clientRanges: "192.0.2.0/24 OK\n2001:db8:a::/48 OK\n",
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function main(): void {
  const files = mapDisplayNames();
  const texts = bigMaps(N);
  const { raw, region, file } = readStackFile(ROOT, "lon");
  const cfg = parseStackConfig(raw, region, file);
  const validate: number[] = [];
  const render: number[] = [];
  let scriptBytes = 0;
  let peak = 0;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const maps = parseMaps(texts, files);
    const t1 = performance.now();
    const steps = nodeSteps({ stack: "lon", cfg, maps, node: nodeIdentity(cfg, "lon1") });
    const t2 = performance.now();
    validate.push(t1 - t0);
    render.push(t2 - t1);
    scriptBytes = steps.scripts.postfix.length;
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
  console.log(
    `bench:maps  ${N.toLocaleString("en")} translation entries, ${RUNS} runs, node ${process.version}`,
  );
  console.log(
    `  validate (parse + all rules):      median ${median(validate).toFixed(0)} ms  (runs: ${validate.map((x) => x.toFixed(0)).join(", ")})`,
  );
  console.log(
    `  render + deploy script for a node: median ${median(render).toFixed(0)} ms  (runs: ${render.map((x) => x.toFixed(0)).join(", ")})`,
  );
  console.log(`  deploy script size ${mb(scriptBytes)} MiB; peak RSS ${mb(peak)} MiB`);
}

main();
