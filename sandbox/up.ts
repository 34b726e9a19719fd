// Builds the local sandbox: every node of every committed stack as a namespace-isolated Debian host
// with sshd and stock Postfix, tenant sinks, DNS, a tenant A client and an outsider; then pushes the
// production deploy scripts to the nodes over SSH.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as YAML from "yaml";
import { nodeIdentity, renderUserData, type NodeAddresses, type RenderContext } from "../src/render";
import { type NodeSecrets, nodeSteps } from "../src/deploy";
import { serviceFqdn } from "../src/config";
import { type Result, inNetns, must, q, runStep, sh, ssh } from "./lib";
import {
  OVERLAY_DESCRIPTION,
  SANDBOX_STEPS,
  overlayConfig,
  overlayNodeEtc,
  overlayPostfixFiles,
} from "./overlay";
import {
  NETWORKS,
  ROOT,
  type SandboxNode,
  type Sink,
  type StackInput,
  type Topology,
  loadStacks,
  planTopology,
  topologyJson,
} from "./topology";
import { down } from "./down";

const log = (msg: string) => process.stdout.write(`sandbox: ${msg}\n`);

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the sandbox needs root (network and mount namespaces, Postfix, sshd): run `sudo npm start`",
    );
  }
}

function installDeps(): void {
  const r = sh(`bash ${q(path.join(ROOT, "scripts", "install-deps.sh"))}`, undefined, 900_000);
  must(r, "installing Debian packages (scripts/install-deps.sh)");
  log(r.stdout.trim().split("\n").pop() ?? "");
}

function openssl(args: string): void {
  must(sh(`openssl ${args}`), `openssl ${args.split(" ")[0]}`);
}

/** A sandbox CA: it signs the tenant sinks' certificates (and a wrong-name one each) and Pebble's API. */
function makePki(t: Topology): void {
  const ca = path.join(t.dir, "ca");
  fs.mkdirSync(ca, { recursive: true });
  openssl(
    `req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=header-rewrite sandbox CA" -keyout ${ca}/ca.key -out ${ca}/ca.pem`,
  );
  for (const s of t.sinks) {
    issueLeaf(
      t,
      s.host,
      ["*.mail.protection.outlook.com", s.host],
      path.join(t.dir, "pki", "sinks", s.tenantId),
    );
    issueLeaf(
      t,
      "wrong.example",
      ["wrong.example"],
      path.join(t.dir, "pki", "sinks", `${s.tenantId}-wrong-name`),
    );
  }
  issueLeaf(t, t.acme.host, [t.acme.host], path.join(t.dir, "pki", "acme"));
}

/** Issues a leaf from the sandbox CA (optionally through an intermediate) into DIR/{privkey,cert,fullchain}.pem. */
export function issueLeaf(
  t: Topology,
  name: string,
  sans: string[],
  dir: string,
  opts: { intermediate?: boolean; clientAuth?: boolean } = {},
): void {
  const ca = path.join(t.dir, "ca");
  fs.mkdirSync(dir, { recursive: true });
  const ext = path.join(dir, "ext.cnf");
  fs.writeFileSync(
    ext,
    `[leaf]\nsubjectAltName=${sans.map((s) => `DNS:${s}`).join(",")}\nextendedKeyUsage=serverAuth${opts.clientAuth ? ",clientAuth" : ""}\nbasicConstraints=CA:FALSE\n` +
      "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
  );
  let [issuer, issuerKey, chain] = [`${ca}/ca.pem`, `${ca}/ca.key`, ""];
  if (opts.intermediate) {
    openssl(
      `req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=header-rewrite sandbox intermediate" -keyout ${dir}/int.key -out ${dir}/int.csr`,
    );
    openssl(
      `x509 -req -in ${dir}/int.csr -CA ${issuer} -CAkey ${issuerKey} -CAcreateserial -days 30 -extfile ${ext} -extensions ca -out ${dir}/int.pem`,
    );
    [issuer, issuerKey, chain] = [
      `${dir}/int.pem`,
      `${dir}/int.key`,
      fs.readFileSync(`${dir}/int.pem`, "utf8"),
    ];
  }
  openssl(
    `req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${name}" -keyout ${dir}/privkey.pem -out ${dir}/req.csr`,
  );
  openssl(
    `x509 -req -in ${dir}/req.csr -CA ${issuer} -CAkey ${issuerKey} -CAcreateserial -days 30 -extfile ${ext} -extensions leaf -out ${dir}/cert.pem`,
  );
  const root = fs.readFileSync(path.join(ca, "ca.pem"), "utf8");
  fs.writeFileSync(
    path.join(dir, "fullchain.pem"),
    fs.readFileSync(path.join(dir, "cert.pem"), "utf8") + (chain || root),
  );
}

