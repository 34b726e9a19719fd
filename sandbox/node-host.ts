// A relay node on this machine, in its own network, mount, UTS and PID namespaces: the sandbox's
// nodes boot a Debian image with systemd (bootContainer), the tests' single nodes share this
// machine's files through sandbox/node-boot.sh (bootNodeHost). Every command reaches either the
// same way (nsenter into its PID 1's namespaces).
import * as fs from "node:fs";
import * as path from "node:path";
import { PIN_MILTER, POSTFIX_MASTER_PID, REWRITE_PASS } from "../src/node-layout";
import { shellQuote as q } from "../src/deploy/shell-text";
import { type Result, sh, startDetached } from "./shell";

export interface NodeHost {
  name: string;
  fqdn: string;
  /** Network namespace (under /run/netns) the node lives in. */
  netns: string;
  /** Where the node's own files (its /etc layer, spool, data; or its root filesystem) live here. */
  dir: string;
  /** The node's /var/log as this machine sees it. */
  logDir: string;
}

const BOOT = path.join(__dirname, "node-boot.sh");

/** Boots the node in the background: node-boot.sh sets up its filesystem, then runs INIT (bash). */
export function bootNodeHost(h: NodeHost, init: string): void {
  fs.mkdirSync(h.dir, { recursive: true });
  startDetached(
    path.join(h.dir, "node.out"),
    `exec ip netns exec ${h.netns} unshare --mount --uts --pid --fork --kill-child --mount-proc ` +
      `--propagation private bash ${q(BOOT)} ${q(h.dir)} ${q(h.fqdn)} bash -c ${q(init)}`,
  );
}

/**
 * Boots a node's root filesystem ROOT with systemd as PID 1 in its network namespace
 * (systemd-nspawn; no machined on this machine, hence --register=no --keep-unit). networkd needs
 * CAP_NET_ADMIN to configure the interface the namespace gives it.
 */
export function bootContainer(h: NodeHost, root: string): void {
  startDetached(
    path.join(h.dir, "console.log"),
    `exec systemd-nspawn --quiet --register=no --keep-unit --boot --directory=${q(root)} ` +
      `--machine=${q(h.name)} --network-namespace-path=/run/netns/${h.netns} --capability=CAP_NET_ADMIN`,
  );
}

/** The moved clock this process runs under (libfaketime, scripts/test-future.sh), if any. */
export function movedClock(): { lib: string; offset: string } | undefined {
  const lib = process.env.LD_PRELOAD;
  const offset = process.env.FAKETIME;
  return lib?.includes("libfaketime") && offset ? { lib, offset } : undefined;
}

/** The node's PID 1 as seen from this machine, for entering all of its namespaces. */
function nodePid(h: NodeHost): number | undefined {
  const pids = sh(`ip netns pids ${h.netns} 2>/dev/null`).stdout.trim().split("\n").filter(Boolean);
  for (const pid of pids) {
    const status = fs.existsSync(`/proc/${pid}/status`) ? fs.readFileSync(`/proc/${pid}/status`, "utf8") : "";
    const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1].trim().split(/\s+/);
    if (nspid && nspid.length > 1 && nspid[nspid.length - 1] === "1") return Number(pid);
  }
  return undefined;
}

/** What a command on a node starts with, as after an SSH login: nothing of this machine's environment. */
const NODE_ENV =
  "env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8";

/** Runs a bash command inside a node (mount, UTS, network and PID namespaces), as root. */
export function onNode(h: NodeHost, command: string, input?: string, timeoutMs?: number): Result {
  const pid = nodePid(h);
  if (!pid) return { status: -1, stdout: "", stderr: `node ${h.name} is not running` };
  return sh(`${NODE_ENV} nsenter -t ${pid} -m -u -n -p -- bash -c ${q(command)}`, input, timeoutMs);
}

/** The last lines of the node's Postfix log (maillog_file). */
export function nodeLog(h: NodeHost, lines = 40): string {
  const f = path.join(h.logDir, "postfix.log");
  if (!fs.existsSync(f)) return `(${h.name}: no postfix log)`;
  return fs
    .readFileSync(f, "utf8")
    .split("\n")
    .slice(-lines - 1)
    .join("\n");
}

/** A command's output and the node's recent Postfix log, for assertion messages. */
export function explainOnNode(h: NodeHost, r?: Result, lines = 25): string {
  const output = r ? `exit ${r.status}\n${r.stdout}\n${r.stderr}\n` : "";
  const milter = milterLog(h).trim().split("\n").slice(-lines).join("\n");
  return `${output}--- ${h.name} postfix log ---\n${nodeLog(h, lines)}\n--- ${h.name} pinning milter log ---\n${milter}`;
}

/** Postfix's master PID on the node: unchanged as long as Postfix was only reloaded. */
export function masterPid(h: NodeHost): string {
  return onNode(h, `cat ${POSTFIX_MASTER_PID}`).stdout.trim();
}

export interface QueueEntry {
  queue_id: string;
  queue_name: string;
  sender: string;
  recipients: { address: string; delay_reason?: string }[];
}

