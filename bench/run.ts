// npm run bench — the figures the README quotes (not tests: nothing here fails a build).
//  A. Pulumi program under mocks: evaluation time of both stacks; a redeploy with no change leaves
//     every remote command's inputs identical (zero commands run), a one-line map edit changes only
//     the Postfix step.
//  B. Sandbox (root): relay throughput of the full rendered config against a stock Debian Postfix
//     relaying with TLS to the same sink; per-message cost with 100,000-entry maps against 10-entry
//     maps; time from starting the deploy step to a one-line map change being live.
// Every load is bounded (count and time) and goes only to the sandbox's own namespaces.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { copyProject } from "../harness/pulumi-mocks";
import { POSTFIX_LIVE } from "../src/layout";
import type { RelayMaps } from "../src/maps";
import { PROJECT_ROOT as ROOT } from "../src/project";
import { startLoad, waitForArrivals } from "../sandbox/mail";
import { onNode } from "../sandbox/node-host";
import { deployNode, nodeContext } from "../sandbox/nodes";
import { type SandboxNode, type Topology, committedMapsWith } from "../sandbox/topology";
import { down, up } from "../sandbox/up";
import { fmt, median } from "./stats";
import { runMain } from "../sandbox/shell";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 500);
const lines: string[] = [];
const say = (s: string) => {
  console.log(s);
  lines.push(s);
};

function mocksEval(stack: string, dir: string): { ms: number; commands: Record<string, string> } {
  const r = spawnSync(
    path.join(ROOT, "node_modules", ".bin", "tsx"),
    [path.join(ROOT, "bench", "mocks-eval.ts"), stack, dir],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`mocks evaluation of ${stack} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

function partA(): void {
  say("## A. Pulumi program under mocks");
  for (const stack of ["lon", "bhs"]) {
    const times = Array.from({ length: 5 }, () => mocksEval(stack, ROOT).ms);
    say(`- evaluation of stack ${stack} (import + every resource registered): ${fmt(times, "ms", 0)}`);
  }
  const a = mocksEval("lon", ROOT).commands;
  const b = mocksEval("lon", ROOT).commands;
  const rerun = Object.keys(a).filter((k) => a[k] !== b[k]);
  const total = Object.keys(a).length;
  say(
    `- redeploy with nothing changed: ${rerun.length} of ${total} remote commands have different inputs, ` +
      `so \`pulumi up\` runs ${rerun.length}`,
  );
  const copy = copyProject();
  fs.appendFileSync(path.join(copy, "maps", "translate_domains"), "bob@old.example robert@new.example\n");
  const c = mocksEval("lon", copy).commands;
  say(
    `- one-line edit of maps/translate_domains: commands with new inputs: ${Object.keys(a)
      .filter((k) => a[k] !== c[k])
      .join(", ")}`,
  );
}

/** End-to-end throughput: from the first connection to the last message at the sink. */
async function throughput(t: Topology, n: SandboxNode, label: string): Promise<number> {
  const prefix = `bench-${label}-${Date.now()}`;
  const t0 = performance.now();
  const summary = await startLoad(t, n, { count: MESSAGES, prefix, connections: 4, deadline: 180 });
  if (summary.failed.length)
    throw new Error(`${label}: ${summary.failed.length} messages failed: ${summary.failed[0]}`);
  const counts = await waitForArrivals(t, prefix, MESSAGES, 180_000);
  if (counts.size !== MESSAGES) throw new Error(`${label}: only ${counts.size} of ${MESSAGES} arrived`);
  return MESSAGES / ((performance.now() - t0) / 1000);
}

function sizedMaps(extraOverrides: number): RelayMaps {
  return committedMapsWith({
    translate_domains: Array.from(
      { length: extraOverrides },
      (_, i) => `user${i}@old.example first${i}.last${i}@new.example`,
    ),
  });
}