function networkScript(t: Topology): string {
  const wan = t.wan.netns;
  const lines = [
    "set -euo pipefail",
    `ip netns add ${wan}`,
    `ip -n ${wan} link set lo up`,
    `ip -n ${wan} link add br0 type bridge`,
    `ip -n ${wan} link set br0 up`,
    `ip netns exec ${wan} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`,
  ];
  for (const net of Object.values(NETWORKS)) {
    if ("v4" in net) lines.push(`ip -n ${wan} addr add ${net.v4} dev br0`);
    lines.push(`ip -n ${wan} addr add ${net.v6} dev br0 nodad`);
  }
  lines.push(
    `ip -n ${wan} addr add ${t.dns.ipv4}/32 dev br0`,
    `ip -n ${wan} addr add ${t.dns.ipv6}/128 dev br0 nodad`,
  );
  lines.push(`ip -n ${wan} addr add ${t.acme.ipv4}/32 dev br0`);
  // Hosts other than nodes: plain addresses and default routes (nodes configure themselves with ifup).
  const plain = (ns: string, veth: string, ipv4: string, ipv6: string, gw4: string, gw6: string) => [
    `ip netns add ${ns}`,
    `ip -n ${wan} link add ${veth} type veth peer name eth0 netns ${ns}`,
    `ip -n ${wan} link set ${veth} master br0 up`,
    `ip -n ${ns} link set lo up`,
    `ip -n ${ns} link set eth0 up`,
    `ip -n ${ns} addr add ${ipv4}/32 dev eth0`,
    `ip -n ${ns} route add ${gw4} dev eth0`,
    `ip -n ${ns} route add default via ${gw4} dev eth0`,
    `ip -n ${ns} addr add ${ipv6}/64 dev eth0 nodad`,
    `ip -n ${ns} -6 route add default via ${gw6} dev eth0`,
  ];
  const { allowed, outsider } = t.clients;
  lines.push(...plain(allowed.netns, allowed.veth, allowed.ipv4, allowed.ipv6, "192.0.2.1", "2001:db8:a::1"));
  lines.push(
    ...plain(outsider.netns, outsider.veth, outsider.ipv4, outsider.ipv6, "198.51.100.1", "2001:db8:bad::1"),
  );
  for (const s of t.sinks)
    lines.push(...plain(s.netns, s.veth, s.ipv4, s.ipv6, "198.51.100.1", "2001:db8:5::1"));
  lines.push(...plain(t.trap.netns, t.trap.veth, t.trap.ipv4, t.trap.ipv6, "198.51.100.1", "2001:db8:5::1"));
  for (const n of t.nodes) {
    // The node's interface is named as on OVH; it gets its addresses from the rendered file via ifup.
    lines.push(
      `ip netns add ${n.netns}`,
      `ip -n ${wan} link add ${n.veth} type veth peer name ens3 netns ${n.netns}`,
      `ip -n ${wan} link set ${n.veth} master br0 up`,
    );
  }
  return lines.join("\n") + "\n";
}

function startDetached(logFile: string, command: string): void {
  const out = fs.openSync(logFile, "a");
  const child = spawn("setsid", ["bash", "-c", command], { detached: true, stdio: ["ignore", out, out] });
  child.unref();
}

