// maps/ is a validated source of truth: every bad input gets its exact file:line message, nothing
// else crashes, and well-formed maps survive parse -> render -> parse unchanged.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  MAP_NAMES,
  MapValidationError,
  type RelayMaps,
  parseMaps,
  readMapTexts,
} from "../../src/maps/relay-maps";
import { calendarPolicy } from "../../src/maps/calendar-addresses";
import { checkPinSecret } from "../../src/maps/tenant-pins";
import { copyProject } from "../helpers/pulumi-mocks";
import { PROJECT_ROOT as ROOT } from "../../src/project";
import { renderOperatorMaps } from "../../src/render/node-render";
import { BASELINE, listCases, readCase, report, withBaseline } from "../helpers/cases";

describe("bad maps corpus (test/fixtures/bad-maps)", () => {
  const cases = listCases();
  it("has at least 40 bad inputs", () => expect(cases.length).toBeGreaterThanOrEqual(40));
  for (const file of cases) {
    const c = readCase(file);
    it(c.name, () => {
      expect(c.expected.length, "the case states its expected report").toBeGreaterThan(0);
      expect(report(c)).toEqual(c.expected);
    });
  }
});

describe("npm run validate", () => {
  const cli = (args: string[], cwd = ROOT, script = path.join(ROOT, "scripts", "validate.ts")) =>
    spawnSync(path.join(ROOT, "node_modules", ".bin", "tsx"), [script, ...args], { cwd, encoding: "utf8" });
  const dirWith = (texts: Record<string, string>) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-maps-"));
    for (const n of MAP_NAMES) fs.writeFileSync(path.join(dir, n), texts[n] ?? BASELINE[n]);
    return dir;
  };
  it("passes the committed maps (exit 0)", () => {
    const r = cli([]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("maps/ is valid for stacks bhs, lon");
    // The committed stack files are examples: validate says so, preview refuses them.
    expect(r.stdout).toContain(
      "Pulumi.lon.yaml: warning: example values that pulumi preview refuses until you replace them: openstack:tenantId,",
    );
  });
  it("prints every problem at once in compiler style, naming the directory it was given, and exits 1", () => {
    const dir = dirWith(readCase(listCases().find((f) => f.includes("47-several"))!).maps);
    const r = cli(["--maps", path.basename(dir)], path.dirname(dir));
    expect(r.status).toBe(1);
    const name = path.basename(dir);
    const lines = r.stdout.split("\n").filter((l) => l.startsWith(`${name}/`));
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).toMatch(/^hr-maps-\w+\/[a-z_]+:\d+:\d+: error: .+ \(hint: .+\)$/);
    expect(r.stdout).not.toMatch(/^maps\//m);
    expect(r.stdout).toContain(
      `3 error(s), 0 warning(s) in ${["allow_relay_by_ip", "allowed_senders", "translate_domains"]
        .map((m) => `${name}/${m}`)
        .join(", ")}; nothing may be deployed`,
    );
  });
  it("shows warnings without failing, and --strict makes them fatal", () => {
    const dir = dirWith({ per_sender_relayhosts: "@new.example new-example.mail.protection.outlook.com\n" });
    const lax = cli(["--maps", dir]);
    expect(lax.status).toBe(0);
    expect(lax.stdout).toContain(`${dir}/per_sender_relayhosts:1:14: warning: `);
    // and one per committed stack file for its example values
    expect(lax.stdout).toContain(`${dir}/ is valid for stacks bhs, lon (3 warning(s))`);
    const strict = cli(["--maps", dir, "--strict"]);
    expect(strict.status).toBe(1);
    expect(strict.stdout).toContain(`${dir}/per_sender_relayhosts:1:14: error: `);
  });
  it("accepts maps/ without calendar_addresses (added later): every domain's meeting addresses are rewritten", () => {
    const dir = dirWith({});
    fs.rmSync(path.join(dir, "calendar_addresses"));
    const r = cli(["--maps", dir]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toContain("calendar_addresses");
    const maps = parseMaps(readMapTexts(dir));
    expect(JSON.parse(calendarPolicy(maps.translations, maps.calendar))).toEqual({
      translations: { "@old.example": "@new.example" },
      keep: [],
    });
    const missing = dirWith({});
    fs.rmSync(path.join(missing, "tenant_pins"));
    expect(cli(["--maps", missing]).stdout).toContain(
      `${missing}/tenant_pins:1:1: error: map file is missing`,
    );
  });
  it("summarises a stack file error by the stack file, not as a maps problem", () => {
    const copy = copyProject();
    fs.appendFileSync(path.join(copy, "Pulumi.lon.yaml"), "  header-rewrite:messageSizeLimt: 1048576\n");
    const r = cli([], copy, path.join(copy, "scripts", "validate.ts"));
    expect(r.status).toBe(1);
    expect(r.stdout).toContain("Pulumi.lon.yaml: invalid stack configuration; nothing was deployed:");
    // (bhs still has its example values: one warning)
    expect(r.stdout).toContain("1 error(s), 1 warning(s) in Pulumi.lon.yaml; nothing may be deployed");
    fs.rmSync(copy, { recursive: true, force: true });
  });
});

// Generators for well-formed maps: old domains rewrite to new domains (no chains), per-address
// overrides and exceptions, each new domain with its own tenant, a few client ranges.
const label = fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/);
const local = fc.stringMatching(/^[a-z][a-z0-9._-]{0,8}[a-z0-9]$/).filter((s) => !/\.\./.test(s));
const wellFormed = fc
  .record({
    old: fc.uniqueArray(label, { minLength: 1, maxLength: 5 }),
    fresh: fc.uniqueArray(label, { minLength: 1, maxLength: 3 }),
    overrides: fc.array(fc.tuple(local, local, fc.nat(), fc.nat(), fc.boolean()), { maxLength: 6 }),
    ranges: fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 16, max: 32 })), {
      minLength: 1,
      maxLength: 4,
      selector: (t) => t[0],
    }),
    spacing: fc.constantFrom(" ", "\t", "   "),
    pinStyle: fc.array(
      fc.constantFrom(
        "enforce",
        "monitor",
        "",
        "keep-signatures",
        "max-age=3d",
        "originator-org=old.example",
      ),
      { maxLength: 3 },
    ),
  })
  .map(({ old, fresh, overrides, ranges, spacing, pinStyle }) => {
    const oldD = old.map((l) => `${l}.old.example`);
    const newD = fresh.map((l) => `${l}.new.example`);
    const t: string[] = oldD.map((d, i) => `@${d}${spacing}@${newD[i % newD.length]}`);
    const seen = new Set<string>();
    const relay = newD.map((d) => `@${d} [${d.split(".")[0]}-tenant.mail.protection.outlook.com]`);
    for (const [a, b, i, j, exception] of overrides) {
      const from = `${a}@${oldD[i % oldD.length]}`;
      if (seen.has(from)) continue;
      seen.add(from);
      if (exception) {
        t.push(`${from} ${from}`);
        relay.push(`${from} [${newD[0].split(".")[0]}-tenant.mail.protection.outlook.com]`);
      } else t.push(`${from}${spacing}${b}@${newD[j % newD.length]}`);
    }
    const net = (octet: number, bits: number) =>
      `198.51.${octet}.0/24`
        .replace("/24", `/${Math.max(24, bits)}`)
        .replace(/\.0\/(\d+)$/, (_, p) => `.0/${p}`);
    return {
      translate_domains: `# generated\n${t.join("\n")}\n`,
      allowed_senders: oldD.map((d) => `${d} OK`).join("\n") + "\n",
      per_sender_relayhosts: relay.join("\n") + "\n",
      allow_relay_by_ip: ranges.map(([o, b]) => `${net(o, b)} OK`).join("\n") + "\n",
      // Every old domain pinned; a second mode word would be an error, so keep only the first.
      tenant_pins:
        oldD
          .map((d, i) => {
            const words = pinStyle
              .filter(Boolean)
              .filter(
                (w, k, a) =>
                  !/^(enforce|monitor)$/.test(w) || a.findIndex((x) => /^(enforce|monitor)$/.test(x)) === k,
              );
            return `${d}${spacing}${[...new Set(words)].join(" ")} dkim=${d},tenant${i}.onmicrosoft.com`;
          })
          .join("\n") + "\n",
    };
  });

