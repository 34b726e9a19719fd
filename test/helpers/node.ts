// A relay node on this machine: namespaces from test/harness/node-ns.sh kept alive with
// `sleep infinity`; steps run inside with nsenter; stop() kills the namespace and all it started.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ROOT } from "./stack";

export interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

export class NodeNamespace {
  private constructor(
    readonly fqdn: string,
    readonly work: string,
    private proc: ChildProcess,
    readonly pid: number,
  ) {}

  static async start(fqdn: string): Promise<NodeNamespace> {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), `hr-node-${fqdn.split(".")[0]}-`));
    const proc = spawn(path.join(ROOT, "test", "harness", "node-ns.sh"), [work, fqdn, "sleep", "infinity"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr!.on("data", (d) => (stderr += d));
    for (let i = 0; i < 100; i++) {
      const child = spawnSync("pgrep", ["-P", String(proc.pid)], { encoding: "utf8" }).stdout.trim();
      if (child) {
        const node = new NodeNamespace(fqdn, work, proc, Number(child.split("\n")[0]));
        if (node.run("hostname").stdout.trim() === fqdn) return node;
      }
      if (proc.exitCode !== null) throw new Error(`node namespace for ${fqdn} failed to start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill("SIGKILL");
    throw new Error(`node namespace for ${fqdn} did not come up: ${stderr}`);
  }

  /** Runs a bash command inside the node (all of its namespaces). */
  run(command: string, input?: string): Result {
    const r = spawnSync(
      "nsenter",
      ["-t", String(this.pid), "-m", "-n", "-u", "-p", "--", "bash", "-c", command],
      {
        input,
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return { status: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
  }

  /** The Postfix log of this node (maillog_file from the test overlay). */
  log(): string {
    const f = path.join(this.work, "log", "postfix.log");
    return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "(no postfix log)";
  }

  stop(): void {
    this.proc.kill("SIGKILL");
    spawnSync("bash", [
      "-c",
      `for i in $(seq 50); do kill -0 ${this.pid} 2>/dev/null || exit 0; sleep 0.1; done`,
    ]);
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}