function startDns(t: Topology, stacks: StackInput[]): void {
  const hosts: string[] = [];
  for (const n of t.nodes) hosts.push(`${n.ipv4} ${n.fqdn}`, `${n.ipv6} ${n.fqdn}`);
  // The shared service name carries every node of every stack (each stack adds its own records).
  for (const n of t.nodes.filter((x) => x.kind !== "stock")) {
    const svc = serviceFqdn(stacks.find((s) => s.stack === n.stack)!.cfg);
    hosts.push(`${n.ipv4} ${svc}`, `${n.ipv6} ${svc}`);
  }
  for (const s of t.sinks) hosts.push(`${s.ipv4} ${s.host}`, `${s.ipv6} ${s.host}`);
  hosts.push(`${t.acme.ipv4} ${t.acme.host}`);
  hosts.push(`${t.trap.ipv4} ${t.trap.host}`, `${t.trap.ipv6} ${t.trap.host}`);
  for (const d of t.trap.domains) hosts.push(`${t.trap.ipv4} ${d}`, `${t.trap.ipv6} ${d}`);
  const file = path.join(t.dir, "dns", "hosts");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, hosts.join("\n") + "\n");
  must(
    inNetns(
      t.wan.netns,
      `dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts=${q(file)} ` +
        `--listen-address=${t.dns.ipv4},${t.dns.ipv6} --bind-interfaces --except-interface=lo --user=root ` +
        t.trap.domains.map((d) => `--mx-host=${d},${t.trap.host},10 `).join("") +
        `--pid-file=${q(path.join(t.dir, "dns", "dnsmasq.pid"))} --log-facility=${q(path.join(t.dir, "dns", "dnsmasq.log"))} --log-queries`,
    ),
    "starting dnsmasq",
  );
}

export type SinkTls = "valid" | "wrong-name" | "none";

/** Starts (or restarts) one tenant sink in its namespace; `tls` breaks it on purpose for tests. */
export function startSink(t: Topology, s: Sink, tls: SinkTls = "valid"): void {
  const byAddress: Record<string, string> = {};
  for (const n of t.nodes) Object.assign(byAddress, { [n.ipv4]: n.name, [n.ipv6]: n.name });
  const tsx = path.join(ROOT, "node_modules", ".bin", "tsx");
  fs.mkdirSync(s.dir, { recursive: true });
  const pki = path.join(
    t.dir,
    "pki",
    "sinks",
    tls === "wrong-name" ? `${s.tenantId}-wrong-name` : s.tenantId,
  );
  const certs = tls === "none" ? "" : `--key ${q(`${pki}/privkey.pem`)} --cert ${q(`${pki}/fullchain.pem`)}`;
  startDetached(
    path.join(s.dir, "sink.out"),
    `exec ip netns exec ${s.netns} ${q(tsx)} ${q(path.join(ROOT, "sandbox", "sink.ts"))} ` +
      `--name ${q(s.host)} --dir ${q(s.dir)} ${certs} --nodes ${q(JSON.stringify(byAddress))}`,
  );
}

/** The trap: a plain SMTP sink for every non-tenant recipient domain (no TLS, like many MXs). */
function startTrap(t: Topology): void {
  const tsx = path.join(ROOT, "node_modules", ".bin", "tsx");
  fs.mkdirSync(t.trap.dir, { recursive: true });
  startDetached(
    path.join(t.trap.dir, "sink.out"),
    `exec ip netns exec ${t.trap.netns} ${q(tsx)} ${q(path.join(ROOT, "sandbox", "sink.ts"))} ` +
      `--name ${q(t.trap.host)} --dir ${q(t.trap.dir)}`,
  );
}

/** Stops a tenant sink: its MX is down, nodes must queue (defer) mail for it. */
export function stopSink(s: Sink): void {
  sh(`ip netns pids ${s.netns} | xargs -r kill -9`);
}

export async function waitForSink(t: Topology, s: Sink): Promise<void> {
  await waitFor(
    `sink ${s.host}`,
    () => inNetns(t.clients.allowed.netns, `exec 3<>/dev/tcp/${s.ipv4}/25`).status === 0,
    30_000,
  );
}

