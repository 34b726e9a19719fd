// Postfix table syntax shared by every map under maps/: logical lines, problems in the compiler
// style file:line:col, and the report that collects them.

/** Where a value came from, for messages in the compiler style `file:line:col`. */
export interface Origin {
  file: string;
  line: number;
}

/** One logical line of a Postfix table: key, value, and where they stand. */
export interface MapLine extends Origin {
  key: string;
  value: string;
  valueCol: number;
}

export interface Problem extends Origin {
  col: number;
  severity: "error" | "warning";
  message: string;
  hint: string;
}

export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}:${p.col}: ${p.severity}: ${p.message} (hint: ${p.hint})`;
}

export class MapValidationError extends Error {
  constructor(readonly problems: Problem[]) {
    const errors = problems.filter((p) => p.severity === "error").length;
    super(`maps/ has ${errors} error(s); nothing was deployed:\n` + problems.map(formatProblem).join("\n"));
    this.name = "MapValidationError";
  }
}

export class Report {
  readonly problems: Problem[] = [];
  error(o: Origin, col: number, message: string, hint: string): void {
    this.problems.push({ file: o.file, line: o.line, col, severity: "error", message, hint });
  }
  warn(o: Origin, col: number, message: string, hint: string): void {
    this.problems.push({ file: o.file, line: o.line, col, severity: "warning", message, hint });
  }
  get errors(): number {
    return this.problems.filter((p) => p.severity === "error").length;
  }
}

/**
 * Splits a Postfix table into logical lines the way Postfix reads them: `#` starts a comment only as
 * the first non-blank character, blank lines are ignored, a line starting with whitespace continues
 * the previous logical line.
 */
export function logicalLines(text: string, file: string, report: Report): MapLine[] {
  const out: MapLine[] = [];
  let current: { start: number; text: string } | undefined;
  const flush = () => {
    if (!current) return;
    const m = /^(\S+)(\s+)?([\s\S]*)$/.exec(current.text.trimEnd())!;
    out.push({
      file,
      line: current.start,
      key: m[1],
      value: m[3].replace(/\s+/g, " ").trim(),
      valueCol: m[1].length + (m[2]?.length ?? 0) + 1,
    });
    current = undefined;
  };
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    if (/^\s*(#|$)/.test(line)) return; // comment or blank: does not end a logical line in Postfix either
    if (/^\s/.test(line)) {
      if (!current) {
        report.error(
          { file, line: i + 1 },
          1,
          "continuation line (starts with whitespace) without a preceding entry",
          "remove the leading whitespace or join it to the entry above",
        );
      } else {
        current.text += " " + line.trim();
      }
      return;
    }
    flush();
    current = { start: i + 1, text: line };
  });
  flush();
  return out;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export function isDomain(d: string): boolean {
  if (d.length > 253 || !d.includes(".")) return false;
  const labels = d.split(".");
  return labels.every((l) => LABEL.test(l)) && !/^\d+$/.test(labels[labels.length - 1]);
}

/** Reports repeated keys (after NORMALISE) and returns the lines to drop. */
export function duplicates(
  lines: MapLine[],
  normalise: (k: string) => string,
  r: Report,
  why: string,
): Set<MapLine> {
  const seen = new Map<string, MapLine>();
  const dropped = new Set<MapLine>();
  for (const l of lines) {
    const k = normalise(l.key);
    const first = seen.get(k);
    if (first) {
      const variant = first.key !== l.key ? ` (same ${why} as "${first.key}")` : "";
      r.error(
        l,
        1,
        `duplicate key "${l.key}"${variant}, first on line ${first.line}`,
        "keep one line per key",
      );
      dropped.add(l);
    } else seen.set(k, l);
  }
  return dropped;
}
