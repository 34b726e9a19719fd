// The probe `npm start` prints and the relay suite asserts: one message from tenant A through each
// node, found at the tenant sinks, rewritten, over TLS.
import { header, refusal, sendMail, waitForMessage } from "./mail";
import { inNetns } from "./shell";
import type { SandboxNode, Topology } from "./topology";
import { tenantSignature } from "./dkim";

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
  const { r, id } = sendMail((c) => inNetns(t.clients.allowed.netns, c), {
    server: n.ipv4,
    from,
    to: "someone@partner.example",
    headers: [`From: Alice Example <${from}>`, `Subject: sandbox probe via ${n.name}`],
    dkim: tenantSignature(t.clients.allowed.dkim, from),
  });
  const failed = { node: n.name, senderIn: from, senderOut: "-", headerFromOut: "-", sink: "-", tls: "-" };
  if (r.status !== 0) return { ...failed, verdict: "FAIL", detail: refusal(r) ?? r.stdout.slice(-300) };
  const got = await waitForMessage(t, id, 60_000);
  if (!got) return { ...failed, sink: "(none in 60 s)", verdict: "FAIL", detail: "not delivered" };
  const fromOut = header(got.eml, "From") ?? "";
  const ok =
    got.record.mailFrom === expectSender &&
    fromOut.includes(`<${expectSender}>`) &&
    got.record.node === n.name &&
    !!got.record.tls;
  return {
    ...failed,
    senderOut: got.record.mailFrom,
    headerFromOut: fromOut,
    sink: got.sink.replace(/^\[|\]$/g, ""),
    tls: got.record.tls?.protocol ?? "none",
    verdict: ok ? "ok" : "FAIL",
    detail: ok ? "" : JSON.stringify(got.record),
  };
}

export function probeTable(rows: Probe[]): string {
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