async function partB(): Promise<void> {
  say("\n## B. Sandbox (real Postfix, loopback namespaces only)");
  const dir = "/var/tmp/header-rewrite-sandbox-bench";
  const { t, stacks, maps: committed } = await up(dir, { install: false, stockNode: true });
  try {
    const relay = t.nodes.find((n) => n.kind !== "stock")!;
    // The measured relay runs the full rendered config except the per-client rate limits, lifted so
    // that the figures show the pipeline and not anvil throttling (the stock baseline has none).
    const unthrottled = (maps: RelayMaps) => {
      const ctx = nodeContext(t, relay, stacks, maps);
      return {
        ...ctx,
        cfg: { ...ctx.cfg, clientMessageRateLimit: 1_000_000, clientConnectionRateLimit: 1_000_000 },
      };
    };
    const lifted = deployNode(t, relay, unthrottled(committed));
    if (lifted.status !== 0) throw new Error(lifted.stderr);
    const stock = t.nodes.find((n) => n.kind === "stock")!;
    const ours: number[] = [];
    const base: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // Alternate the order so drift on a noisy machine hits both sides alike.
      if (i % 2 === 0) {
        ours.push(await throughput(t, relay, "ours"));
        base.push(await throughput(t, stock, "stock"));
      } else {
        base.push(await throughput(t, stock, "stock"));
        ours.push(await throughput(t, relay, "ours"));
      }
    }
    say(
      `- throughput, ${MESSAGES} messages per run, 4 connections, end to end ` +
        "(client -> relay -> verified TLS -> sink):",
    );
    say(
      `  - header-rewrite (${relay.name}: tenant pinning enforced (every message DKIM-verified), rewrite, ` +
        "sender and client checks, per-tenant transport, TLS in and out; anvil rate limits lifted): " +
        fmt(ours, "msg/s"),
    );
    say(
      `  - stock Debian Postfix (${stock.name}: Debian main.cf + relayhost, TLS in and out): ` +
        fmt(base, "msg/s"),
    );
    const pairs = ours.map((x, i) => x / base[i]);
    say(
      `  - ratio header-rewrite / stock: ${(median(ours) / median(base)).toFixed(2)} (medians); ` +
        `run by run ${pairs.map((r) => r.toFixed(2)).join(", ")}, median ${median(pairs).toFixed(2)}`,
    );

    const big = sizedMaps(100_000);
    const small = sizedMaps(10 - committed.translations.length);
    const withMaps = async (maps: RelayMaps, label: string) => {
      const r = deployNode(t, relay, unthrottled(maps));
      if (r.status !== 0) throw new Error(`deploy of ${label} maps failed: ${r.stderr}`);
      const xs: number[] = [];
      for (let i = 0; i < RUNS; i++) xs.push(await throughput(t, relay, label));
      return xs;
    };
    const bigRuns = await withMaps(big, "100k");
    const smallRuns = await withMaps(small, "10");
    say(
      `- maps with ${big.translations.length.toLocaleString("en")} translation entries: ${fmt(bigRuns, "msg/s")}`,
    );
    say(`- maps with ${small.translations.length} translation entries: ${fmt(smallRuns, "msg/s")}`);
    const costRatio = (median(smallRuns) / median(bigRuns)).toFixed(2);
    say(`- per-message cost ratio 100k / 10 entries (time per message): ${costRatio}`);

    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const maps = committedMapsWith({
        translate_domains: i % 2 === 0 ? [] : [`bob@old.example robert${i}@new.example`],
      });
      const want = i % 2 === 0 ? "" : `robert${i}@new.example`;
      const t0 = performance.now();
      // The step `pulumi up` runs for a map edit until it is live (its check, verify, runs after).
      const r = deployNode(t, relay, unthrottled(maps), { only: ["postfix"] });
      if (r.status !== 0) throw new Error(r.stderr);
      const live = onNode(
        relay,
        `postmap -q bob@old.example cdb:${POSTFIX_LIVE}/translate_domains`,
      ).stdout.trim();
      if (live !== want) throw new Error(`map change not live: ${live}`);
      times.push((performance.now() - t0) / 1000);
    }
    say(
      "- deploy step start -> one-line map change live (SSH, stage, postmap, checks, switch, reload): " +
        fmt(times, "s"),
    );
  } finally {
    down(dir, { quiet: true });
  }
}

async function main(): Promise<void> {
  const started = new Date().toISOString();
  say(`# npm run bench — ${started}, ${os.cpus().length} cores, node ${process.version}`);
  partA();
  if (process.getuid?.() === 0) await partB();
  else say("\n(part B needs root: sudo npm run bench)");
  const out = path.join(ROOT, "bench", "RESULTS.md");
  const reproduce =
    `Reproduce: \`sudo npm run bench\` (BENCH_RUNS=${RUNS}, BENCH_MESSAGES=${MESSAGES}); ` +
    "maps alone: `npm run bench:maps`.";
  fs.writeFileSync(out, `${lines.join("\n")}\n\n${reproduce}\n`);
  console.log(`\nwritten to ${path.relative(ROOT, out)}`);
}

runMain(main);
