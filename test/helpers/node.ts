// One relay node for the real-Postfix tests: a NodeHost (sandbox/node-host.ts) in a network namespace
// of its own with only loopback, so nothing it looks up or sends can leave, and self-signed test
// certificates where certbot would put the node's and each tenant's.
import * as fs from "node:fs";
import { afterAll, beforeAll } from "vitest";
import * as os from "node:os";
import * as path from "node:path";
import type { NodeBundle } from "../../src/render/bundle";
import { loadStackConfig, nodeIdentity } from "../../src/config/stack-config";
import { type NodeSecrets, type StepId, deploySteps, statusSpec } from "../../src/deploy/steps";
import { tenantCertsViaLego } from "../../src/config/images";
import { PLACEHOLDER_SECRETS } from "../../src/review/offline-review";
import { tenantCertChainFiles, tlsPaths } from "../../src/node-layout";
import { type RelayMaps, loadMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { renderNode } from "../../src/render/node-render";
import { type NodeStatus, statusScript } from "../../src/status/fleet-status";
import { shellQuote as q } from "../../src/deploy/shell-text";
import { type Message, type Sent, queuedAs, sendMail, starttlsAnswers } from "../../sandbox/mail";
import {
  type NodeHost,
  type QueueEntry,
  bootNodeHost,
  explainOnNode,
  nodeLog,
  onNode,
  queue,
  removeNodeHost,
  rewrittenAs,
} from "../../sandbox/node-host";
import { overlayBundle } from "../../sandbox/overlay";
import {
  type DkimKey,
  TENANT_A_INITIAL_DOMAIN,
  createDkimKey,
  dkimKeyIn,
  dkimRecord,
  dnsmasqKeys,
  tenantSignature,
} from "../../sandbox/dkim";
import { type Result, must, pollFor, pollUntil, sh } from "../../sandbox/shell";

/** Tenant A's DKIM keys in the real-Postfix tests (old.example, tenanta.onmicrosoft.com), and another tenant's. */
const KEYS_DIR = fs.mkdtempSync(path.join(os.tmpdir(), "hr-dkim-"));
export const TENANT_A = createDkimKey(dkimKeyIn(KEYS_DIR, "old.example"));
export const TENANT_A_INITIAL: DkimKey = { ...TENANT_A, domain: TENANT_A_INITIAL_DOMAIN };
export const IMPOSTOR = createDkimKey(dkimKeyIn(KEYS_DIR, "impostor.example"));

async function startTestNode(fqdn: string): Promise<NodeHost> {
  const name = fqdn.split(".")[0];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `hr-node-${name}-`));
  // Not "hr-": the sandbox removes its own namespaces by that prefix.
  const h: NodeHost = { name, fqdn, netns: `hrt-${name}-${process.pid}`, dir, logDir: path.join(dir, "log") };
  must(sh(`ip netns add ${h.netns}`), `ip netns add ${h.netns}`);
  const selfSigned = (name: string, key: string, chain: string) =>
    `mkdir -p ${q(path.dirname(key))} ${q(path.dirname(chain))}
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=${name}" \\
      -addext "subjectAltName=DNS:${name}" -keyout ${q(key)} -out ${q(chain)} 2>/dev/null`;
  const tls = tlsPaths(fqdn);
  const tenants = Object.entries(LON.tenantCertificates).map(([id, name]) => {
    const [key, chain] = tenantCertChainFiles(id, name, tenantCertsViaLego(LON.image)).split(",");
    return selfSigned(name, key, chain);
  });
  bootNodeHost(
    h,
    // DNS on the node's own loopback: the DKIM keys, nothing else (every other name is REFUSED,
    // so deliveries defer).
    `rm -f /etc/resolv.conf; echo "nameserver 127.0.0.1" > /etc/resolv.conf
    dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces \\
      --user=root --pid-file=/run/dnsmasq.pid ${dnsmasqKeys([TENANT_A, TENANT_A_INITIAL, IMPOSTOR].map((k) => dkimRecord(k)))}
    ${[selfSigned(fqdn, tls.keyFile, tls.chainFile), ...tenants].join("\n    ")}
    exec sleep infinity`,
  );
  try {
    await pollUntil(`test node ${fqdn}`, () => onNode(h, "pgrep -x sleep").status === 0, 20_000, 50);
  } catch (e) {
    const out = path.join(dir, "node.out");
    const why = fs.existsSync(out) ? fs.readFileSync(out, "utf8") : "";
    removeNodeHost(h);
    throw new Error(`${(e as Error).message}: ${why}`, { cause: e });
  }
  return h;
}

/** lon1 as the real-Postfix tests deploy it: the committed lon stack. */
const LON = loadStackConfig("lon");
const LON1 = nodeIdentity(LON, "lon1");

