// Mail in and out of the sandbox: one SMTP client for test mail (swaks, a real external client,
// run from a client's namespace or on a node), the sinks' records, and the bounded load generator.
import * as crypto from "node:crypto";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { heredoc, shellQuote as q } from "../src/deploy/shell-text";
import { type Result, TSX, inNetns, pollFor } from "./shell";
import type { SinkRecord } from "./sink";
import { type DkimSignature, signMessage } from "./dkim";
import type { SandboxNode, Topology } from "./topology";

export interface Message {
  server: string;
  from: string;
  to?: string;
  /** Header lines ("Name: value"); a fresh Message-Id is added. */
  headers?: string[];
  /** STARTTLS (default) or plaintext. */
  tls?: boolean;
  /** Stop after this SMTP stage (e.g. "RCPT"). */
  quitAfter?: string;
  /** More swaks arguments, e.g. `--tls-protocol tlsv1_2`. */
  extra?: string;
  /** Sign as a tenant would (tenant A's key for mail that must pass pinning). */
  dkim?: DkimSignature;
  /** Changes the signed message before it is sent (an attacker replaying a signature). */
  alter?: (signed: string) => string;
  /** A whole message (header and body, e.g. from test/fixtures/mail) instead of the composed one. */
  raw?: string;
}

export interface Sent {
  r: Result;
  /** The Message-Id the message carries, without angle brackets. */
  id: string;
}

/** A Date header value as mail carries it (RFC 5322, UTC): `Sun, 06 Dec 2026 07:00:00 +0000`. */
export function rfc5322Date(ms = Date.now()): string {
  return new Date(ms).toUTCString().replace("GMT", "+0000");
}

/**
 * The message swaks would send (its default header set, HEADERS replacing a field of the same name),
 * with CRLF line ends, ready to be signed.
 */
function composeMessage(m: Message, id: string): string {
  const fields: [string, string][] = [
    ["Date", rfc5322Date()],
    ["To", m.to ?? "rcpt@partner.example"],
    ["From", m.from],
    ["Subject", "test message"],
    ["Message-Id", `<${id}>`],
  ];
  for (const h of m.headers ?? []) {
    const name = h.slice(0, h.indexOf(":"));
    const value = h.slice(h.indexOf(":") + 1).trim();
    const i = fields.findIndex(([n]) => n.toLowerCase() === name.toLowerCase());
    if (i >= 0) fields[i] = [name, value];
    else fields.push([name, value]);
  }
  return fields.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\nThis is a test mailing\r\n";
}

/** Sends one message with swaks through RUN (a client namespace or a node). */
export function sendMail(run: (command: string) => Result, m: Message): Sent {
  const id = `${crypto.randomBytes(8).toString("hex")}@test.sandbox.example`;
  const headers = [...(m.headers ?? []), `Message-Id: <${id}>`].map((h) => `--header ${q(h)}`).join(" ");
  // A signed message goes as DATA exactly as signed; swaks sends its lines with CRLF again.
  const alter = m.alter ?? ((s: string) => s);
  const composed = m.raw ? m.raw.replace(/\r?\n/g, "\r\n") : composeMessage(m, id);
  const signed = m.dkim && alter(signMessage(composed, m.dkim)).replace(/\r\n/g, "\n");
  const args = [
    `--server ${m.server}`,
    "--helo client.example",
    m.tls === false ? "" : "--tls",
    `--from ${q(m.from)}`,
    `--to ${q(m.to ?? "rcpt@partner.example")}`,
    signed ? "--data -" : headers,
    m.quitAfter ? `--quit-after ${m.quitAfter}` : "",
    m.extra ?? "",
  ];
  const command = `swaks ${args.filter(Boolean).join(" ")} 2>&1`;
  return { r: run(signed ? heredoc(command, signed) : command), id };
}

/** Whether SERVER completes STARTTLS, asked through RUN (after a reload, before sending). */
export function starttlsAnswers(run: (command: string) => Result, server: string): boolean {
  return (
    run(`swaks --server ${server} --tls --helo client.example --quit-after STARTTLS >/dev/null 2>&1`)
      .status === 0
  );
}

/** The 4xx/5xx reply swaks saw (`<**` in plaintext, `<~*` inside TLS), if any. */
export function refusal(r: Result): string | undefined {
  return /^<(?:\*\*|~\*)\s+([45]\d\d [^\n]*)$/m.exec(r.stdout)?.[1];
}

