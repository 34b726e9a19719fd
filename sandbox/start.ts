// npm start: build the sandbox, push the production config to every node, send one message through
// each node from tenant A and print what arrived where. The sandbox stays up (npm run sandbox:down).
import * as path from "node:path";
import { deployKeyFile, knownHostsFile } from "./nodes";
import { type Probe, probe, probeTable } from "./probe";
import { runMain } from "./shell";
import { DEFAULT_DIR } from "./topology";
import { overlaySummary, up } from "./up";

async function main(): Promise<void> {
  const dir = process.env.HEADER_REWRITE_SANDBOX ?? DEFAULT_DIR;
  const { t } = await up(dir);
  console.log(`\n${overlaySummary()}\n`);
  const rows: Probe[] = [];
  for (const n of t.nodes) rows.push(await probe(t, n));
  console.log(probeTable(rows));
  for (const r of rows.filter((x) => x.verdict === "FAIL")) console.log(`${r.node}: ${r.detail}`);
  const [first] = t.nodes;
  const swaks = `swaks --server ${first.ipv4} --tls --from bob@old.example --to you@partner.example`;
  console.log(`
The sandbox is running (topology: ${path.join(dir, "topology.json")}).
Send your own mail from tenant A's client, e.g. through ${first.name}:
  sudo ip netns exec ${t.clients.allowed.netns} ${swaks}
From the outsider (refused):
  sudo ip netns exec ${t.clients.outsider.netns} ${swaks}
Messages at the tenant sinks (<id>.eml + <id>.json):
${t.sinks.map((s) => `  ${s.host}: ${s.dir}`).join("\n")}
Node logs: ${path.join(dir, "nodes", "<node>", "root", "var", "log", "postfix.log")}
A shell on a node (verified by its pinned host key):
  sudo ip netns exec ${first.netns} ssh -i ${deployKeyFile(t)} -o UserKnownHostsFile=${knownHostsFile(t)} \\
    -o StrictHostKeyChecking=yes debian@${first.ipv4}
Tear down: sudo npm run sandbox:down`);
  if (rows.some((r) => r.verdict === "FAIL")) process.exit(1);
}

runMain(main, "sandbox");