/** Pebble, Let's Encrypt's test CA, as the sandbox's ACME server; validates http-01 against the nodes. */
async function startPebble(t: Topology): Promise<void> {
  const dir = path.join(t.dir, "pebble");
  fs.mkdirSync(dir, { recursive: true });
  const pki = path.join(t.dir, "pki", "acme");
  fs.writeFileSync(
    path.join(dir, "pebble-config.json"),
    JSON.stringify(
      {
        pebble: {
          listenAddress: `${t.acme.ipv4}:14000`,
          managementListenAddress: `${t.acme.ipv4}:15000`,
          certificate: `${pki}/fullchain.pem`,
          privateKey: `${pki}/privkey.pem`,
          httpPort: 80,
          tlsPort: 443,
          ocspResponderURL: "",
          externalAccountBindingRequired: false,
        },
      },
      null,
      2,
    ),
  );
  startDetached(
    path.join(dir, "pebble.log"),
    `cd ${q(dir)} && PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 exec ip netns exec ${t.wan.netns} ` +
      `pebble -config pebble-config.json -dnsserver ${t.dns.ipv4}:53`,
  );
  const curl = (url: string) =>
    inNetns(
      t.wan.netns,
      `curl -sf --cacert ${q(path.join(t.dir, "ca", "ca.pem"))} --resolve ${t.acme.host}:14000:${t.acme.ipv4} --resolve ${t.acme.host}:15000:${t.acme.ipv4} ${q(url)}`,
    );
  await waitFor("Pebble", () => curl(t.acme.directory).status === 0, 30_000);
  // The root Pebble signs node certificates with (tests verify the served chain against it).
  fs.writeFileSync(
    path.join(dir, "root.pem"),
    must(curl(`${t.acme.management}/roots/0`), "fetching Pebble's root").stdout,
  );
}

export function nodeAddresses(n: SandboxNode): NodeAddresses {
  return {
    ipv4: { address: n.ipv4, gateway: "203.0.113.1" },
    ipv6: { address: n.ipv6, gateway: "2001:db8:ffff::1" },
  };
}

/** The render context of a sandbox node: the stack's own, with the overlay's config change only. */
export function nodeContext(
  t: Topology,
  n: SandboxNode,
  stacks: StackInput[],
  maps: RenderContext["maps"],
): RenderContext {
  const pub = fs.readFileSync(`${path.join(t.dir, "keys", "deploy")}.pub`, "utf8").trim();
  const cfg = overlayConfig(stacks.find((s) => s.stack === n.stack)!.cfg, pub, t.acme.directory);
  return { stack: n.stack, cfg, maps, node: nodeIdentity(cfg, n.name) };
}

/** Prepares a node's own /etc the way cloud-init would (write_files), plus the overlay, then boots it. */
function startNode(t: Topology, n: SandboxNode, ctx: RenderContext): void {
  const dir = path.join(t.dir, "nodes", n.name);
  for (const d of ["etc-up", "etc-work", "spool", "lib", "log", "home", "letsencrypt-lib"])
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  const userData = YAML.parse(renderUserData(ctx, nodeAddresses(n))) as {
    write_files: { path: string; content: string; permissions?: string }[];
    ssh_authorized_keys: string[];
  };
  const etc = (rel: string, content: string, mode = 0o644) => {
    const f = path.join(dir, "etc-up", rel);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, content, { mode });
  };
  for (const wf of userData.write_files) {
    if (!wf.path.startsWith("/etc/"))
      throw new Error(`user-data writes ${wf.path}: the sandbox only maps /etc`);
    etc(wf.path.slice(5), wf.content, wf.permissions ? parseInt(wf.permissions, 8) : 0o644);
  }
  fs.writeFileSync(path.join(dir, "authorized_keys"), userData.ssh_authorized_keys.join("\n") + "\n");
  const overlay = overlayNodeEtc(
    t,
    fs.readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8"),
    fs.readFileSync(path.join(t.dir, "ca", "ca.pem"), "utf8"),
  );
  for (const [rel, content] of Object.entries(overlay)) etc(rel, content);
  startDetached(
    path.join(dir, "node.out"),
    `exec ip netns exec ${n.netns} unshare --mount --uts --pid --fork --kill-child --mount-proc ` +
      `--propagation private bash ${q(path.join(ROOT, "sandbox", "node-init.sh"))} ${q(dir)} ${q(n.fqdn)}`,
  );
}

