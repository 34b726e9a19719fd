// Bad-map cases: test/fixtures/bad-maps/*.case hold the maps they change (the rest is a small good
// baseline) and, after "== expected", the exact report the validator must print.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  MAP_NAMES,
  type MapTexts,
  MapValidationError,
  formatProblem,
  parseMaps,
} from "../../src/maps/relay-maps";
import { PROJECT_ROOT } from "../../src/project";

const CASE_DIR = path.join(PROJECT_ROOT, "test", "fixtures", "bad-maps");

export const BASELINE: MapTexts = {
  translate_domains: "@old.example @new.example\n",
  allowed_senders: "old.example OK\n",
  per_sender_relayhosts: "@new.example [new-example.mail.protection.outlook.com]\n",
  allow_relay_by_ip: "192.0.2.0/24 OK\n",
  tenant_pins: "old.example enforce dkim=old.example\n",
  calendar_addresses: "",
};

interface Case {
  name: string;
  maps: Record<string, string>;
  expected: string[];
}

export function readCase(file: string): Case {
  const sections: Record<string, string> = {};
  let current = "";
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const m = /^== (\S+)$/.exec(line);
    if (m) {
      current = m[1];
      sections[current] = "";
    } else if (current) sections[current] += `${line}\n`;
  }
  const { expected = "", ...maps } = sections;
  for (const k of Object.keys(maps)) maps[k] = maps[k].replace(/\n$/, "");
  return { name: path.basename(file, ".case"), maps, expected: expected.split("\n").filter(Boolean) };
}

export function listCases(): string[] {
  return fs
    .readdirSync(CASE_DIR)
    .filter((f) => f.endsWith(".case"))
    .sort()
    .map((f) => path.join(CASE_DIR, f));
}

/** The baseline maps with some of them replaced. */
export function withBaseline(texts: Partial<Record<string, string>>): MapTexts {
  return Object.fromEntries(MAP_NAMES.map((name) => [name, texts[name] ?? BASELINE[name]])) as MapTexts;
}

/** Runs the validator on a case; returns every line it reports (errors and warnings). */
export function report(c: Case): string[] {
  try {
    return parseMaps(withBaseline(c.maps)).warnings.map(formatProblem);
  } catch (e) {
    if (e instanceof MapValidationError) return e.problems.map(formatProblem);
    throw e;
  }
}
