// The sandbox's relay nodes: booted from their image with the rendered user-data, reached over SSH
// as the deployer reaches them, and deployed with the production scripts (render -> overlay ->
// every deploy step, the first-boot wait included).
import * as fs from "node:fs";
import * as path from "node:path";
import * as YAML from "yaml";
import { nodeIdentity } from "../src/config/stack-config";
import { type NodeSecrets, type StepId, deploySteps } from "../src/deploy/steps";
import { RUN_AS_ROOT, SSH_DIAL, tlsPaths } from "../src/node-layout";
import type { RelayMaps } from "../src/maps/relay-maps";
import {
  type HostKey,
  type NodeAddresses,
  type RenderContext,
  renderUserData,
} from "../src/render/node-render";
import { shellQuote as q } from "../src/deploy/shell-text";
import { knownImage } from "../src/config/images";
import { gatedSteps } from "../src/deploy/region-gate";
import { imageRootfs } from "./image";
import { hostKeyIn, knownHostsLine } from "./host-keys";
import { NODE_IFACE } from "./network";
import { bootContainer, movedClock } from "./node-host";
import {
  SANDBOX_DNS_CREDENTIALS,
  nocloudSeed,
  overlayBundle,
  overlayConfig,
  overlayNodeEtc,
  overlayUserData,
} from "./overlay";
import { type Result, must, sh, shAsync } from "./shell";
import { NETWORKS, type SandboxNode, type StackInput, type Topology, gatewayOf } from "./topology";
import { planNode } from "../src/plan";

export function deployKeyFile(t: Topology): string {
  return path.join(t.dir, "keys", "deploy");
}

/** The node's SSH host key: created once, like the program's tls.PrivateKey, delivered by user-data. */
export function nodeHostKey(t: Topology, n: SandboxNode): HostKey {
  return hostKeyIn(path.join(t.dir, "keys"), n.name);
}

/** The deployer's known_hosts: every node's address with its own pinned key (as remote.Command's hostKey). */
export function knownHostsFile(t: Topology): string {
  return path.join(t.dir, "keys", "known_hosts");
}

/** Writes knownHostsFile for every node of the topology (when a node starts: its key exists then). */
function writeKnownHosts(t: Topology): void {
  const file = knownHostsFile(t);
  const lines = t.nodes.flatMap((n) => [n.ipv4, n.ipv6].map((a) => knownHostsLine(a, nodeHostKey(t, n))));
  // Written whole and renamed: another command may be reading it.
  fs.writeFileSync(`${file}.new`, lines.join("\n") + "\n");
  fs.renameSync(`${file}.new`, file);
}

/** How the deployer reaches NODE: its pinned host key only (StrictHostKeyChecking=yes), the deploy key. */
export function sshOptions(t: Topology, knownHosts = knownHostsFile(t)): string {
  return (
    `-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${q(knownHosts)} ` +
    "-o HostKeyAlgorithms=ssh-ed25519 -o LogLevel=ERROR -o ConnectTimeout=5"
  );
}

function sshCommand(t: Topology, node: SandboxNode, command: string): string {
  const ssh = `ssh -i ${q(deployKeyFile(t))} ${sshOptions(t)} debian@${node.ipv4} ${q(command)}`;
  return `ip netns exec ${t.wan.netns} bash -c ${q(ssh)}`;
}

/** SSH as the image's user from the deployer's seat (the wan namespace), like remote.Command. */
export function ssh(
  t: Topology,
  node: SandboxNode,
  command: string,
  input?: string,
  timeoutMs = 300_000,
): Result {
  return sh(sshCommand(t, node, command), input, timeoutMs);
}

/** ssh() while the caller goes on (a drain that waits for a tenant the test brings back). */
export function sshAsync(t: Topology, node: SandboxNode, command: string, input?: string): Promise<Result> {
  return shAsync(sshCommand(t, node, command), input, 600_000);
}

// ssh's own failures to connect (exit 255 before the command ran), which remote.Command dials again.
const DIAL_FAILED =
  /kex_exchange_identification|Connection (refused|reset|closed|timed out)|No route to host/;

/** Runs a deploy script on a node exactly as the Pulumi program's remote.Command does. */
function runStep(t: Topology, node: SandboxNode, script: string): Result {
  for (let dial = 1; ; dial++) {
    const r = ssh(t, node, RUN_AS_ROOT, script);
    if (r.status !== 255 || r.stdout || !DIAL_FAILED.test(r.stderr) || dial >= SSH_DIAL.dialErrorLimit)
      return r;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  }
}

