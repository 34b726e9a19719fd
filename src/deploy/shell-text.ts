// Shell text building blocks: how the deploy carries facts and file contents to the scripts under
// node/ that a node runs. No logic lives here, only quoting.

/** Quotes one word for bash, whatever it contains. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const EOF_MARK = "HEADER_REWRITE_EOF";

/**
 * A quoted here-document feeding CONTENT to COMMAND (THEN follows the command on its line, e.g.
 * "|| return 1"); it stays readable in `pulumi preview` diffs.
 */
export function heredoc(command: string, content: string, then = ""): string {
  if (content.split("\n").includes(EOF_MARK)) {
    throw new Error(`${command}: a line equal to ${EOF_MARK} cannot be embedded`);
  }
  const body = content.endsWith("\n") ? content : content + "\n";
  return `${command} <<'${EOF_MARK}'${then ? ` ${then}` : ""}\n${body}${EOF_MARK}\n`;
}

/** A value a node script reads: a word, or an array of words. */
export type Fact = string | number | readonly string[];

/** Shell assignments of FACTS, one per line: NAME='value' or NAME=('a' 'b'). */
export function shellFacts(facts: Record<string, Fact>): string {
  return Object.entries(facts)
    .map(([name, v]) =>
      typeof v === "object" ? `${name}=(${v.map(shellQuote).join(" ")})` : `${name}=${shellQuote(String(v))}`,
    )
    .map((l) => `${l}\n`)
    .join("");
}

/** A shell function NAME whose body is LINES (here-documents included), for a node script to call. */
export function shellFunction(name: string, body: string): string {
  return `${name}() {\n${body || ":\n"}}\n`;
}
