// Shell text building blocks shared by the deploy scripts and everything that drives a node.

/** Quotes one word for bash, whatever it contains. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const EOF_MARK = "HEADER_REWRITE_EOF";

/** A quoted here-document feeding CONTENT to COMMAND; it stays readable in `pulumi preview` diffs. */
export function heredoc(command: string, content: string): string {
  if (content.split("\n").includes(EOF_MARK)) {
    throw new Error(`${command}: a line equal to ${EOF_MARK} cannot be embedded`);
  }
  const body = content.endsWith("\n") ? content : content + "\n";
  return `${command} <<'${EOF_MARK}'\n${body}${EOF_MARK}\n`;
}

/** Writes CONTENT to TARGET (a shell word, quoted by the caller) through a here-document. */
export function writeFile(target: string, content: string): string {
  return heredoc(`cat > ${target}`, content);
}