/** The node's mail queue (postqueue -j). */
export function queue(h: NodeHost): QueueEntry[] {
  return onNode(h, "postqueue -j")
    .stdout.trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as QueueEntry);
}

/**
 * The Message-IDs of the mail in the node's queue, with their queue entries (the queue does not
 * show Message-IDs; cleanup logged each one when the message arrived).
 */
export function queuedMessages(h: NodeHost): { messageId: string; entry: QueueEntry }[] {
  const log = nodeLog(h, Number.MAX_SAFE_INTEGER);
  const ids = new Map([...log.matchAll(/: ([0-9A-F]+): message-id=(\S+)/g)].map((m) => [m[1], m[2]]));
  return queue(h).map((entry) => ({ messageId: ids.get(entry.queue_id) ?? "(unknown)", entry }));
}

export interface Delivery {
  to: string;
  /** The host Postfix handed the message to (or tried to), without the address. */
  relay: string;
  status: string;
  detail: string;
}

/** Queue IDs whose cleanup logged this Message-ID (pass 1 and the rewriting pass both do). */
function queueIdsOf(log: string, messageId: string): string[] {
  return [...log.matchAll(/: ([0-9A-F]+): message-id=(\S+)/g)]
    .filter((m) => m[2] === messageId)
    .map((m) => m[1]);
}

/** Every hand-over from pass 1 to the rewriting pass: the pass-1 queue ID and the one it got there. */
function handOversIn(log: string): { from: string; to: string }[] {
  const line = new RegExp(
    `: ([0-9A-F]+): to=<[^>]*>, relay=${REWRITE_PASS.host}\\[[^\\]]*\\]:${REWRITE_PASS.port},` +
      ".* status=sent \\(250 2\\.0\\.0 Ok: queued as (\\w+)\\)",
    "g",
  );
  return [...log.matchAll(line)].map((m) => ({ from: m[1], to: m[2] }));
}

/**
 * What the node's log says happened to the message with this Message-ID, attempt by attempt, toward
 * its tenant: the hand-over from pass 1 to the rewriting pass on loopback is left out.
 */
export function deliveries(h: NodeHost, messageId: string): Delivery[] {
  const log = nodeLog(h, Number.MAX_SAFE_INTEGER);
  return queueIdsOf(log, messageId).flatMap((id) => {
    const line = new RegExp(
      `: ${id}: to=<([^>]*)>, .*?relay=([^\\[,]+)([^ ]*), .*? status=(\\w+) (.*)$`,
      "gm",
    );
    return [...log.matchAll(line)]
      .filter((m) => m[3] !== `[${REWRITE_PASS.host}]:${REWRITE_PASS.port}`)
      .map((m) => ({ to: m[1], relay: m[2], status: m[4], detail: m[5] }));
  });
}

/**
 * How many times the node handed the message with this Message-ID to its rewriting pass: more than
 * once means it entered the relay twice (a client resent it, or a hand-over was cut off by a stop
 * after the second pass had queued it).
 */
export function handOvers(h: NodeHost, messageId: string): number {
  const log = nodeLog(h, Number.MAX_SAFE_INTEGER);
  const ids = new Set(queueIdsOf(log, messageId));
  return handOversIn(log).filter((x) => ids.has(x.from)).length;
}

/**
 * The queue ID under which the message accepted as FIRST (pass 1, the ID in the 250 reply) waits
 * for its tenant: pass 1 hands it to the rewriting pass, which queues it again.
 */
export function rewrittenAs(h: NodeHost, first: string): string | undefined {
  return handOversIn(nodeLog(h, Number.MAX_SAFE_INTEGER)).find((x) => x.from === first)?.to;
}

/**
 * Kills every process in a namespace and waits (up to 5 s) until they are gone, so that a service
 * restarted there next cannot race its predecessor for the port.
 */
export function killNamespace(netns: string): void {
  const pids = `ip netns pids ${netns} 2>/dev/null`;
  sh(`${pids} | xargs -r kill -9; for i in $(seq 50); do [ -z "$(${pids})" ] && break; sleep 0.1; done`);
}

/** The tenant-pinning milter's log: systemd's journal on a booted node, its own file elsewhere. */
export function milterLog(h: NodeHost): string {
  return onNode(
    h,
    `journalctl -q -o cat -u ${PIN_MILTER.service} 2>/dev/null; cat ${PIN_MILTER.log} 2>/dev/null; true`,
  ).stdout;
}

/** Unmounts whatever is mounted at or below DIR on this machine (a node's root overlay). */
export function unmountBelow(dir: string): void {
  sh(`grep -o " ${dir}[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; true`);
}

/** Stops the node and removes its namespace and files. */
export function removeNodeHost(h: NodeHost): void {
  killNamespace(h.netns);
  sh(`ip netns delete ${h.netns} 2>/dev/null`);
  unmountBelow(h.dir);
  fs.rmSync(h.dir, { recursive: true, force: true });
}
