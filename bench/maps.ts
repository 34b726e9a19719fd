// npm run bench:maps — validates and renders maps with 100,000 translation entries (per-address
// overrides, the shape a large migration has), then builds a node's full deploy script.
// Reports the median of several runs and peak memory. Not a test: nothing here can fail a build.
import { performance } from "node:perf_hooks";
import { loadStackConfig } from "../src/config/stack-config";
import { type MapTexts, parseMaps } from "../src/maps/relay-maps";
import { fmt } from "./stats";
import { planNode } from "../src/plan";

const N = Number(process.env.BENCH_ENTRIES ?? 100_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

function bigMaps(n: number): MapTexts {
  const t: string[] = ["@old.example @new.example", "@legacy.example @other.example"];
  for (let i = 0; i < n - 2; i++) t.push(`user${i}@old.example first${i}.last${i}@new.example`);
  return {
    translate_domains: t.join("\n") + "\n",
    allowed_senders: "old.example OK\nlegacy.example OK\n",
    per_sender_relayhosts:
      "@new.example [new-example.mail.protection.outlook.com]\n" +
      "@other.example [other-example.mail.protection.outlook.com]\n",
    allow_relay_by_ip: "192.0.2.0/24 OK\n2001:db8:a::/48 OK\n",
    tenant_pins:
      "old.example enforce dkim=old.example\nlegacy.example enforce dkim=tenanta.onmicrosoft.com\n",
    calendar_addresses: "legacy.example keep\n",
  };
}

function main(): void {
  const texts = bigMaps(N);
  const cfg = loadStackConfig("lon");
  const validate: number[] = [];
  const render: number[] = [];
  let scriptBytes = 0;
  let peak = 0;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const maps = parseMaps(texts);
    const t1 = performance.now();
    const postfix = planNode({ stack: "lon", cfg, maps }, "lon1")
      .steps()
      .find((s) => s.id === "postfix")!;
    const t2 = performance.now();
    validate.push(t1 - t0);
    render.push(t2 - t1);
    scriptBytes = postfix.script.length;
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
  console.log(
    `bench:maps  ${N.toLocaleString("en")} translation entries, ${RUNS} runs, node ${process.version}`,
  );
  console.log(`  validate (parse + all rules):      ${fmt(validate, "ms", 0)}`);
  console.log(`  render + deploy script for a node: ${fmt(render, "ms", 0)}`);
  console.log(`  deploy script size ${mb(scriptBytes)} MiB; peak RSS ${mb(peak)} MiB`);
}

main();
