// The README and docs/ are the operator's contract: every config key documented, the test command =
// CI, the README short and every document reachable from it, every link in them resolving.
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  CONFIG_DEFAULTS,
  CONFIG_KEYS,
  PROJECT,
  PROVIDER_KEYS,
  SCHEMA_REQUIRED,
  SECRET_KEYS,
  listStacks,
  loadStackConfig,
  needsDnsCredentials,
  readStackFile,
} from "../../src/config/stack-config";
import { exampleValues } from "../../src/config/examples";
import { STEPS } from "../../src/deploy/steps";
import { PROJECT_ROOT as ROOT } from "../../src/project";

const read = (file: string) => fs.readFileSync(path.join(ROOT, file), "utf8");
const readme = read("README.md");
const DOCS = fs
  .readdirSync(path.join(ROOT, "docs"))
  .filter((f) => f.endsWith(".md"))
  .map((f) => `docs/${f}`);
const configuration = read("docs/configuration.md");
const architecture = read("docs/architecture.md");
/** Everything a reader may land on: the README and every document under docs/. */
const everything = [readme, ...DOCS.map(read)].join("\n");

/** GitHub's anchor for a heading. */
const slug = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\- ]/g, "")
    .replace(/ /g, "-");

/** The headings of a Markdown file outside code blocks. */
function anchors(text: string): Set<string> {
  let fence = false;
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("```")) fence = !fence;
    const m = /^#{1,6} (.*)$/.exec(line);
    if (m && !fence) out.add(slug(m[1]));
  }
  return out;
}

