// npm start: build the sandbox, push the production config to every node, send one message through
// each node from tenant A and print what arrived where. The sandbox stays up (npm run sandbox:down).
import * as crypto from "node:crypto";
import * as path from "node:path";
import { header, swaks, waitForMessage } from "./lib";
import { DEFAULT_DIR, type SandboxNode, type Topology } from "./topology";
import { overlaySummary, up } from "./up";

export interface Probe {
  node: string;
  senderIn: string;
  senderOut: string;
  headerFromOut: string;
  sink: string;
  tls: string;
  verdict: "ok" | "FAIL";
  detail: string;
}

/** Sends one message from tenant A's client through a node and finds it at the sinks. */
export async function probe(
  t: Topology,
  n: SandboxNode,
  from = "alice@old.example",
  expectSender = "a.smith@new.example",
): Promise<Probe> {
  const id = `probe-${n.name}-${crypto.randomBytes(6).toString("hex")}@sandbox.example`;
  const r = swaks(
    t.clients.allowed.netns,
    `--server ${n.ipv4} --tls --from ${from} --to someone@partner.example ` +
      `--header 'From: Alice Example <${from}>' --header 'Message-Id: <${id}>' --header 'Subject: sandbox probe via ${n.name}'`,
  );
  const base = { node: n.name, senderIn: from };
  if (r.status !== 0) {
    return {
      ...base,
      senderOut: "-",
      headerFromOut: "-",
      sink: "-",
      tls: "-",
      verdict: "FAIL",
      detail: r.stdout
        .split("\n")
        .filter((l) => /^<[~-]\*/.test(l))
        .join(" "),
    };
  }
  const got = await waitForMessage(t, id, 60_000);
  if (!got)
    return {
      ...base,
      senderOut: "-",
      headerFromOut: "-",
      sink: "(none in 60 s)",
      tls: "-",
      verdict: "FAIL",
      detail: "not delivered",
    };
  const fromOut = header(got.eml, "From") ?? "";
  const ok =
    got.record.mailFrom === expectSender &&
    fromOut.includes(`<${expectSender}>`) &&
    got.record.node === n.name &&
    !!got.record.tls;
  return {
    ...base,
    senderOut: got.record.mailFrom,
    headerFromOut: fromOut,
    sink: got.sink.replace(/^\[|\]$/g, ""),
    tls: got.record.tls?.protocol ?? "none",
    verdict: ok ? "ok" : "FAIL",
    detail: ok ? "" : JSON.stringify(got.record),
  };
}

export function table(rows: Probe[]): string {
  const head = [
    "node",
    "sender in",
    "sender out",
    "header From out",
    "tenant sink reached",
    "TLS",
    "verdict",
  ];
  const data = rows.map((r) => [r.node, r.senderIn, r.senderOut, r.headerFromOut, r.sink, r.tls, r.verdict]);
  const w = head.map((h, i) => Math.max(h.length, ...data.map((d) => d[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(w[i])).join(" | ")} |`;
  return [line(head), `|${w.map((x) => "-".repeat(x + 2)).join("|")}|`, ...data.map(line)].join("\n");
}

async function main(): Promise<void> {
  const dir = process.env.HEADER_REWRITE_SANDBOX ?? DEFAULT_DIR;
  const t = await up(dir);
  console.log(`\n${overlaySummary()}\n`);
  const rows: Probe[] = [];
  for (const n of t.nodes) rows.push(await probe(t, n));
  console.log(table(rows));
  for (const r of rows.filter((x) => x.verdict === "FAIL")) console.log(`${r.node}: ${r.detail}`);
  const a = t.clients.allowed;
  console.log(`
The sandbox is running (topology: ${path.join(dir, "topology.json")}).
Send your own mail from tenant A's client, e.g. through ${t.nodes[0].name}:
  sudo ip netns exec ${a.netns} swaks --server ${t.nodes[0].ipv4} --tls --from bob@old.example --to you@partner.example
From the outsider (refused): sudo ip netns exec ${t.clients.outsider.netns} swaks --server ${t.nodes[0].ipv4} --tls --from bob@old.example --to you@partner.example
Messages at the tenant sinks (<id>.eml + <id>.json):
${t.sinks.map((s) => `  ${s.host}: ${s.dir}`).join("\n")}
Node logs: ${path.join(dir, "nodes", "<node>", "log", "postfix.log")}; a shell on a node: sudo ip netns exec ${t.nodes[0].netns} ssh -i ${path.join(dir, "keys", "deploy")} debian@${t.nodes[0].ipv4}
Tear down: sudo npm run sandbox:down`);
  if (rows.some((r) => r.verdict === "FAIL")) process.exit(1);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(`sandbox: ${(e as Error).message}`);
    process.exit(1);
  });
}