/** What the cloud would give the node's port; the resolver is the sandbox DNS (overlay). */
function nodeAddresses(t: Topology, n: SandboxNode): NodeAddresses {
  return {
    mac: n.mac,
    ipv4: { address: n.ipv4, gateway: gatewayOf(NETWORKS.nodes.v4) },
    ipv6: { address: n.ipv6, gateway: gatewayOf(NETWORKS.nodes.v6) },
    dns: [t.dns.ipv4, t.dns.ipv6],
  };
}

/** The render context of a sandbox node: the stack's own, with the overlay's config change only. */
export function nodeContext(
  t: Topology,
  n: SandboxNode,
  stacks: StackInput[],
  maps: RelayMaps,
): RenderContext {
  const pub = fs.readFileSync(`${deployKeyFile(t)}.pub`, "utf8").trim();
  const cfg = overlayConfig(stacks.find((s) => s.stack === n.stack)!.cfg, pub, t.acme.directory);
  return { stack: n.stack, cfg, maps, node: nodeIdentity(cfg, n.name) };
}

/**
 * Boots the node from its image with the rendered user-data in a NoCloud seed: the image's own
 * cloud-init applies it (users and keys, write_files, the network switch), as on OVH.
 */
export function startNode(t: Topology, n: SandboxNode, ctx: RenderContext, log: (m: string) => void): void {
  const userData = renderUserData(ctx, nodeAddresses(t, n), nodeHostKey(t, n));
  writeKnownHosts(t);
  const packages = (YAML.parse(userData) as { packages: string[] }).packages;
  const lower = imageRootfs(knownImage(ctx.cfg.image), packages, log);
  const [upper, work] = [path.join(n.dir, "upper"), path.join(n.dir, "work")];
  for (const d of [upper, work, n.root]) fs.mkdirSync(d, { recursive: true });
  must(
    sh(
      `mount -t overlay overlay -o lowerdir=${q(lower)},upperdir=${q(upper)},workdir=${q(work)} ${q(n.root)}`,
    ),
    `mounting ${n.name}'s root filesystem`,
  );
  const put = (rel: string, content: string | Buffer, mode = 0o644) => {
    const f = path.join(n.root, rel);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, content, { mode });
    fs.chmodSync(f, mode);
  };
  const seed = "var/lib/cloud/seed/nocloud";
  // It holds the host key: root only, as cloud-init keeps its own copy.
  put(`${seed}/user-data`, overlayUserData(userData), 0o600);
  for (const [name, content] of Object.entries(nocloudSeed(n, NODE_IFACE))) put(`${seed}/${name}`, content);
  const etc = overlayNodeEtc(
    fs.readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8"),
    fs.readFileSync(path.join(t.dir, "ca", "ca.pem"), "utf8"),
    t.dns.ipv4,
  );
  for (const [rel, content] of Object.entries(etc)) put(`etc/${rel}`, content);
  const moved = movedClock();
  if (moved) moveNodeClock(n.root, moved, put);
  bootContainer(n, n.root);
}

/**
 * A clock moved by libfaketime (scripts/test-future.sh) reaches the node: the library and the
 * offset in its root filesystem, preloaded into every program started once systemd runs (systemd
 * itself fails under libfaketime, so /etc/ld.so.preload points into /run, which a unit fills at
 * each boot). Monotonic clocks stay real for services and logins (timers agree with the kernel).
 */
function moveNodeClock(
  root: string,
  moved: { lib: string; offset: string },
  put: (rel: string, content: string | Buffer) => void,
): void {
  const preload = "/run/header-rewrite-sandbox-preload";
  const link = (target: string, rel: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.rmSync(path.join(root, rel), { force: true });
    fs.symlinkSync(target, path.join(root, rel));
  };
  // networkd, resolved and logind fail under libfaketime: they keep the real clock (nothing they
  // do is dated).
  const serviceEnv = [
    "FAKETIME_DONT_FAKE_MONOTONIC=1",
    "FAKETIME_SKIP_CMDS=" +
      ["networkd", "networkd-wait-online", "resolved", "journald", "udevd", "logind"]
        .map((d) => `systemd-${d}`)
        .join(","),
  ].join(" ");
  put(moved.lib.slice(1), fs.readFileSync(moved.lib));
  put("etc/faketimerc", `${moved.offset}\n`);
  link(preload, "etc/ld.so.preload");
  put(
    "etc/systemd/system.conf.d/50-sandbox-moved-clock.conf",
    `[Manager]\nDefaultEnvironment=${serviceEnv}\n`,
  );
  put("etc/environment", "FAKETIME_DONT_FAKE_MONOTONIC=1\n");
  put(
    "etc/systemd/system/sandbox-moved-clock.service",
    "[Unit]\nDescription=sandbox: the moved clock for every program started from now on\n" +
      "DefaultDependencies=no\nAfter=local-fs.target\nBefore=sysinit.target\n" +
      `[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo ${moved.lib} > ${preload}'\n` +
      "[Install]\nWantedBy=sysinit.target\n",
  );
  link(
    "/etc/systemd/system/sandbox-moved-clock.service",
    "etc/systemd/system/sysinit.target.wants/sandbox-moved-clock.service",
  );
}

