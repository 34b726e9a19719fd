// maps/calendar_addresses: what the relay does with meeting messages' calendar addresses, per
// sender domain as tenant A sends it. Postfix rewrites header fields only; the pinning milter gives
// the calendar part's ORGANIZER/ATTENDEE addresses the same translation (docs/relay.md, "Meeting invitations").
import { type MapLine, type Origin, type Report, extraWords, isDomain } from "./postfix-table";

export type CalendarMode = "rewrite" | "keep";

export interface CalendarRule extends Origin {
  /** A domain as tenant A sends it (the left side of translate_domains), lower case. */
  domain: string;
  mode: CalendarMode;
}

const MODES = new Set<CalendarMode>(["rewrite", "keep"]);
const HINT = 'write e.g. "legacy.example keep" (or "rewrite", the default)';

export function parseCalendarRules(lines: MapLine[], r: Report): CalendarRule[] {
  const out: CalendarRule[] = [];
  for (const l of lines) {
    const key = l.key.toLowerCase();
    if (!isDomain(key)) {
      const fix =
        key.startsWith("@") && isDomain(key.slice(1)) ? `write "${key.slice(1)}" without the @` : HINT;
      r.error(l, 1, `key "${l.key}" is not a sender domain`, fix);
      continue;
    }
    const mode = (l.words[0]?.text ?? "").toLowerCase();
    if (!MODES.has(mode as CalendarMode)) {
      r.error(
        l,
        l.valueCol,
        mode ? `"${l.words[0].text}" is not a calendar mode` : `"${l.key}" has no mode`,
        "write rewrite (ORGANIZER/ATTENDEE get the same translation as From) or keep (left as sent)",
      );
      continue;
    }
    if (
      extraWords(
        l,
        1,
        r,
        "a line has one mode",
        "one domain per line; a comment must start its own line with #",
      )
    )
      continue;
    out.push({ file: l.file, line: l.line, domain: key, mode: mode as CalendarMode });
  }
  return out;
}

/**
 * What the milter reads: every translation (canonical(5) keys and results, as Postfix has them) and
 * the domains whose calendar addresses stay as sent.
 */
export function calendarPolicy(translations: { from: string; to: string }[], rules: CalendarRule[]): string {
  const policy = {
    translations: Object.fromEntries(translations.map((t) => [t.from, t.to])),
    keep: rules.filter((c) => c.mode === "keep").map((c) => c.domain),
  };
  return JSON.stringify(policy, null, 2) + "\n";
}