const strip = (m: RelayMaps) => ({
  translations: m.translations.map(({ kind, from, to }) => ({ kind, from, to })),
  allowedSenders: m.allowedSenders.map(({ key, action }) => ({ key, action })),
  relayhosts: m.relayhosts.map(({ key, nexthop }) => ({ key, nexthop })),
  clientRanges: m.clientRanges.map(({ cidr, action }) => ({ cidr, action })),
  tenants: m.tenants,
  pins: m.pins.map(({ file: _f, line: _l, ...pin }) => pin),
});

describe("property-based", () => {
  it("well-formed maps round-trip through parse -> render -> parse", () => {
    fc.assert(
      fc.property(wellFormed, (texts) => {
        const first = parseMaps(withBaseline(texts));
        const again = parseMaps(withBaseline(renderOperatorMaps(first)));
        expect(strip(again)).toEqual(strip(first));
      }),
      { numRuns: 300 },
    );
  });

  it("random bytes in any map never crash the parser with anything but a validation error", () => {
    const kinds = MAP_NAMES;
    fc.assert(
      fc.property(
        fc.constantFrom(...kinds),
        fc.uint8Array({ maxLength: 400 }),
        fc.boolean(),
        (name, bytes, asLatin1) => {
          const text = Buffer.from(bytes).toString(asLatin1 ? "latin1" : "utf8");
          try {
            parseMaps(withBaseline({ [name]: text }));
          } catch (e) {
            if (!(e instanceof MapValidationError)) throw e;
            for (const p of e.problems) expect(p.line).toBeGreaterThanOrEqual(1);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("random map-like lines (keys, @, brackets, CIDRs) never crash either", () => {
    const token = fc.constantFrom(
      "@",
      "old.example",
      "@old.example",
      "[",
      "]",
      ":",
      "25",
      "/",
      "0.0.0.0/0",
      "::/0",
      "192.0.2.0/24",
      "OK",
      "<>",
      "REJECT",
      " ",
      "\t",
      "\n",
      "#",
      "a",
      "-",
      ".",
      '"',
      "!",
      "ceo@old.example",
      "[x.example]",
      "2001:db8::/32",
    );
    fc.assert(
      fc.property(fc.constantFrom(...MAP_NAMES), fc.array(token, { maxLength: 60 }), (name, parts) => {
        try {
          parseMaps(withBaseline({ [name]: parts.join("") }));
        } catch (e) {
          if (!(e instanceof MapValidationError)) throw e;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("tenant pins and header-rewrite:pinSecret", () => {
  const withSecretHeader = parseMaps(
    withBaseline({ tenant_pins: "old.example enforce dkim=old.example secret-header=X-Tenant-A-Token\n" }),
  ).pins;
  it("a secret-header pin without the secret fails, naming the map line and the command that fixes it", () => {
    expect(() => checkPinSecret(undefined, withSecretHeader)).toThrow(
      /^maps\/tenant_pins:1: secret-header=X-Tenant-A-Token needs the secret header-rewrite:pinSecret, .*pulumi config set --secret header-rewrite:pinSecret/,
    );
  });
  it("a secret that a header cannot carry, or that is short enough to guess, is refused", () => {
    for (const bad of ["short", "has spaces in it but is long enough", "x".repeat(201)]) {
      expect(() => checkPinSecret(bad, withSecretHeader), bad).toThrow(/must be 24 to 200 characters/);
    }
    expect(() => checkPinSecret("Zq8xR2vLw5NcT7yH3kPbAa1+/=", withSecretHeader)).not.toThrow();
  });
  it("without a secret-header pin the secret is optional", () => {
    expect(() => checkPinSecret(undefined, parseMaps(withBaseline({})).pins)).not.toThrow();
  });
  it("the committed maps pin every allowed sender domain in enforce mode", () => {
    const maps = parseMaps(readMapTexts(path.join(ROOT, "maps")));
    const domains = maps.allowedSenders.filter((s) => s.action === "OK").map((s) => s.key);
    for (const d of domains) expect(maps.pins.find((p) => p.key === d)?.mode, d).toBe("enforce");
  });
});
