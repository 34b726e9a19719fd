// What the sandbox suites share: the running sandbox (topology, stacks, maps) and helpers that
// explain failures with the node's Postfix log.
import { type Message, type Sent, sendMail } from "../../sandbox/mail";
import { nodeLog } from "../../sandbox/node-host";
import { type Result, inNetns } from "../../sandbox/shell";
import type { SandboxNode, Topology } from "../../sandbox/topology";
import type { Sandbox } from "../../sandbox/up";

interface SendOptions extends Omit<Message, "server"> {
  /** The client's namespace; tenant A's allowed client by default. */
  netns?: string;
}

export interface Suite {
  readonly sandbox: Sandbox;
  readonly t: Topology;
  send(node: SandboxNode, opts: SendOptions): Sent;
  explain(r: Result | undefined, node?: SandboxNode): string;
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
      return sendMail((c) => inNetns(netns ?? sb.t.clients.allowed.netns, c), { server: node.ipv4, ...m });
    },
    explain(r, node = sb.t.nodes[0]) {
      return `${r ? `exit ${r.status}\n${r.stdout}\n${r.stderr}\n` : ""}--- ${node.name} postfix log ---\n${nodeLog(node, 25)}`;
    },
  };
  return sb;
}