/** lon1's rendered bundle with the sandbox overlay (Postfix logs to a file the tests can show). */
export function lon1Bundle(
  maps: RelayMaps = loadMaps(MAPS_DIR),
  edit?: (f: Record<string, string>) => Record<string, string>,
): NodeBundle {
  return overlayBundle(renderNode({ stack: "lon", cfg: LON, maps, node: LON1 }), edit);
}

/** Runs one production deploy step of BUNDLE on the node (with PATH first on the path, if given). */
export function deployStep(
  h: NodeHost,
  id: StepId,
  bundle: NodeBundle,
  opts: { secrets?: NodeSecrets; path?: string } = {},
): Result {
  return onNode(
    h,
    opts.path ? `PATH=${opts.path}:$PATH bash -s` : "bash -s",
    stepScript(id, bundle, opts.secrets),
  );
}

/** The production script of deploy step ID for BUNDLE on lon1. */
export function stepScript(id: StepId, bundle: NodeBundle, secrets?: NodeSecrets): string {
  return deploySteps(LON, bundle, { dnsCredentials: PLACEHOLDER_SECRETS.dnsCredentials, ...secrets }).find(
    (s) => s.id === id,
  )!.script;
}

/** Runs the production Postfix deploy step of BUNDLE on the node. */
export function deployPostfix(h: NodeHost, bundle: NodeBundle, path?: string): Result {
  return deployStep(h, "postfix", bundle, { path });
}

/** What the status collector (node/relay-status.py) answers on the node for BUNDLE, as `npm run status` asks. */
export function nodeStatus(h: NodeHost, bundle: NodeBundle): NodeStatus {
  const r = onNode(h, statusScript(bundle, statusSpec(LON, bundle, 24)));
  if (r.status !== 0) throw new Error(`the status collector failed on ${h.name}:\n${r.stderr}`);
  return JSON.parse(r.stdout) as NodeStatus;
}

/** The Prometheus text the metrics timer would write on the node for BUNDLE. */
export function nodeMetrics(h: NodeHost, bundle: NodeBundle): string {
  onNode(h, "cat > /root/spec.json", JSON.stringify(statusSpec(LON, bundle, 24)));
  return onNode(
    h,
    "/usr/bin/python3 - --prometheus /root/spec.json /root/out.prom && cat /root/out.prom",
    bundle.nodeFiles["relay-status.py"],
  ).stdout;
}

/** Sends with swaks from the node itself to its own Postfix on loopback, signed as tenant A unless M says. */
export function sendLocal(h: NodeHost, m: Omit<Message, "server">): Sent {
  return sendMail((c) => onNode(h, c), {
    server: "127.0.0.1",
    dkim: tenantSignature(TENANT_A, m.from),
    ...m,
  });
}

/** Waits until the node's Postfix completes STARTTLS again after a reload. */
export async function smtpReady(h: NodeHost): Promise<void> {
  const onIt = (c: string) => onNode(h, c);
  await pollUntil(`STARTTLS on ${h.name}`, () => starttlsAnswers(onIt, "127.0.0.1"), 20_000, 200);
}

/**
 * The queue entry of the message the server accepted in R, once Postfix has tried it and kept it
 * deferred (the test node has no DNS, so every delivery defers naming the next hop it chose).
 */
export async function deferred(h: NodeHost, r: Result): Promise<QueueEntry> {
  const first = queuedAs(r);
  if (!first) throw new Error(`the message was not accepted:\n${r.stdout}`);
  const entry = await pollFor(
    () => {
      const queueId = rewrittenAs(h, first);
      return queue(h).find((e) => e.queue_id === queueId && e.recipients[0]?.delay_reason);
    },
    20_000,
    100,
  );
  if (!entry) throw new Error(`message ${first} was not deferred within 20 s:\n${nodeLog(h, 20)}`);
  return entry;
}

/** lon1 in namespaces of its own, with the committed configuration deployed and Postfix running. */
async function startLon1(): Promise<NodeHost> {
  const n = await startTestNode(LON1.fqdn);
  const r = deployPostfix(n, lon1Bundle());
  if (r.status !== 0) {
    const why = explain(n, r);
    removeNodeHost(n);
    throw new Error(`the first deploy to the test node failed:\n${why}`);
  }
  console.log(r.stdout.trim());
  return n;
}

/** Gives the calling test file a running lon1 (started before its tests, removed after them). */
export function useLon1(): () => NodeHost {
  let n: NodeHost | undefined;
  beforeAll(async () => {
    n = await startLon1();
  });
  afterAll(() => n && removeNodeHost(n));
  return () => n!;
}

/** A command's output and the node's recent Postfix log, for assertion messages. */
export function explain(h: NodeHost, r?: Result): string {
  return explainOnNode(h, r, 30);
}
