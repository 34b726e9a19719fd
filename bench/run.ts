// npm run bench — the figures docs/performance.md quotes (not tests: nothing here fails a build).
//  A. Pulumi program under mocks: evaluation time of both stacks; a redeploy with no change leaves
//     every remote command's inputs identical (zero commands run), a one-line map edit changes only
//     the Postfix step.
//  B. Sandbox (root): relay throughput of the full rendered config against a stock Debian Postfix
//     relaying with TLS to the same sink, in interleaved pairs after a warm-up, with the node's CPU
//     per message by process; latency through each at a fixed moderate rate; per-message cost with
//     100,000-entry maps against 10-entry maps; time from starting the deploy step to a one-line map
//     change being live, and where that time goes.
// Every load is bounded (count and time) and goes only to the sandbox's own namespaces.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { copyProject } from "../test/helpers/pulumi-mocks";
import { POSTFIX_LIVE } from "../src/node-layout";
import type { RelayMaps } from "../src/maps/relay-maps";
import { PROJECT_ROOT as ROOT } from "../src/project";
import { RUN_AS_ROOT } from "../src/node-layout";
import { readSink, startLoad, waitForArrivals } from "../sandbox/mail";
import { onNode } from "../sandbox/node-host";
import { deployNode, nodeContext, ssh } from "../sandbox/nodes";
import { type SandboxNode, type Topology, committedMapsWith } from "../sandbox/topology";
import { down, up } from "../sandbox/up";
import { bootstrapMedian, fmt, median, percentile } from "./stats";
import { runMain, sh } from "../sandbox/shell";
import { planNode } from "../src/plan";

const RUNS = Number(process.env.BENCH_RUNS ?? 9);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 500);
const MAP_RUNS = 5;
const DEPLOY_RUNS = 7;
const LATENCY_RATE = 20;
const LATENCY_MESSAGES = 200;
const LATENCY_ROUNDS = 4;
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

/** Empties the sinks, so waiting for arrivals reads only this run's records (cheap, same for both sides). */
function clearSinks(t: Topology): void {
  for (const sink of t.sinks)
    for (const f of fs.existsSync(sink.dir) ? fs.readdirSync(sink.dir) : [])
      fs.rmSync(path.join(sink.dir, f));
}

/** CPU time (ms) of every process of a node by name: user + system, plus reaped children (Postfix's master). */
function nodeCpu(n: SandboxNode): Map<string, number> {
  const tick = 1000 / Number(sh("getconf CLK_TCK").stdout.trim() || 100);
  const byName = new Map<string, number>();
  for (const pid of sh(`ip netns pids ${n.netns}`).stdout.trim().split("\n").filter(Boolean)) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile: its time is in its parent's children counters
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14-17 of proc(5): utime, stime, cutime, cstime; f[0] is field 3.
    const ms = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * tick;
    byName.set(name, (byName.get(name) ?? 0) + ms);
  }
  return byName;
}

function cpuDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const d = new Map<string, number>();
  for (const [k, v] of after) d.set(k, v - (before.get(k) ?? 0));
  return d;
}

interface Run {
  perSecond: number;
  /** CPU ms per message on the node, by process name. */
  cpu: Map<string, number>;
  /** Latency (ms) per message: the client's 250 after DATA to the sink's receipt. */
  latency: number[];
}

/** One bounded run through NODE: throughput, the node's CPU per message, and per-message latency. */
async function run(t: Topology, n: SandboxNode, label: string, count: number, rate = 0): Promise<Run> {
  clearSinks(t);
  const prefix = `bench-${label}-${Date.now()}`;
  const cpu0 = nodeCpu(n);
  const t0 = performance.now();
  const summary = await startLoad(t, n, { count, prefix, connections: 4, deadline: 180, rate });
  if (summary.failed.length)
    throw new Error(`${label}: ${summary.failed.length} messages failed: ${summary.failed[0]}`);
  const counts = await waitForArrivals(t, prefix, count, 180_000);
  if (counts.size !== count) throw new Error(`${label}: only ${counts.size} of ${count} arrived`);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuDelta(cpu0, nodeCpu(n));
  for (const [k, v] of cpu) cpu.set(k, v / count);
  const received = new Map(
    t.sinks.flatMap((s) => readSink(s.dir)).map((r) => [r.messageId ?? "", Date.parse(r.receivedAt)]),
  );
  const latency = Object.entries(summary.acceptedById).map(([id, at]) => received.get(id)! - at);
  return { perSecond: count / seconds, cpu, latency };
}

function sizedMaps(extraOverrides: number): RelayMaps {
  return committedMapsWith({
    translate_domains: Array.from(
      { length: extraOverrides },
      (_, i) => `user${i}@old.example first${i}.last${i}@new.example`,
    ),
  });
}

