// What the sandbox suites share: the running topology and helpers that explain failures with the
// node's Postfix log.
import * as crypto from "node:crypto";
import { type Result, nodeLog, onNode, swaks } from "../../sandbox/lib";
import type { SandboxNode, Topology } from "../../sandbox/topology";

export interface SendOptions {
  from: string;
  headers?: string[];
  netns?: string;
  to?: string;
  quitAfter?: string;
  /** extra swaks arguments, e.g. a TLS protocol */
  extra?: string;
  tls?: boolean;
}

export interface Sandbox {
  t: Topology;
  send(node: SandboxNode, opts: SendOptions): { r: Result; id: string };
  explain(r: Result | undefined, node?: SandboxNode): string;
  /** Queue entries on a node (postqueue -j). */
  queue(
    node: SandboxNode,
  ): { queue_id: string; sender: string; recipients: { address: string; delay_reason?: string }[] }[];
}

/** The 4xx/5xx reply swaks saw (`<**` in plaintext, `<~*` inside TLS), if any. */
export const refusal = (r: Result) => /^<(?:\*\*|~\*)\s+([45]\d\d [^\n]*)$/m.exec(r.stdout)?.[1];

export function sandbox(getT: () => Topology): Sandbox {
  const sb: Sandbox = {
    get t() {
      return getT();
    },
    send(node, opts) {
      const id = `${crypto.randomBytes(8).toString("hex")}@test.sandbox.example`;
      const headers = [...(opts.headers ?? []), `Message-Id: <${id}>`]
        .map((h) => `--header '${h}'`)
        .join(" ");
      const r = swaks(
        opts.netns ?? sb.t.clients.allowed.netns,
        `--server ${node.ipv4}${opts.tls === false ? "" : " --tls"} --from '${opts.from}' --to '${opts.to ?? "rcpt@partner.example"}' ${headers}` +
          `${opts.quitAfter ? ` --quit-after ${opts.quitAfter}` : ""} ${opts.extra ?? ""}`,
      );
      return { r, id };
    },
    explain(r, node = sb.t.nodes[0]) {
      return `${r ? `exit ${r.status}\n${r.stdout}\n${r.stderr}\n` : ""}--- ${node.name} postfix log ---\n${nodeLog(sb.t, node, 25)}`;
    },
    queue(node) {
      return onNode(node, "postqueue -j")
        .stdout.trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l));
    },
  };
  return sb;
}
