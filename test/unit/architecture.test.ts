// The shape the code keeps: data flows one way, and nothing that runs in production leans on the
// local sandbox (only sandbox/, test/ and bench/ may import it).
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT as ROOT } from "../../src/project";

/** Every TypeScript file under DIR (relative to the project), node_modules aside. */
function tsFiles(dir: string): string[] {
  const abs = path.join(ROOT, dir);
  if (fs.statSync(abs).isFile()) return [dir];
  return fs
    .readdirSync(abs, { withFileTypes: true })
    .filter((e) => e.name !== "node_modules")
    .flatMap((e) =>
      e.isDirectory()
        ? tsFiles(path.join(dir, e.name))
        : e.name.endsWith(".ts")
          ? [path.join(dir, e.name)]
          : [],
    );
}

/** The project-relative modules FILE imports (relative specifiers only). */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), "utf8");
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^"']*?from\s+["'](\.[^"']+)["']/g)].map((m) =>
    path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), m[1])),
  );
}

describe("module boundaries", () => {
  const production = ["index.ts", "src", "scripts"].flatMap(tsFiles);

  it("finds the program's modules (the check below looks at something)", () => {
    expect(production).toContain("index.ts");
    expect(production.filter((f) => f.startsWith("src/")).length).toBeGreaterThan(10);
    expect(importsOf("index.ts").some((m) => m.startsWith("src"))).toBe(true);
  });

  it("no production module imports the sandbox", () => {
    const offending = production.flatMap((f) =>
      importsOf(f)
        .filter(
          (m) =>
            m === "sandbox" || m.startsWith("sandbox/") || m.startsWith("test/") || m.startsWith("bench/"),
        )
        .map((m) => `${f} imports ${m}`),
    );
    expect(offending).toEqual([]);
  });
});
