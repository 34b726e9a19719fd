// The alert rules against series shaped like each fault (monitoring/header-rewrite.rules.test.yml):
// Prometheus's own rule evaluator (promtool test rules) decides when each alert fires and what it says.
import * as path from "node:path";
import { expect, it } from "vitest";
import { sh } from "../../sandbox/shell";

const MONITORING = path.join(__dirname, "..", "..", "monitoring");

it("promtool fires each fault's alert at the right minute with its text, and none while healthy", () => {
  const r = sh(`cd ${MONITORING} && promtool test rules header-rewrite.rules.test.yml`);
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain("SUCCESS");
});
