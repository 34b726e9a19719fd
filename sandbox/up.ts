// Builds the local sandbox: every node of every committed stack booted from its Debian image (its
// own release, systemd, cloud-init with the rendered user-data), tenant sinks, DNS, a tenant A
// client, an impostor and an outsider; then pushes the production deploy steps to the nodes over
// SSH. down() removes it all again.
import * as fs from "node:fs";
import * as path from "node:path";
import { PROJECT_ROOT } from "../src/project";
import { shellQuote as q } from "../src/deploy/shell-text";
import { buildNetwork } from "./network";
import { deployKeyFile, deployStockNode, nodeContext, ssh, startNode } from "./nodes";
import { rollout } from "./rollout";
import { OVERLAY_DESCRIPTION } from "./overlay";
import { createDkimKey } from "./dkim";
import {
  makePki,
  startDns,
  startOvhApi,
  startPebble,
  startSink,
  startTimeServer,
  startTrap,
  waitForSink,
} from "./services";
import { killNamespace, unmountBelow } from "./node-host";
import { must, pollUntil, sh } from "./shell";
import { type Fleet, type Topology, loadFleet, planTopology, topologyJson } from "./topology";

const log = (msg: string) => process.stdout.write(`sandbox: ${msg}\n`);

/** A running sandbox and what it was built from. */
export interface Sandbox extends Fleet {
  t: Topology;
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the sandbox needs root (network and mount namespaces, Postfix, sshd): run `sudo npm start`",
    );
  }
}

function installDeps(): void {
  const r = sh(`bash ${q(path.join(PROJECT_ROOT, "scripts", "install-deps.sh"))}`, undefined, 900_000);
  must(r, "installing Debian packages (scripts/install-deps.sh)");
  log(r.stdout.trim().split("\n").pop() ?? "");
}

export async function up(
  dir: string,
  opts: { install?: boolean; stockNode?: boolean } = {},
): Promise<Sandbox> {
  requireRoot();
  if (opts.install !== false) installDeps();
  down(dir, { quiet: true });
  const project = loadFleet();
  const t = planTopology(dir, project.stacks, project.maps, { stockNode: opts.stockNode });
  fs.mkdirSync(path.dirname(deployKeyFile(t)), { recursive: true });
  must(
    sh(`ssh-keygen -q -t ed25519 -N '' -C header-rewrite-sandbox -f ${q(deployKeyFile(t))}`),
    "ssh-keygen",
  );
  makePki(t);
  createDkimKey(t.clients.allowed.dkim);
  createDkimKey(t.clients.impostor.dkim);
  fs.writeFileSync(path.join(dir, "topology.json"), JSON.stringify(topologyJson(t), null, 2) + "\n");
  buildNetwork(t);
  startDns(t, project.stacks);
  startTimeServer(t);
  startOvhApi(t);
  await startPebble(t);
  for (const s of t.sinks) startSink(t, s);
  startTrap(t);
  const contexts = new Map(t.nodes.map((n) => [n.name, nodeContext(t, n, project.stacks, project.maps)]));
  for (const n of t.nodes) startNode(t, n, contexts.get(n.name)!, log);
  for (const n of t.nodes) {
    // systemd boots, cloud-init creates the user and its keys, then sshd answers.
    await pollUntil(`sshd on ${n.name}`, () => ssh(t, n, "true", undefined, 10_000).status === 0, 180_000);
  }
  for (const s of t.sinks) await waitForSink(t, s);
  // Relay nodes as `pulumi up` per stack deploys them: in rollout order, each after its check.
  const first = rollout(t, project.stacks, project.maps);
  for (const d of first.deployed) {
    if (d.result.status !== 0)
      throw new Error(`deploy to ${d.node} failed:\n${d.result.stderr}${d.result.stdout}`);
    log(d.result.stdout.trim().split("\n").pop() ?? "");
  }
  for (const n of t.nodes.filter((x) => x.kind === "stock")) {
    const r = deployStockNode(t, n, contexts.get(n.name)!);
    if (r.status !== 0) throw new Error(`deploy to ${n.name} failed:\n${r.stderr}${r.stdout}`);
    log(r.stdout.trim().split("\n").pop() ?? "");
  }
  return { t, ...project };
}

/** Tears down what up() made: every namespace, process and mount, and the sandbox directory. */
/** Every sandbox namespace starts with this; the tests' single nodes use another prefix. */
const PREFIX = "hr-";

export function down(dir: string, opts: { quiet?: boolean } = {}): void {
  const names = sh("ip netns list")
    .stdout.split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n.startsWith(PREFIX));
  // Every process in each namespace: node PID 1 (its PID namespace takes Postfix with it), sinks,
  // dnsmasq, anything a user started there; then the nodes' root overlays.
  for (const ns of names) killNamespace(ns);
  for (const ns of names) sh(`ip netns delete ${ns}`);
  unmountBelow(dir);
  if (fs.existsSync(dir)) fs.rmSync(dir, { recursive: true, force: true });
  if (!opts.quiet) {
    const which = names.length ? ` (${names.join(" ")})` : "";
    console.log(`sandbox: removed ${names.length} namespaces${which} and ${dir}`);
  }
}

export function overlaySummary(): string {
  return [
    "The sandbox overlay (sandbox/overlay.ts) — the only differences from production:",
    ...OVERLAY_DESCRIPTION.map((l) => `  ${l}`),
  ].join("\n");
}
