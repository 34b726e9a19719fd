// npm run status -- --stack <lon|bhs> [--stack …] [--identity <key>] [--json] [limits]
// (The local sandbox: npm run sandbox:status [-- --json], sandbox/status-cli.ts.)
// Asks every node of the stacks over SSH how it is (read only, no mail sent) and exits 0 only when
// the fleet is healthy, so cron or CI can alert on it.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { listStacks } from "../src/config/stack-config";
import { RUN_AS_ROOT } from "../src/node-layout";
import { loadProject, planNode } from "../src/plan";
import { type StatusTarget, limitsFromArgs, reportStatus } from "../src/status/fleet-status";

const USAGE = `usage: npm run status -- --stack <${listStacks().join("|")}> [--stack …] [--identity <ssh key file>]
                         [--known-hosts <file>] [--json] [--max-deferred-age <s>] [--min-certificate-days <d>]`;

/** The stack's outputs, through the Pulumi CLI the operator deploys with. */
function stackOutputs(stack: string): Record<string, unknown> {
  const r = spawnSync("pulumi", ["stack", "output", "--json", "--stack", stack], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    throw new Error(`pulumi stack output --stack ${stack} failed: ${r.error?.message ?? r.stderr.trim()}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Every node of a deployed stack, reached as the remote commands reach it (deploy user, sudo). */
function stackTargets(stack: string, identity?: string, explicitKnownHosts?: string): StatusTarget[] {
  const project = loadProject(stack);
  const { cfg } = project;
  const out = stackOutputs(stack);
  const addresses = (out.nodeAddresses ?? {}) as Record<string, { ipv4: string }>;
  const certTenants = ((out.clientCertificateTenants ?? []) as string[]).slice().sort();
  // Verified by the host keys the program pinned (stack output sshHostKeys), never trusted on first use.
  const hostKeys = (out.sshHostKeys ?? {}) as Record<string, string>;
  const knownHosts =
    explicitKnownHosts ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), "hr-status-")), "known_hosts");
  if (!explicitKnownHosts) {
    const pinned = cfg.nodes.filter((n) => addresses[n] && hostKeys[n]);
    fs.writeFileSync(knownHosts, pinned.map((n) => `${addresses[n].ipv4} ${hostKeys[n]}\n`).join(""));
  }
  return cfg.nodes.map((name) => {
    const ipv4 = addresses[name]?.ipv4;
    return {
      node: name,
      cfg,
      bundle: planNode(project, name, { clientCertTenants: certTenants }).bundle,
      run: (script: string) => {
        if (!ipv4)
          return { status: 1, stdout: "", stderr: `${name} is not in the outputs of stack ${stack}` };
        if (!hostKeys[name] && !explicitKnownHosts)
          return {
            status: 1,
            stdout: "",
            stderr: `${name} has no pinned host key in the outputs of stack ${stack} (run pulumi up -s ${stack})`,
          };
        const args = [
          "-o",
          "BatchMode=yes",
          "-o",
          "ConnectTimeout=15",
          "-o",
          "StrictHostKeyChecking=yes",
          ...(identity ? ["-i", identity] : []),
          "-o",
          `UserKnownHostsFile=${knownHosts}`,
        ];
        const r = spawnSync("ssh", [...args, `${cfg.sshUser}@${ipv4}`, RUN_AS_ROOT], {
          input: script,
          encoding: "utf8",
          timeout: 240_000,
        });
        return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? r.error?.message ?? "" };
      },
    };
  });
}

try {
  const { values } = parseArgs({
    options: {
      stack: { type: "string", multiple: true },
      identity: { type: "string" },
      "known-hosts": { type: "string" },
      json: { type: "boolean" },
      "max-deferred-age": { type: "string" },
      "min-certificate-days": { type: "string" },
    },
  });
  if (!values.stack?.length) {
    console.error(USAGE);
    process.exit(2);
  }
  const targets = values.stack.flatMap((s) => stackTargets(s, values.identity, values["known-hosts"]));
  process.exit(reportStatus(targets, limitsFromArgs(values), values.json ?? false));
} catch (e) {
  console.error((e as Error).message);
  process.exit(2);
}