async function waitFor(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Pushes the production deploy steps (those that apply in the sandbox) to one node over SSH. */
export function deployNode(
  t: Topology,
  n: SandboxNode,
  ctx: RenderContext,
  edit: (files: Record<string, string>) => Record<string, string> = (f) => f,
  secrets: NodeSecrets = {},
): Result {
  const steps = nodeSteps(ctx, (files) => edit(overlayPostfixFiles(files)), secrets);
  let last: Result = { status: 0, stdout: "", stderr: "" };
  for (const step of SANDBOX_STEPS) {
    last = runStep(t, n, steps.scripts[step]);
    if (last.status !== 0) return last;
  }
  return last;
}

/**
 * A stock Debian Postfix relaying everything from tenant A's range to tenant B over TLS: Debian's own
 * main.cf plus the few settings a relay needs. The baseline header-rewrite is measured against.
 */
export function stockPostfixScript(n: SandboxNode, nexthop: string): string {
  const live = `/etc/letsencrypt/live/${n.fqdn}`;
  return `#!/bin/bash
set -euo pipefail
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
postconf -e "myhostname = ${n.fqdn}" "mydestination = \\$myhostname, localhost" "compatibility_level = 3.6" \
  "mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24 [2001:db8:a::]/48" "relayhost = ${nexthop}" \
  "smtpd_tls_cert_file = ${live}/fullchain.pem" "smtpd_tls_key_file = ${live}/privkey.pem" "smtpd_tls_security_level = may" \
  "smtp_tls_security_level = secure" "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt" "inet_protocols = ipv4" \
  "maillog_file = /var/log/postfix.log" "alias_maps = " "alias_database = " "message_size_limit = 157286400"
/usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1 || true
postfix start
echo "stock Postfix on ${n.fqdn} relays to ${nexthop}"
`;
}

export async function up(
  dir: string,
  opts: { install?: boolean; stockNode?: boolean } = {},
): Promise<Topology> {
  requireRoot();
  if (opts.install !== false) installDeps();
  down(dir, { quiet: true });
  const { stacks, maps } = loadStacks();
  const t = planTopology(dir, stacks, maps, { stockNode: opts.stockNode });
  fs.mkdirSync(path.join(dir, "keys"), { recursive: true });
  must(
    sh(`ssh-keygen -q -t ed25519 -N '' -C header-rewrite-sandbox -f ${q(path.join(dir, "keys", "deploy"))}`),
    "ssh-keygen",
  );
  makePki(t);
  fs.writeFileSync(path.join(dir, "topology.json"), JSON.stringify(topologyJson(t), null, 2) + "\n");
  log(
    `namespaces: ${[t.wan.netns, ...t.nodes.map((n) => n.netns), ...t.sinks.map((s) => s.netns), t.trap.netns, t.clients.allowed.netns, t.clients.outsider.netns].join(" ")}`,
  );
  must(sh(networkScript(t)), "building the sandbox network");
  startDns(t, stacks);
  await startPebble(t);
  for (const s of t.sinks) startSink(t, s);
  startTrap(t);
  const contexts = new Map(t.nodes.map((n) => [n.name, nodeContext(t, n, stacks, maps)]));
  for (const n of t.nodes) startNode(t, n, contexts.get(n.name)!);
  for (const n of t.nodes) {
    await waitFor(`sshd on ${n.name}`, () => ssh(t, n, "true", undefined, 10_000).status === 0, 30_000);
  }
  for (const s of t.sinks) await waitForSink(t, s);
  for (const n of t.nodes) {
    const r =
      n.kind === "stock"
        ? ([
            runStep(t, n, nodeSteps(contexts.get(n.name)!).scripts.certificate),
            runStep(t, n, stockPostfixScript(n, maps.tenants[0].nexthop)),
          ].find((x) => x.status !== 0) ?? { status: 0, stdout: `stock Postfix on ${n.fqdn}`, stderr: "" })
        : deployNode(t, n, contexts.get(n.name)!);
    if (r.status !== 0) throw new Error(`deploy to ${n.name} failed:\n${r.stderr}${r.stdout}`);
    log(r.stdout.trim().split("\n").pop() ?? "");
  }
  return t;
}

export function overlaySummary(): string {
  return [
    "The sandbox overlay (sandbox/overlay.ts) — the only differences from production:",
    ...OVERLAY_DESCRIPTION.map((l) => `  ${l}`),
  ].join("\n");
}
