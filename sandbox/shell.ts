// Running commands on this machine and in the sandbox's network namespaces: one Result type, one
// way to run, one bounded poll. Used by the sandbox, the tests and the bench alike.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { PROJECT_ROOT } from "../src/project";
import { shellQuote as q } from "../src/deploy/shell-text";

/** The TypeScript runner the sandbox starts its own services and clients with. */
export const TSX = path.join(PROJECT_ROOT, "node_modules", ".bin", "tsx");

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

/** sh() without blocking: for a command that runs while the caller does something else. */
export function shAsync(command: string, input?: string, timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-c", command], { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ status: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? "");
  });
}

export function must(r: Result, what: string): Result {
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stderr || r.stdout}`);
  return r;
}

export function inNetns(netns: string, command: string, input?: string, timeoutMs?: number): Result {
  return sh(`ip netns exec ${netns} bash -c ${q(command)}`, input, timeoutMs);
}

/** Starts a long-running command in its own session; it outlives this process (sandbox:down ends it). */
export function startDetached(logFile: string, command: string): void {
  const out = fs.openSync(logFile, "a");
  const child = spawn("setsid", ["bash", "-c", command], { detached: true, stdio: ["ignore", out, out] });
  child.unref();
}

/** Polls CHECK until it holds; throws after TIMEOUTMS naming WHAT it waited for. */
export async function pollUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}

/** Polls PRODUCE until it returns a value; undefined after TIMEOUTMS. */
export async function pollFor<T>(
  produce: () => T | undefined,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = produce();
    if (v !== undefined || Date.now() >= deadline) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Runs an entry point's MAIN; any error is printed (with PREFIX) and the process exits 1. */
export function runMain(main: () => Promise<unknown>, prefix = ""): void {
  main().catch((e: Error) => {
    console.error(prefix ? `${prefix}: ${e.message}` : e);
    process.exit(1);
  });
}
