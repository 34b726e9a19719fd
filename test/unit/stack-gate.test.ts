// Stack bhs rolls out after lon (Pulumi.bhs.yaml, rolloutAfter): while lon has not run this release,
// bhs's Postfix steps refuse before anything on a node changes, and `pulumi preview` says so.
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type StackRun, runStack } from "../helpers/pulumi-mocks";
import { loadMaps } from "../../src/maps/relay-maps";
import { PROJECT_ROOT } from "../../src/project";
import { FORCE_RELEASE_ENV, releaseId } from "../../src/deploy/region-gate";
import { sh } from "../../sandbox/shell";

describe("stack bhs while lon still runs an older release", () => {
  let run: StackRun;
  const release = releaseId(loadMaps(path.join(PROJECT_ROOT, "maps")));
  beforeAll(async () => {
    delete process.env[FORCE_RELEASE_ENV];
    run = await runStack("bhs", {
      stackOutputs: { "organization/header-rewrite/lon": { release: "0123456789abcdef" } },
    });
  }, 60_000);

  it("bhs1's Postfix step refuses at its first line and names the way forward", () => {
    const postfix = run.one("command:remote:Command", "bhs1-postfix");
    const script = postfix.inputs.stdin as string;
    const [shebang, refusal] = script.split("\n");
    expect(shebang).toBe("#!/bin/bash");
    expect(refusal).toContain(`REFUSED: release ${release} has not run in stack lon`);
    expect(refusal).toContain("it last completed release 0123456789abcdef");
    expect(refusal).toContain(`pulumi up -s lon`);
    expect(refusal).toContain(`${FORCE_RELEASE_ENV}=${release}`);
    // The change under review stays visible in `pulumi preview`.
    expect(script).toContain("myhostname = bhs1.example.net");
    // Run as the node would run it: it stops before touching anything.
    const r = sh("bash -s", script.replace(/^set -euo pipefail$/m, "touch /nonexistent/should-not-run"));
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(refusal.replace(/^echo '(.*)' >&2; exit 1$/, "$1"));
  });

  it("the steps before Postfix still run (they change no mail path)", () => {
    for (const id of ["cloud-init", "pin-secret"]) {
      const stdin = run.one("command:remote:Command", `bhs1-${id}`).inputs.stdin;
      expect(JSON.stringify(stdin)).not.toContain("REFUSED");
    }
  });
});
