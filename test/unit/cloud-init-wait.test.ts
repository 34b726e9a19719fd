// The cloud-init wait step's own logic, run by bash against a stand-in `cloud-init` on PATH that
// takes a few seconds and ends with a chosen exit code: a long first boot must keep the SSH session
// talking (NAT and firewall idle timeouts), and cloud-init's verdict must decide the step.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { afterAll, expect, it } from "vitest";
import { loadStackConfig, nodeIdentity } from "../../src/config/stack-config";
import { deploySteps } from "../../src/deploy/steps";
import { loadMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { renderNode } from "../../src/render/node-render";
import { PLACEHOLDER_SECRETS } from "../../src/review/offline-review";

const cfg = loadStackConfig("lon");
const bundle = renderNode({ stack: "lon", cfg, maps: loadMaps(MAPS_DIR), node: nodeIdentity(cfg, "lon1") });
// The OVH API key the committed stack's tenant certificates need (another step's): render's stand-in.
const dnsCredentials = PLACEHOLDER_SECRETS.dnsCredentials;
const script = deploySteps(cfg, bundle, { dnsCredentials }).find((s) => s.id === "cloud-init")!.script;

const bin = fs.mkdtempSync(path.join(os.tmpdir(), "hr-cloud-init-"));
afterAll(() => fs.rmSync(bin, { recursive: true, force: true }));
fs.writeFileSync(
  path.join(bin, "cloud-init"),
  `#!/bin/bash
case "$*" in
  "status --wait") sleep "$FAKE_SECONDS"; exit "$FAKE_RC" ;;
  "status --long") echo "status: error"; echo "errors: package install failed" ;;
  "status") echo "status: running" ;;
esac
`,
  { mode: 0o755 },
);

function run(seconds: number, rc: number) {
  const r = spawnSync("bash", ["-s"], {
    input: script,
    encoding: "utf8",
    env: {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
      HEARTBEAT: "1",
      FAKE_SECONDS: String(seconds),
      FAKE_RC: String(rc),
    },
    timeout: 30_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

it("prints progress while cloud-init runs, then succeeds (exit 0 and exit 2 = recoverable)", () => {
  for (const rc of [0, 2]) {
    const r = run(4, rc);
    const progress = r.stdout
      .split("\n")
      .filter((l) => /^cloud-init still running after \d+ s: status: running/.test(l));
    console.log(
      `cloud-init exit ${rc}: ${progress.length} progress lines, then "${r.stdout.trim().split("\n").pop()}"`,
    );
    expect(progress.length, r.stdout).toBeGreaterThanOrEqual(2);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cloud-init finished\n$/);
  }
});

it("fails the step with cloud-init's own long status when first boot failed", () => {
  const r = run(1, 1);
  expect(r.status).toBe(1);
  expect(r.stderr).toContain("cloud-init failed (exit 1):");
  expect(r.stderr).toContain("errors: package install failed");
});
