// What a node runs in Python, tested in Python: node/tests/ under Debian's python3-pytest (the
// milter's verdict decide() on signed messages, its Date window and its clock, without a Postfix).
// Leaves no bytecode or cache behind.
import * as path from "node:path";
import { expect, it } from "vitest";
import { sh } from "../../sandbox/shell";
import { PROJECT_ROOT } from "../../src/project";

it("node/tests pass under Debian's pytest", () => {
  const r = sh(
    `cd ${path.join(PROJECT_ROOT, "node")} && PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests`,
  );
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/\b\d+ passed\b/);
  console.log(r.stdout.trim().split("\n").pop());
});
