// The sandbox's services around the nodes: a CA (sinks, Pebble's API), DNS, Pebble as the ACME
// server, one capturing sink per tenant and the trap for every other recipient domain.
import * as fs from "node:fs";
import * as path from "node:path";
import { serviceFqdn, type StackConfig } from "../src/config/stack-config";
import { shellQuote as q } from "../src/deploy/shell-text";
import { TSX, inNetns, must, pollUntil, sh, startDetached } from "./shell";
import { killNamespace, onNode } from "./node-host";
import { TENANT_A_INITIAL_DOMAIN, dkimRecord, dnsmasqKeys } from "./dkim";
import type { Sink, Topology } from "./topology";

const EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

function openssl(args: string): void {
  must(sh(`openssl ${args}`), `openssl ${args.split(" ")[0]}`);
}

/** A sandbox CA: it signs the tenant sinks' certificates (and a wrong-name one each) and Pebble's API. */
export function makePki(t: Topology): void {
  const ca = path.join(t.dir, "ca");
  fs.mkdirSync(ca, { recursive: true });
  openssl(
    `req -x509 ${EC_KEY} -days 30 -subj "/CN=header-rewrite sandbox CA" -keyout ${ca}/ca.key -out ${ca}/ca.pem`,
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
    `[leaf]\nsubjectAltName=${sans.map((s) => `DNS:${s}`).join(",")}\n` +
      `extendedKeyUsage=serverAuth${opts.clientAuth ? ",clientAuth" : ""}\nbasicConstraints=CA:FALSE\n` +
      "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
  );
  const sign = (csr: string, section: string, out: string) =>
    openssl(
      `x509 -req -in ${csr} -CA ${issuer} -CAkey ${issuerKey} -CAcreateserial -days 30 ` +
        `-extfile ${ext} -extensions ${section} -out ${out}`,
    );
  let [issuer, issuerKey, chain] = [`${ca}/ca.pem`, `${ca}/ca.key`, ""];
  if (opts.intermediate) {
    openssl(
      `req ${EC_KEY} -subj "/CN=header-rewrite sandbox intermediate" -keyout ${dir}/int.key -out ${dir}/int.csr`,
    );
    sign(`${dir}/int.csr`, "ca", `${dir}/int.pem`);
    [issuer, issuerKey, chain] = [
      `${dir}/int.pem`,
      `${dir}/int.key`,
      fs.readFileSync(`${dir}/int.pem`, "utf8"),
    ];
  }
  openssl(`req ${EC_KEY} -subj "/CN=${name}" -keyout ${dir}/privkey.pem -out ${dir}/req.csr`);
  sign(`${dir}/req.csr`, "leaf", `${dir}/cert.pem`);
  const root = fs.readFileSync(path.join(ca, "ca.pem"), "utf8");
  fs.writeFileSync(
    path.join(dir, "fullchain.pem"),
    fs.readFileSync(path.join(dir, "cert.pem"), "utf8") + (chain || root),
  );
}

/**
 * The DKIM keys the sandbox DNS publishes: tenant A's under old.example and under its initial
 * domain (the onmicrosoft.com signature), the impostor's under its own domain.
 */
export function dkimRecords(t: Topology): { name: string; value: string }[] {
  const a = t.clients.allowed.dkim;
  return [dkimRecord(a), dkimRecord(a, TENANT_A_INITIAL_DOMAIN), dkimRecord(t.clients.impostor.dkim)];
}

export function startDns(t: Topology, stacks: { stack: string; cfg: StackConfig }[]): void {
  const hosts: string[] = [];
  for (const n of t.nodes) hosts.push(`${n.ipv4} ${n.fqdn}`, `${n.ipv6} ${n.fqdn}`);
  // The shared service name carries every node of every stack (each stack adds its own records).
  for (const n of t.nodes.filter((x) => x.kind !== "stock")) {
    const svc = serviceFqdn(stacks.find((s) => s.stack === n.stack)!.cfg);
    hosts.push(`${n.ipv4} ${svc}`, `${n.ipv6} ${svc}`);
  }
  for (const s of t.sinks) hosts.push(`${s.ipv4} ${s.host}`, `${s.ipv6} ${s.host}`);
  hosts.push(`${t.acme.ipv4} ${t.acme.host}`, `${t.ovhApi.ipv4} ${t.ovhApi.host}`);
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
        `${dnsmasqKeys(dkimRecords(t))} ` +
        // The tenants' zones are OVH-hosted: the stand-in answers for them (dns-01 TXT records).
        t.ovhApi.zones.map((d) => `--server=/${d}/${t.ovhApi.ipv4} `).join("") +
        `--pid-file=${q(path.join(t.dir, "dns", "dnsmasq.pid"))} ` +
        `--log-facility=${q(path.join(t.dir, "dns", "dnsmasq.log"))} --log-queries`,
    ),
    "starting dnsmasq",
  );
}

/**
 * The sandbox's time server (sandbox/ntp-server.py) on the DNS server's address: every node's
 * chrony follows it. Its time is this machine's plus the skew setClockSkew() writes.
 */
export function startTimeServer(t: Topology): void {
  const dir = path.join(t.dir, "ntp");
  fs.mkdirSync(dir, { recursive: true });
  setClockSkew(t, 0);
  startDetached(
    path.join(dir, "ntp.out"),
    `exec ip netns exec ${t.wan.netns} /usr/bin/python3 ${q(path.join(__dirname, "ntp-server.py"))} ` +
      `${t.dns.ipv4} ${q(path.join(dir, "skew"))}`,
  );
}