/** "smtpd 1.2, cleanup 0.8, …": the names that use at least 3 % of the total. */
function cpuBreakdown(runs: Run[]): { total: number; parts: string } {
  const sum = new Map<string, number>();
  for (const r of runs) for (const [k, v] of r.cpu) sum.set(k, (sum.get(k) ?? 0) + v / runs.length);
  const total = [...sum.values()].reduce((a, b) => a + b, 0);
  const parts = [...sum]
    .filter(([, v]) => v >= total * 0.03)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(", ");
  return { total, parts };
}

/** Where the postfix step's time goes: its own xtrace with timestamps, summed by what each command does. */
function deployProfile(t: Topology, relay: SandboxNode, script: string): string {
  const traced = script.replace(
    "set -euo pipefail\n",
    "set -euo pipefail\nexec 9>/tmp/deploy.trace; BASH_XTRACEFD=9; PS4='+ ${EPOCHREALTIME} '; set -x\n",
  );
  const t0 = performance.now();
  const r = ssh(t, relay, RUN_AS_ROOT, traced);
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(r.stderr);
  const lines = onNode(relay, "cat /tmp/deploy.trace").stdout.split("\n");
  const steps = lines
    .map((l) => /^\++ (\d+\.\d+) (.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ at: Number(m[1]), cmd: m[2] }));
  const phases: [string, RegExp][] = [
    ["postmap builds", /^postmap -c \S+ cdb:/],
    ["postconf checks", /^postconf -c \S+ -[nMm]/],
    ["lookups through the staged maps", /postmap -c \S+ -q|check_map|^grep -v|^awk|^wc/],
    ["pinning milter", /milter|answers|systemctl|python3/],
    [
      "reload and the check it took",
      /postfix (reload|status)|took_effect|listeners_missing|^ss |^tail|^stat|^sleep|^seq|^getent|postconf -c \S+ -[Mh]/,
    ],
    ["writing the stage", /^cat|^cp|^rm|^mkdir|^chmod|^mktemp|^echo|^install/],
  ];
  const spent = new Map<string, number>();
  for (let i = 0; i + 1 < steps.length; i++) {
    const phase = phases.find(([, re]) => re.test(steps[i].cmd))?.[0] ?? "other";
    spent.set(phase, (spent.get(phase) ?? 0) + steps[i + 1].at - steps[i].at);
  }
  const inside = steps.length ? steps[steps.length - 1].at - steps[0].at : 0;
  return (
    `wall ${wall.toFixed(2)} s = SSH connection and session ${(wall - inside).toFixed(2)} s + script ${inside.toFixed(2)} s (` +
    [...spent]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join(", ") +
    ")"
  );
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
    // Warm both (TLS session caches, connection caches, page cache), then measure in pairs A B, B A, …
    await run(t, relay, "warm-ours", 100);
    await run(t, stock, "warm-stock", 100);
    const ours: Run[] = [];
    const base: Run[] = [];
    for (let i = 0; i < RUNS; i++) {
      const pair = [
        async () => ours.push(await run(t, relay, "ours", MESSAGES)),
        async () => base.push(await run(t, stock, "stock", MESSAGES)),
      ];
      for (const side of i % 2 === 0 ? pair : [...pair].reverse()) await side();
    }
    const rate = (runs: Run[]) => runs.map((r) => r.perSecond);
    say(
      `- throughput, ${MESSAGES} messages per run, 4 connections, end to end ` +
        `(client -> relay -> verified TLS -> sink), ${RUNS} interleaved pairs after a warm-up of each:`,
    );
    say(
      `  - header-rewrite (${relay.name}: tenant pinning enforced (every message DKIM-verified), rewrite, ` +
        "sender and client checks, per-tenant transport, TLS in and out; anvil rate limits lifted): " +
        fmt(rate(ours), "msg/s"),
    );
    say(
      `  - stock Debian Postfix (${stock.name}: Debian main.cf + relayhost, TLS in and out): ` +
        fmt(rate(base), "msg/s"),
    );
    const pairs = ours.map((x, i) => x.perSecond / base[i].perSecond);
    const [lo, hi] = bootstrapMedian(pairs);
    say(
      `  - ratio header-rewrite / stock: ${median(pairs).toFixed(2)} (median of the pairs' ratios; ` +
        `pairs ${Math.min(...pairs).toFixed(2)}–${Math.max(...pairs).toFixed(2)}, ` +
        `bootstrap 95 % interval ${lo.toFixed(2)}–${hi.toFixed(2)}; pairs: ${pairs.map((r) => r.toFixed(2)).join(", ")})`,
    );
    const cpuOurs = cpuBreakdown(ours);
    const cpuBase = cpuBreakdown(base);
    say(
      `- CPU per message on the relay node (all its processes, mean of the runs): header-rewrite ` +
        `${cpuOurs.total.toFixed(2)} ms (${cpuOurs.parts}); stock ${cpuBase.total.toFixed(2)} ms (${cpuBase.parts}); ` +
        `ratio ${(cpuOurs.total / cpuBase.total).toFixed(2)}`,
    );

    // How much of the gap the log-reading exporter is (it runs on every production node).
    const exporter = "prometheus-postfix-exporter";
    onNode(relay, `systemctl stop ${exporter}`);
    const quiet: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const a = await run(t, relay, "ours-no-exporter", MESSAGES);
        const b = await run(t, stock, "stock", MESSAGES);
        quiet.push(a.perSecond / b.perSecond);
      }
    } finally {
      onNode(relay, `systemctl start ${exporter}`);
    }
    say(
      `- the same with ${exporter} stopped on the relay (3 pairs): ratio ${median(quiet).toFixed(2)} ` +
        `(pairs: ${quiet.map((r) => r.toFixed(2)).join(", ")})`,
    );

    // Latency at a fixed, moderate rate: neither side saturated, so this is the time in the relay.
    const latOurs: number[] = [];
    const latBase: number[] = [];
    for (let i = 0; i < LATENCY_ROUNDS; i++) {
      const pair = [
        async () =>
          latOurs.push(...(await run(t, relay, "lat-ours", LATENCY_MESSAGES, LATENCY_RATE)).latency),
        async () =>
          latBase.push(...(await run(t, stock, "lat-stock", LATENCY_MESSAGES, LATENCY_RATE)).latency),
      ];
      for (const side of i % 2 === 0 ? pair : [...pair].reverse()) await side();
    }
    const pct = (xs: number[]) =>
      `p50 ${percentile(xs, 50).toFixed(0)} ms, p99 ${percentile(xs, 99).toFixed(0)} ms`;
    say(
      `- latency in the relay (client's 250 after DATA -> the sink's receipt), ${LATENCY_RATE} msg/s, ` +
        `${LATENCY_ROUNDS} interleaved rounds of ${LATENCY_MESSAGES} per side: header-rewrite ${pct(latOurs)}; ` +
        `stock ${pct(latBase)}`,
    );

    const big = sizedMaps(100_000);
    const small = sizedMaps(10 - committed.translations.length);
    const withMaps = async (maps: RelayMaps, label: string) => {
      const r = deployNode(t, relay, unthrottled(maps));
      if (r.status !== 0) throw new Error(`deploy of ${label} maps failed: ${r.stderr}`);
      await run(t, relay, `warm-${label}`, 100);
      const xs: number[] = [];
      for (let i = 0; i < MAP_RUNS; i++) xs.push((await run(t, relay, label, MESSAGES)).perSecond);
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
    const edit = (i: number) =>
      committedMapsWith({ translate_domains: i % 2 === 0 ? [] : [`bob@old.example robert${i}@new.example`] });
    for (let i = 0; i < DEPLOY_RUNS; i++) {
      const want = i % 2 === 0 ? "" : `robert${i}@new.example`;
      const t0 = performance.now();
      // The step `pulumi up` runs for a map edit until it is live (its check, verify, runs after).
      const r = deployNode(t, relay, unthrottled(edit(i)), { only: ["postfix"] });
      if (r.status !== 0) throw new Error(r.stderr);
      const live = onNode(
        relay,
        `postmap -q bob@old.example cdb:${POSTFIX_LIVE}/translate_domains`,
      ).stdout.trim();
      if (live !== want) throw new Error(`map change not live: ${live}`);
      times.push((performance.now() - t0) / 1000);
    }
    say(
      "- deploy step start -> one-line map change live (SSH, stage, postmap, checks, switch, reload, " +
        `the check that the master took it): ${fmt(times, "s", 2)}`,
    );
    const ctx1 = unthrottled(edit(1));
    const script = planNode(ctx1, ctx1.node.name)
      .steps()
      .find((s) => s.id === "postfix")!.script;
    say(`  - where one such deploy's time goes: ${deployProfile(t, relay, script)}`);
  } finally {
    down(dir, { quiet: true });
  }
}

async function main(): Promise<void> {
  const started = new Date().toISOString();
  const debian = fs.existsSync("/etc/debian_version")
    ? fs.readFileSync("/etc/debian_version", "utf8").trim()
    : "?";
  say(
    `# npm run bench — ${started}, ${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), ` +
      `Linux ${os.release()}, Debian ${debian}, node ${process.version}`,
  );
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