/** The reply to RCPT TO as swaks printed it. */
export function rcptReply(r: Result): string {
  const lines = r.stdout.split("\n");
  const i = lines.findIndex((l) => /^ [~-]> RCPT TO:/.test(l));
  if (i < 0) return `(no RCPT: ${refusal(r) ?? lines.filter((l) => /^<[~-]?\*/.test(l)).join(" ")})`;
  return (lines.slice(i + 1).find((l) => /^<[~-]/.test(l)) ?? "").replace(/^<[~-]\*? +/, "");
}

/** The queue ID the server gave the message (250 ... queued as ID). */
export function queuedAs(r: Result): string | undefined {
  return /250 2\.0\.0 Ok: queued as (\w+)/.exec(r.stdout)?.[1];
}

export function readSink(dir: string): SinkRecord[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /^[^.].*\.json$/.test(f))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as SinkRecord);
}

/** Messages that reached any tenant sink. */
export function sinkCount(t: Topology): number {
  return t.sinks.reduce((k, s) => k + readSink(s.dir).length, 0);
}

export interface Arrival {
  sink: string;
  record: SinkRecord;
  eml: string;
}

/** Waits (bounded) until a message with this Message-ID has reached any tenant sink. */
export async function waitForMessage(
  t: Topology,
  messageId: string,
  timeoutMs = 60_000,
): Promise<Arrival | undefined> {
  return pollFor(() => {
    for (const s of t.sinks) {
      const record = readSink(s.dir).find(
        (r) => r.messageId === `<${messageId}>` || r.messageId === messageId,
      );
      if (record) {
        const eml = fs.readFileSync(path.join(s.dir, `${record.id}.eml`), "latin1");
        return { sink: s.nexthop, record, eml };
      }
    }
    return undefined;
  }, timeoutMs);
}

/** One header field of a message (unfolded), if present. */
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
  /** When the relay accepted each message (epoch ms), in order. */
  acceptedAt: number[];
  /** Message-ID → when the relay answered 250 to its DATA (epoch ms). */
  acceptedById: Record<string, number>;
}

/** A load under way: its summary once done, and how many messages the relay has accepted so far. */
export interface RunningLoad extends Promise<LoadSummary> {
  accepted(): number;
}

interface LoadOptions {
  count: number;
  prefix: string;
  connections?: number;
  /** Seconds after which the load stops retrying. */
  deadline?: number;
  size?: number;
  /** Messages per second at most (0: as fast as the relay takes them). */
  rate?: number;
}

/** Runs sandbox/load.ts from tenant A's client against a node, in the background. */
export function startLoad(t: Topology, node: SandboxNode, opts: LoadOptions): RunningLoad {
  const args = {
    server: node.ipv4,
    name: node.fqdn,
    ca: path.join(t.dir, "pebble", "root.pem"),
    count: opts.count,
    prefix: opts.prefix,
    connections: opts.connections ?? 4,
    deadline: opts.deadline ?? 240,
    size: opts.size ?? 2000,
    rate: opts.rate ?? 0,
    "dkim-key": t.clients.allowed.dkim.keyFile,
    "dkim-domain": t.clients.allowed.dkim.domain,
    "dkim-selector": t.clients.allowed.dkim.selector,
  };
  const argv = Object.entries(args).flatMap(([k, v]) => [`--${k}`, String(v)]);
  const load = path.join(__dirname, "load.ts");
  let accepted = 0;
  const done = new Promise<LoadSummary>((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", t.clients.allowed.netns, TSX, load, ...argv], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
      const last = [...out.matchAll(/^accepted (\d+)$/gm)].pop();
      if (last) accepted = Number(last[1]);
    });
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
  return Object.assign(done, { accepted: () => accepted });
}

/** Runs sandbox/smtp-edge.ts from tenant A's client against a node and returns its JSON answer. */
export function smtpEdge(
  t: Topology,
  node: SandboxNode,
  check: string,
  args: Record<string, number> = {},
): unknown {
  const argv = Object.entries(args).map(([k, v]) => `--${k} ${v}`);
  const r = inNetns(
    t.clients.allowed.netns,
    [q(TSX), q(path.join(__dirname, "smtp-edge.ts")), `--server ${node.ipv4} --check ${check}`, ...argv].join(
      " ",
    ),
    undefined,
    180_000,
  );
  if (r.status !== 0)
    throw new Error(`smtp-edge ${check} against ${node.name} failed: ${r.stderr || r.stdout}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

/** How many times each Message-ID with this prefix reached any tenant sink. */
function arrivals(t: Topology, prefix: string): Map<string, number> {
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
  const done = await pollFor(
    () => {
      const counts = arrivals(t, prefix);
      return counts.size >= expected ? counts : undefined;
    },
    timeoutMs,
    1000,
  );
  return done ?? arrivals(t, prefix);
}