interface DeployOptions {
  /** Changes the overlaid Postfix files before the deploy (tests break a deploy on purpose with it). */
  edit?: (files: Record<string, string>) => Record<string, string>;
  secrets?: NodeSecrets;
  /** Why this node's stack must not take the release yet (src/deploy/region-gate.ts): its Postfix step refuses. */
  refusal?: string;
  /**
   * Only these steps, as `pulumi up` runs only the commands whose script changed (a map edit:
   * postfix and verify). Default: every step.
   */
  only?: StepId[];
}

/** Pushes the production deploy steps (those that apply in the sandbox) to one node over SSH. */
export function deployNode(
  t: Topology,
  n: SandboxNode,
  ctx: RenderContext,
  opts: DeployOptions = {},
): Result {
  const secrets = { dnsCredentials: SANDBOX_DNS_CREDENTIALS, ...opts.secrets };
  const plan = planNode(ctx, ctx.node.name, { secrets });
  // A test that breaks a deploy on purpose changes the rendered files; the steps follow them.
  const planned = opts.edit
    ? deploySteps(ctx.cfg, overlayBundle(plan.bundle, opts.edit), secrets)
    : plan.steps();
  // What every step said, in order, as `pulumi up` shows it; the status of the last one run.
  const all: Result = { status: 0, stdout: "", stderr: "" };
  const steps = gatedSteps(planned, opts.refusal);
  for (const step of steps.filter((s) => !opts.only || opts.only.includes(s.id))) {
    const r = runStep(t, n, step.script);
    all.status = r.status;
    all.stdout += r.stdout;
    all.stderr += r.stderr;
    if (r.status !== 0) return all;
  }
  return all;
}

/**
 * A stock Debian Postfix relaying everything from tenant A's range to tenant B over TLS: Debian's own
 * main.cf plus the few settings a relay needs. The baseline header-rewrite is measured against.
 */
function stockPostfixScript(n: SandboxNode, nexthop: string): string {
  const tls = tlsPaths(n.fqdn);
  return `#!/bin/bash
set -euo pipefail
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
postconf -e "myhostname = ${n.fqdn}" "mydestination = \\$myhostname, localhost" "compatibility_level = 3.6" \\
  "mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24 [2001:db8:a::]/48" "relayhost = ${nexthop}" \\
  "smtpd_tls_cert_file = ${tls.chainFile}" "smtpd_tls_key_file = ${tls.keyFile}" \\
  "smtpd_tls_security_level = may" "smtp_tls_security_level = secure" \\
  "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt" "inet_protocols = ipv4" \\
  "maillog_file = /var/log/postfix.log" "alias_maps = " "alias_database = " "message_size_limit = 157286400"
/usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1 || true
postfix start
echo "stock Postfix on ${n.fqdn} relays to ${nexthop}"
`;
}

/**
 * The bench's baseline node: the production first-boot wait and certificate steps (the node's own
 * certificate: stock Postfix presents none to the tenants), then stock Postfix.
 */
export function deployStockNode(t: Topology, n: SandboxNode, ctx: RenderContext): Result {
  const own = { ...ctx, cfg: { ...ctx.cfg, tenantCertificates: {} } };
  const steps = planNode(own, own.node.name).steps();
  const production = (id: string) => steps.find((s) => s.id === id)!.script;
  for (const script of [
    production("cloud-init"),
    production("certificate"),
    stockPostfixScript(n, ctx.maps.tenants[0].nexthop),
  ]) {
    const r = runStep(t, n, script);
    if (r.status !== 0) return r;
  }
  return { status: 0, stdout: `stock Postfix on ${n.fqdn}`, stderr: "" };
}
