// Small, shared pieces for driving the sandbox: shell, namespaces, SSH to nodes, swaks, sinks.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { RUN_AS_ROOT } from "../src/deploy";
import type { SinkRecord } from "./sink";
import type { SandboxNode, Topology } from "./topology";

export interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

export function sh(command: string, input?: string, timeoutMs = 120_000): Result {
  const r = spawnSync("bash", ["-c", command], {
    input,
    encoding: "utf8",
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  return {
    status: r.status ?? -1,
    stdout: r.stdout ?? "",
    stderr: (r.stderr ?? "") + (r.error ? String(r.error) : ""),
  };
}

export function must(r: Result, what: string): Result {
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stderr || r.stdout}`);
  return r;
}

export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function inNetns(netns: string, command: string, input?: string, timeoutMs?: number): Result {
  return sh(`ip netns exec ${netns} bash -c ${q(command)}`, input, timeoutMs);
}

export function keyFile(t: Topology): string {
  return path.join(t.dir, "keys", "deploy");
}

/** SSH as the image's user from the deployer's seat (the wan namespace), like remote.Command. */
export function ssh(
  t: Topology,
  node: SandboxNode,
  command: string,
  input?: string,
  timeoutMs = 300_000,
): Result {
  const opts =
    "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5";
  return inNetns(
    t.wan.netns,
    `ssh -i ${q(keyFile(t))} ${opts} debian@${node.ipv4} ${q(command)}`,
    input,
    timeoutMs,
  );
}

/** Runs a deploy script on a node exactly as the Pulumi program's remote.Command does. */
export function runStep(t: Topology, node: SandboxNode, script: string): Result {
  return ssh(t, node, RUN_AS_ROOT, script);
}

/** The node's PID 1 (its sshd), for entering all of its namespaces. */
export function nodePid(node: SandboxNode): number | undefined {
  const pids = sh(`ip netns pids ${node.netns} 2>/dev/null`).stdout.trim().split("\n").filter(Boolean);
  for (const pid of pids) {
    const status = fs.existsSync(`/proc/${pid}/status`) ? fs.readFileSync(`/proc/${pid}/status`, "utf8") : "";
    const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1].trim().split(/\s+/);
    if (nspid && nspid.length > 1 && nspid[nspid.length - 1] === "1") return Number(pid);
  }
  return undefined;
}

/** Runs a command inside a node (mount, UTS, network and PID namespaces), as root. */
export function onNode(node: SandboxNode, command: string, input?: string, timeoutMs?: number): Result {
  const pid = nodePid(node);
  if (!pid) return { status: -1, stdout: "", stderr: `node ${node.name} is not running` };
  return sh(`nsenter -t ${pid} -m -u -n -p -- bash -c ${q(command)}`, input, timeoutMs);
}

export function nodeLog(t: Topology, node: SandboxNode, lines = 40): string {
  const f = path.join(t.dir, "nodes", node.name, "log", "postfix.log");
  if (!fs.existsSync(f)) return `(${node.name}: no postfix log)`;
  return fs
    .readFileSync(f, "utf8")
    .split("\n")
    .slice(-lines - 1)
    .join("\n");
}

/** swaks from one of the sandbox's client hosts. */
export function swaks(netns: string, args: string, timeoutMs = 60_000): Result {
  return inNetns(netns, `swaks --helo client.example ${args} 2>&1`, undefined, timeoutMs);
}

export function readSink(dir: string): SinkRecord[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /^[^.].*\.json$/.test(f))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as SinkRecord);
}

export function sinkMessage(dir: string, record: SinkRecord): string {
  return fs.readFileSync(path.join(dir, `${record.id}.eml`), "latin1");
}

/** Waits (bounded) until a message with this Message-ID has reached any sink. */
export async function waitForMessage(
  t: Topology,
  messageId: string,
  timeoutMs = 60_000,
): Promise<{ sink: string; record: SinkRecord; eml: string } | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const s of t.sinks) {
      const record = readSink(s.dir).find(
        (r) => r.messageId === `<${messageId}>` || r.messageId === messageId,
      );
      if (record) return { sink: s.nexthop, record, eml: sinkMessage(s.dir, record) };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return undefined;
}

export function header(eml: string, name: string): string | undefined {
  const head = eml.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, " ");
  return new RegExp(`^${name}:[ \\t]*(.*)$`, "im").exec(head)?.[1].trim();
}

export interface LoadSummary {
  prefix: string;
  count: number;
  accepted: number;
  failed: string[];
  retries: number;
  errors: Record<string, number>;
  seconds: number;
  perSecond: number;
}

/** Runs sandbox/load.ts from tenant A's client against a node, in the background. */
export function startLoad(
  t: Topology,
  node: SandboxNode,
  opts: { count: number; prefix: string; connections?: number; deadline?: number; size?: number },
): Promise<LoadSummary> {
  const root = path.join(__dirname, "..");
  const args = [
    "netns",
    "exec",
    t.clients.allowed.netns,
    path.join(root, "node_modules", ".bin", "tsx"),
    path.join(root, "sandbox", "load.ts"),
    "--server",
    node.ipv4,
    "--name",
    node.fqdn,
    "--ca",
    path.join(t.dir, "pebble", "root.pem"),
    "--count",
    String(opts.count),
    "--prefix",
    opts.prefix,
    "--connections",
    String(opts.connections ?? 4),
    "--deadline",
    String(opts.deadline ?? 240),
    "--size",
    String(opts.size ?? 2000),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn("ip", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (code) => {
      const line = out.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(line) as LoadSummary);
      } catch {
        reject(new Error(`load to ${node.name} failed (exit ${code}): ${err || out}`));
      }
    });
  });
}

/** How many times each Message-ID with this prefix reached any tenant sink. */
export function arrivals(t: Topology, prefix: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const s of t.sinks) {
    for (const r of readSink(s.dir)) {
      if (r.messageId?.startsWith(`<${prefix}-`)) counts.set(r.messageId, (counts.get(r.messageId) ?? 0) + 1);
    }
  }
  return counts;
}

/** Waits (bounded) until `expected` distinct Message-IDs with this prefix have arrived. */
export async function waitForArrivals(
  t: Topology,
  prefix: string,
  expected: number,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  let counts = arrivals(t, prefix);
  while (counts.size < expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1000));
    counts = arrivals(t, prefix);
  }
  return counts;
}
