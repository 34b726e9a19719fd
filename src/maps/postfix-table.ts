// Postfix table syntax shared by every map under maps/: logical lines, problems in the compiler
// style file:line:col, and the report that collects them.

/** Where a value came from, for messages in the compiler style `file:line:col`. */
export interface Origin {
  file: string;
  line: number;
}

/** A word of a table line and where it stands (a continuation puts words on later lines). */
export interface Word extends Origin {
  text: string;
  col: number;
}

/** One logical line of a Postfix table: key, value, and where they stand. */
export interface MapLine extends Origin {
  key: string;
  value: string;
  valueCol: number;
  /** The value's words, each with its own line and column. */
  words: Word[];
  /** A comment line stood between the entry and a continuation of it. */
  commentInside?: number;
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
  /** An error at a word, which may stand on a continuation line. */
  errorAt(w: Word, message: string, hint: string): void {
    this.error(w, w.col, message, hint);
  }
  get errors(): number {
    return this.problems.filter((p) => p.severity === "error").length;
  }
}

// Postfix's ISSPACE: ASCII white space only; anything else (a no-break space) is part of a word.
const SPACE = /[ \t\v\f\r]/;
const WORD = /[^ \t\v\f\r]+/g;
const BOM = "\ufeff";

/**
 * Splits a Postfix table into logical lines the way Postfix reads them (readlline(3)): `#` starts a
 * comment only as the first non-blank character, blank and comment lines are skipped, and a line
 * starting with white space continues the previous logical line, even across a comment line.
 */
export function logicalLines(text: string, file: string, report: Report): MapLine[] {
  const out: MapLine[] = [];
  let current: { start: number; words: Word[]; commentInside?: number } | undefined;
  let lastComment: number | undefined;
  const flush = () => {
    if (!current) return;
    const [key, ...words] = current.words;
    out.push({
      file,
      line: current.start,
      key: key.text,
      value: words.map((w) => w.text).join(" "),
      valueCol: words[0]?.line === current.start ? words[0].col : key.col + key.text.length,
      words,
      ...(current.commentInside ? { commentInside: current.commentInside } : {}),
    });
    current = undefined;
  };
  if (text.startsWith(BOM)) {
    report.error(
      { file, line: 1 },
      1,
      "the file starts with a UTF-8 byte order mark, which Postfix reads as part of the first key (it never matches)",
      `save ${file} as UTF-8 without a BOM, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' ${file}`,
    );
    text = text.slice(BOM.length);
  }
  text.split("\n").forEach((line, i) => {
    const words = [...line.matchAll(WORD)].map((m) => ({ file, line: i + 1, text: m[0], col: m.index! + 1 }));
    if (words.length === 0) return; // blank: does not end a logical line in Postfix either
    if (words[0].text.startsWith("#")) {
      if (current) lastComment = i + 1;
      return;
    }
    if (SPACE.test(line[0])) {
      if (!current) {
        report.error(
          { file, line: i + 1 },
          1,
          "continuation line (starts with whitespace) without a preceding entry",
          "remove the leading whitespace or join it to the entry above",
        );
      } else {
        if (lastComment && !current.commentInside) current.commentInside = lastComment;
        current.words.push(...words);
      }
      return;
    }
    flush();
    lastComment = undefined;
    current = { start: i + 1, words };
  });
  flush();
  return out;
}

/** The text from word FROM on, as written (words joined by one space). */
function wordsFrom(l: MapLine, from: number): string {
  return l.words
    .slice(from)
    .map((w) => w.text)
    .join(" ");
}

/**
 * Reports the words from index FROM on, which Postfix does not read the way they look: a `#` that is
 * not at the start of a line, or an indented line that Postfix joins to the entry above it.
 * WHAT says what Postfix does with the extra text. Returns false when there is none.
 */
export function extraWords(l: MapLine, from: number, r: Report, what: string, fix: string): boolean {
  const w = l.words[from];
  if (!w) return false;
  const text = wordsFrom(l, from);
  if (w.line !== l.line) {
    const comment = l.commentInside ? `; the comment on line ${l.commentInside} does not end an entry` : "";
    r.errorAt(
      w,
      `"${text}" continues the entry "${l.key}" of line ${l.line}, ` +
        `because line ${w.line} starts with white space${comment}; ${what}`,
      `remove the leading white space on line ${w.line} to make it an entry of its own`,
    );
  } else {
    const before = [l.key, ...l.words.slice(0, from).map((x) => x.text)].join(" ");
    r.errorAt(w, `"${text}" after "${before}": ${what}`, fix);
  }
  return true;
}

/** Reports a `#` inside an entry: Postfix reads it as part of the value, never as a comment. */
export function midLineComment(l: MapLine, r: Report): boolean {
  const i = l.words.findIndex((w) => w.text.startsWith("#"));
  if (i < 0) return false;
  r.errorAt(
    l.words[i],
    `"${wordsFrom(l, i)}" is not a comment: Postfix reads # as a comment only at the start of a line, ` +
      `so this text is part of the value of "${l.key}"`,
    "put the comment on a line of its own, starting with #",
  );
  return true;
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
