// The README is the operator's contract: every config key documented, the test command = CI.
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_KEYS, PROJECT, PROVIDER_KEYS, SECRET_KEYS } from "../src/config";
import { STEPS } from "../src/deploy";
import { PROJECT_ROOT as ROOT } from "../src/project";

const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");

describe("README", () => {
  it("documents every config key, and marks exactly the secrets as secret", () => {
    const rows = readme.split("\n").filter((l) => l.startsWith("| `"));
    const row = (key: string) => rows.find((r) => r.split("|")[1].includes(`\`${key}\``));
    for (const key of [
      ...CONFIG_KEYS.map((k) => `${PROJECT}:${k}`),
      ...SECRET_KEYS,
      ...PROVIDER_KEYS.required,
    ]) {
      expect(row(key), `README config table row for ${key}`).toBeTruthy();
      const secret =
        (SECRET_KEYS as readonly string[]).includes(key) ||
        (PROVIDER_KEYS.secret as readonly string[]).includes(key);
      expect(row(key)!.split("|")[2].includes("yes"), `${key} secret column`).toBe(secret);
    }
  });

  it("lists the deploy steps the program runs, in order, and counts them right everywhere", () => {
    const list = STEPS.map((id) => `\`${id}\``).join("\\s*→\\s*");
    expect(readme).toMatch(new RegExp(`deploy steps, in order: ${list}\\.`));
    const words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"];
    const counts = [...readme.matchAll(/\b(\d+|[a-z]+) remote commands\b/gi)]
      .map((m) => m[1].toLowerCase())
      .filter((c) => /^\d+$/.test(c) || words.includes(c));
    expect(counts.length, "the README says how many remote commands a node gets").toBeGreaterThan(0);
    for (const c of counts) expect([String(STEPS.length), words[STEPS.length]]).toContain(c);
  });

  it("names the one test command, and .ci/run runs exactly it", () => {
    const command = /## Tests[\s\S]*?```sh\n(.+)\n```/.exec(readme)?.[1];
    expect(command).toBe("bash scripts/install-deps.sh && npm ci && npm test");
    const ci = fs.readFileSync(path.join(ROOT, ".ci", "run"), "utf8");
    expect(ci.split("\n")).toContain(command);
  });
});
