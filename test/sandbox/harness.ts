// What the sandbox suites share: the running sandbox (topology, stacks, maps) and helpers that
// explain failures with the node's Postfix log.
import { expect } from "vitest";
import { type Arrival, type Message, type Sent, sendMail, waitForMessage } from "../../sandbox/mail";
import { explainOnNode } from "../../sandbox/node-host";
import { tenantSignature } from "../../sandbox/dkim";
import { type Result, inNetns } from "../../sandbox/shell";
import type { SandboxNode, Topology } from "../../sandbox/topology";
import type { Sandbox } from "../../sandbox/up";

interface SendOptions extends Omit<Message, "server"> {
  /** The client's namespace; tenant A's allowed client by default. */
  netns?: string;
}

/** Mail from tenant A is signed with its key unless the options say otherwise (dkim: undefined). */

export interface Suite {
  readonly sandbox: Sandbox;
  readonly t: Topology;
  send(node: SandboxNode, opts: SendOptions): Sent;
  explain(r: Result | undefined, node?: SandboxNode): string;
  /** Sends through NODE, expects it accepted and delivered to a tenant sink, and returns what arrived. */
  relayed(node: SandboxNode, opts: SendOptions): Promise<Arrival>;
}

export function suite(get: () => Sandbox): Suite {
  const sb: Suite = {
    get sandbox() {
      return get();
    },
    get t() {
      return get().t;
    },
    send(node, { netns, ...m }) {
      return sendMail((c) => inNetns(netns ?? sb.t.clients.allowed.netns, c), {
        server: node.ipv4,
        dkim: tenantSignature(sb.t.clients.allowed.dkim, m.from),
        ...m,
      });
    },
    async relayed(node, opts) {
      const { r, id } = sb.send(node, opts);
      expect(r.status, sb.explain(r, node)).toBe(0);
      const got = await waitForMessage(sb.t, id);
      expect(got, `${id} did not reach a tenant sink\n${sb.explain(r, node)}`).toBeTruthy();
      return got!;
    },
    explain(r, node = sb.t.nodes[0]) {
      return explainOnNode(node, r);
    },
  };
  return sb;
}
