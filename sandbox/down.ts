// Removes every namespace, process and mount the sandbox made (mounts live in the nodes' own mount
// namespaces and go with their processes), and the sandbox directory.
import * as fs from "node:fs";
import { sh } from "./lib";
import { DEFAULT_DIR } from "./topology";

export const PREFIX = "hr-";

export function down(dir: string, opts: { quiet?: boolean } = {}): void {
  const names = sh("ip netns list")
    .stdout.split("\n")
    .map((l) => l.split(" ")[0])
    .filter((n) => n.startsWith(PREFIX));
  for (const ns of names) {
    // Every process in the namespace: node PID-1 (sshd; its PID namespace takes Postfix with it),
    // sinks, dnsmasq, anything a user started there.
    sh(`ip netns pids ${ns} | xargs -r kill -9`);
  }
  for (let i = 0; i < 50 && names.some((ns) => sh(`ip netns pids ${ns}`).stdout.trim()); i++) sh("sleep 0.1");
  for (const ns of names) sh(`ip netns delete ${ns}`);
  if (fs.existsSync(dir)) fs.rmSync(dir, { recursive: true, force: true });
  if (!opts.quiet)
    console.log(
      `sandbox: removed ${names.length} namespaces${names.length ? ` (${names.join(" ")})` : ""} and ${dir}`,
    );
}

if (require.main === module) {
  down(process.env.HEADER_REWRITE_SANDBOX ?? DEFAULT_DIR);
}