/**
 * Makes the true time (what the time server says) SECONDS ahead of the machine's clock, which the
 * nodes share: positive, every node's clock is that much slow; negative, fast.
 */
export function setClockSkew(t: Topology, seconds: number): void {
  fs.writeFileSync(path.join(t.dir, "ntp", "skew"), `${seconds}\n`);
}

type SinkTls = "valid" | "wrong-name" | "none";

const SINK = path.join(__dirname, "sink.ts");

function runSink(netns: string, dir: string, args: string): void {
  fs.mkdirSync(dir, { recursive: true });
  startDetached(
    path.join(dir, "sink.out"),
    `exec ip netns exec ${netns} ${q(TSX)} ${q(SINK)} --dir ${q(dir)} ${args}`,
  );
}

/** Starts (or restarts) one tenant sink in its namespace; `tls` breaks it on purpose for tests. */
export function startSink(t: Topology, s: Sink, tls: SinkTls = "valid"): void {
  const byAddress: Record<string, string> = {};
  for (const n of t.nodes) Object.assign(byAddress, { [n.ipv4]: n.name, [n.ipv6]: n.name });
  const pki = path.join(
    t.dir,
    "pki",
    "sinks",
    tls === "wrong-name" ? `${s.tenantId}-wrong-name` : s.tenantId,
  );
  const certs = tls === "none" ? "" : `--key ${q(`${pki}/privkey.pem`)} --cert ${q(`${pki}/fullchain.pem`)}`;
  runSink(s.netns, s.dir, `--name ${q(s.host)} ${certs} --nodes ${q(JSON.stringify(byAddress))}`);
}

/** The trap: a plain SMTP sink for every non-tenant recipient domain (no TLS, like many MXs). */
export function startTrap(t: Topology): void {
  runSink(t.trap.netns, t.trap.dir, `--name ${q(t.trap.host)}`);
}

/** Stops a tenant sink: its MX is down, nodes must queue (defer) mail for it. */
export function stopSink(s: Sink): void {
  killNamespace(s.netns);
}

/**
 * Starts a tenant sink again (in MODE; its predecessor, if any, is stopped first), waits until it
 * answers, and makes every node retry its deferred mail at once instead of at the next queue run.
 */
export async function restartSink(t: Topology, s: Sink, mode: SinkTls = "valid"): Promise<void> {
  stopSink(s);
  // The old sink must be gone before the new one binds port 25, or the new one cannot listen and a
  // probe would still reach the old one for a moment.
  await pollUntil(`sink ${s.host} stopped`, () => !sinkAnswers(t, s), 15_000);
  const log = path.join(s.dir, "sink.log");
  const listening = () =>
    fs.existsSync(log) ? (fs.readFileSync(log, "utf8").match(/ listening on /g)?.length ?? 0) : 0;
  const before = listening();
  startSink(t, s, mode);
  await pollUntil(`sink ${s.host} listening again`, () => listening() > before, 30_000);
  await waitForSink(t, s);
  for (const n of t.nodes) onNode(n, "postqueue -f");
}

/** Something accepts TCP connections on the sink's port 25 (seen from tenant A's client). */
function sinkAnswers(t: Topology, s: Sink): boolean {
  return inNetns(t.clients.allowed.netns, `exec 3<>/dev/tcp/${s.ipv4}/25`).status === 0;
}

export async function waitForSink(t: Topology, s: Sink): Promise<void> {
  await pollUntil(`sink ${s.host}`, () => sinkAnswers(t, s), 30_000);
}

/** The OVH API and name-server stand-in (sandbox/ovh-api.ts), with a sandbox-CA certificate. */
export function startOvhApi(t: Topology): void {
  const o = t.ovhApi;
  issueLeaf(t, o.host, [o.host], path.join(o.dir, "tls"));
  startDetached(
    path.join(o.dir, "ovh-api.out"),
    `exec ip netns exec ${t.wan.netns} ${q(TSX)} ${q(path.join(__dirname, "ovh-api.ts"))} --dir ${q(o.dir)} ` +
      `--address ${o.ipv4} --zones ${q(o.zones.join(","))} --ns ${q(o.host)} ` +
      `--cert ${q(path.join(o.dir, "tls", "fullchain.pem"))} --key ${q(path.join(o.dir, "tls", "privkey.pem"))}`,
  );
}

/** Pebble, Let's Encrypt's test CA, as the sandbox's ACME server; validates http-01 against the nodes. */
export async function startPebble(t: Topology): Promise<void> {
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
      `curl -sf --cacert ${q(path.join(t.dir, "ca", "ca.pem"))} ` +
        `--resolve ${t.acme.host}:14000:${t.acme.ipv4} --resolve ${t.acme.host}:15000:${t.acme.ipv4} ${q(url)}`,
    );
  await pollUntil("Pebble", () => curl(t.acme.directory).status === 0, 30_000);
  // The root Pebble signs node certificates with (tests verify the served chain against it).
  fs.writeFileSync(
    path.join(dir, "root.pem"),
    must(curl(`${t.acme.management}/roots/0`), "fetching Pebble's root").stdout,
  );
}