describe("README and docs/", () => {
  it("the README is a front page of at most 250 lines that links every document under docs/", () => {
    expect(readme.split("\n").length).toBeLessThanOrEqual(250);
    expect(DOCS.length).toBeGreaterThan(5);
    for (const doc of DOCS) expect(readme, `README links ${doc}`).toContain(`](${doc})`);
  });

  it("every relative link resolves to a file, and every #anchor to a heading of its file", () => {
    const broken: string[] = [];
    for (const file of ["README.md", ...DOCS]) {
      for (const m of read(file).matchAll(/\]\((?!https?:|mailto:)([^)\s]*)\)/g)) {
        const [target, anchor] = m[1].split("#");
        const resolved = target
          ? path.posix.normalize(path.posix.join(path.posix.dirname(file), target))
          : file;
        if (!fs.existsSync(path.join(ROOT, resolved))) broken.push(`${file}: ${m[1]} (no ${resolved})`);
        else if (anchor && resolved.endsWith(".md") && !anchors(read(resolved)).has(anchor))
          broken.push(`${file}: ${m[1]} (no heading #${anchor} in ${resolved})`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('every "docs/<file>.md" that code, maps and stack files cite exists', () => {
    const cited = new Set<string>();
    for (const dir of ["src", "node", "maps", "sandbox", "scripts", "monitoring", "test", "bench"]) {
      const walk = (d: string): string[] =>
        fs
          .readdirSync(path.join(ROOT, d), { withFileTypes: true })
          .flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
      for (const f of walk(dir))
        for (const m of read(f).matchAll(/\bdocs\/([\w-]+\.md)/g)) cited.add(`docs/${m[1]}`);
    }
    expect(cited.size).toBeGreaterThan(5);
    for (const doc of cited) expect(DOCS, doc).toContain(doc);
  });
});

describe("docs/configuration.md", () => {
  it("gives each key the default the schema gives it (where it names a value, not a rule)", () => {
    const rows = configuration.split("\n").filter((l) => l.startsWith("| `"));
    const shown = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
    let compared = 0;
    for (const [key, value] of Object.entries(CONFIG_DEFAULTS)) {
      const row = rows.find((r) => r.split("|")[1].includes(`\`${PROJECT}:${key}\``));
      const cell = row?.split("|")[3].trim() ?? "";
      const literal = /^`([^`]*)`$/.exec(cell)?.[1];
      if (typeof value === "number" || typeof value === "boolean")
        expect(literal, `${key}: a number or boolean is shown as such`).toBeDefined();
      if (literal === undefined) continue;
      expect(literal, `docs/configuration.md default of ${PROJECT}:${key}`).toBe(shown(value));
      compared++;
    }
    expect(compared).toBeGreaterThan(20);
  });

  it("documents every config key, and marks exactly the secrets as secret", () => {
    const rows = configuration.split("\n").filter((l) => l.startsWith("| `"));
    const row = (key: string) => rows.find((r) => r.split("|")[1].includes(`\`${key}\``));
    for (const key of [
      ...CONFIG_KEYS.map((k) => `${PROJECT}:${k}`),
      ...SECRET_KEYS,
      ...PROVIDER_KEYS.required,
    ]) {
      expect(row(key), `docs/configuration.md table row for ${key}`).toBeTruthy();
      const secret =
        (SECRET_KEYS as readonly string[]).includes(key) ||
        (PROVIDER_KEYS.secret as readonly string[]).includes(key);
      expect(row(key)!.split("|")[2].includes("yes"), `${key} secret column`).toBe(secret);
    }
  });
});

describe("the deploy steps in the docs", () => {
  it("docs/architecture.md lists the deploy steps the program runs, in order, and every count is right", () => {
    const list = STEPS.map((id) => `\`${id}\``).join("\\s*→\\s*");
    expect(architecture).toMatch(new RegExp(`deploy steps, in order: ${list}\\.`));
    const words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"];
    const counts = [...everything.matchAll(/\b(\d+|[a-z]+) remote commands\b/gi)]
      .map((m) => m[1].toLowerCase())
      .filter((c) => /^\d+$/.test(c) || words.includes(c));
    expect(counts.length, "the docs say how many remote commands a node gets").toBeGreaterThan(0);
    for (const c of counts) expect([String(STEPS.length), words[STEPS.length]]).toContain(c);
  });
});

describe("README", () => {
  it("names the one test command, and .ci/run runs exactly it", () => {
    const command = /## Tests[\s\S]*?```sh\n(.+)\n```/.exec(readme)?.[1];
    expect(command).toBe("bash scripts/install-deps.sh && npm ci && npm test");
    const ci = fs.readFileSync(path.join(ROOT, ".ci", "run"), "utf8");
    expect(ci.split("\n")).toContain(command);
  });
});

describe('README "Running it", followed literally', () => {
  const block = /## Running it[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)![1];
  const lines = block.split("\n").filter((l) => !/^\s*#/.test(l));
  /** Keys each stack gets from the block's `pulumi config set` lines (inside the loop: every stack it names). */
  const setBy = (stack: string) => {
    const keys = new Map<string, { secret: boolean }>();
    let loop: string[] = [];
    for (const line of lines) {
      const head = /^for \w+ in ([\w ]+); do$/.exec(line.trim());
      if (head) loop = head[1].split(" ");
      if (line.trim() === "done") loop = [];
      const m = /pulumi config set (.*)$/.exec(line);
      if (!m) continue;
      const words = m[1].split(/\s+/);
      const target = words.includes("-s") ? words[words.indexOf("-s") + 1] : undefined;
      const stacks = target === "$s" ? loop : target ? [target] : [];
      if (!stacks.includes(stack)) continue;
      const key = words
        .filter((w, i) => !w.startsWith("-") && words[i - 1] !== "-s")[0]
        .replace(/^'|'$/g, "");
      keys.set(key.split(/[.[]/)[0], { secret: words.includes("--secret") });
    }
    return keys;
  };

  it("logs in, and sets every required key of both stacks (or the stack file does), secrets as secrets", () => {
    expect(lines.some((l) => /^pulumi login\b/.test(l))).toBe(true);
    const required = [
      ...(SCHEMA_REQUIRED as readonly string[]).map((k) => `${PROJECT}:${k}`),
      `${PROJECT}:deploySshPrivateKey`,
      ...PROVIDER_KEYS.required,
    ];
    for (const stack of listStacks()) {
      const set = setBy(stack);
      const { all } = readStackFile(ROOT, stack);
      for (const key of required)
        expect(
          set.has(key) || key in all,
          `${key} for stack ${stack}: not in Pulumi.${stack}.yaml nor set by the README`,
        ).toBe(true);
      // And the OVH API key where the stack file's certificates need it.
      if (needsDnsCredentials(loadStackConfig(stack)))
        expect(
          set.get(`${PROJECT}:acmeDnsOvhCredentials`)?.secret,
          `acmeDnsOvhCredentials for ${stack}`,
        ).toBe(true);
      const secrets = [...SECRET_KEYS, ...PROVIDER_KEYS.secret] as string[];
      for (const [key, { secret }] of set)
        expect(secret, `${key} is set with --secret`).toBe(secrets.includes(key));
    }
  });

  it("replaces every example value of both stack files (the rest is edited in the file, as it says)", () => {
    // The comment lines right above `$EDITOR Pulumi.lon.yaml Pulumi.bhs.yaml` name what to edit there.
    const editorAt = /^\$EDITOR Pulumi\.lon\.yaml Pulumi\.bhs\.yaml$/m.exec(block)!.index;
    const above = block.slice(0, editorAt).split("\n").slice(0, -1).reverse();
    const editNote = above
      .slice(
        0,
        above.findIndex((l) => !l.startsWith("#")),
      )
      .join(" ");
    for (const stack of listStacks()) {
      const set = setBy(stack);
      const { all } = readStackFile(ROOT, stack);
      for (const found of exampleValues(all)) {
        const key = found.split(" ")[0];
        const edited = key in all && editNote.includes(`${key}:`);
        expect(set.has(key) || edited, `README sets ${key} for ${stack}, or says to edit it`).toBe(true);
      }
    }
  });
});

describe("docs/performance.md figures", () => {
  const results = fs.readFileSync(path.join(ROOT, "bench", "RESULTS.md"), "utf8");
  const performance = read("docs/performance.md");
  it("quote bench/RESULTS.md: the throughput ratio, the latency percentiles and the deploy time", () => {
    const ratio = /ratio header-rewrite \/ stock: (\d\.\d\d)/.exec(results)?.[1];
    expect(ratio, "bench/RESULTS.md keeps its ratio line").toBeDefined();
    expect(performance).toContain(`**ratio ${ratio}**`);
    const latency = /header-rewrite (p50 \d+ ms, p99 \d+ ms); stock (p50 \d+ ms, p99 \d+ ms)/.exec(results);
    expect(latency, "bench/RESULTS.md has the latency line").not.toBeNull();
    expect(performance).toContain(latency![1]);
    expect(performance).toContain(latency![2]);
    const deploy = /one-line map change live .*: (median \d+\.\d+ s)/.exec(results)?.[1];
    expect(deploy, "bench/RESULTS.md keeps its deploy line").toBeDefined();
    expect(performance).toContain(deploy);
  });
});
