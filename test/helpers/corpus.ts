// The corpus of realistic mail (test/fixtures/mail) and its golden expectations (test/golden/mail):
// shared by the one-node test (test/node/postfix-corpus.test.ts) and the sandbox (both nodes to the sink),
// so the same file says what tenant B receives wherever the message went through.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { expect } from "vitest";
import { PROJECT_ROOT } from "../../src/project";
import { rfc5322Date } from "../../sandbox/mail";

export const CORPUS = path.join(PROJECT_ROOT, "test", "fixtures", "mail");
const GOLDEN = path.join(PROJECT_ROOT, "test", "golden", "mail");
const SUMMARY = path.join(PROJECT_ROOT, "sandbox", "mime-summary.py");

/** The fields Postfix rewrites with sender_canonical_classes = header_sender (header_opts.c). */
export const SENDER_CLASS = new Set(
  [
    "From",
    "Sender",
    "Reply-To",
    "Errors-To",
    "Return-Receipt-To",
    "Disposition-Notification-To",
    "Mail-Followup-To",
    "Resent-From",
    "Resent-Sender",
  ].map((h) => h.toLowerCase()),
);

export interface CorpusCase {
  file: string;
  from: string;
  to: string;
  /** Refused by the null-sender policy (docs/relay.md, "Null sender"); the golden file has the reply. */
  refused?: boolean;
}

/** Each corpus message and the envelope it is sent with. */
export const CORPUS_CASES: CorpusCase[] = [
  ...[
    "meeting-request.eml",
    "meeting-request-signed.eml",
    "meeting-update.eml",
    "meeting-cancel.eml",
    "read-receipt-request.eml",
    "read-receipt.eml",
    "auto-reply.eml",
    "names-groups-resent.eml",
    "smime-signed.eml",
    "smime-opaque.eml",
  ].map((file) => ({ file, from: "alice@old.example", to: "bob@partner.example" })),
  { file: "meeting-reply.eml", from: "alice@old.example", to: "carol@partner.example" },
  { file: "auto-reply-null-sender.eml", from: "<>", to: "bob@partner.example", refused: true },
  { file: "ndr.eml", from: "<>", to: "alice@old.example", refused: true },
];

export function corpusMessage(file: string): string {
  return fs.readFileSync(path.join(CORPUS, file), "utf8");
}

/** A corpus message as tenant A sends it now, and the names its re-dated header values go by. */
export interface SentNow {
  raw: string;
  /** Each re-dated header value (as the message carries it) and its placeholder in golden files. */
  dates: Map<string, string>;
}

const RFC5322_DATE = /^(Date|Resent-Date):[ \t]*(.+)$/gim;
/** How Exchange Online stamps its arrival time: `24 Nov 2026 09:15:02.1234 (UTC)`. */
const ARRIVAL =
  /^(X-MS-Exchange-CrossTenant-originalarrivaltime):[ \t]*(\d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d)(\.\d+)? \(UTC\)$/gim;

const arrival = (ms: number, fraction: string) =>
  rfc5322Date(ms)
    .replace(/^\w{3}, /, "")
    .replace(" +0000", `${fraction} (UTC)`);

/**
 * FILE dated when it is sent (now), as Exchange Online dates what it sends: every
 * header timestamp (Date, Resent-Date, Exchange's arrival stamp) moves by the same amount, so the
 * fixture's intervals stay. Body text (a read receipt's wording, a calendar's DTSTAMP) is content and
 * stays as written: nothing on the path compares it with the clock.
 */
export function sentNow(file: string): SentNow {
  const fixture = corpusMessage(file);
  const split = fixture.search(/\r?\n\r?\n/);
  const head = fixture.slice(0, split);
  const written = Date.parse(/^Date:[ \t]*(.+)$/im.exec(head)![1]);
  const shift = Math.floor(Date.now() / 1000) * 1000 - written;
  const dates = new Map<string, string>();
  const offset = (t: number) => {
    const s = Math.round((t - written) / 1000);
    return s === 0 ? "" : ` ${s > 0 ? "+" : "-"} ${Math.abs(s)} s`;
  };
  const dated = head
    .replace(RFC5322_DATE, (_, name: string, value: string) => {
      const t = Date.parse(value);
      const now = rfc5322Date(t + shift);
      dates.set(now, `(sent${offset(t)})`);
      return `${name}: ${now}`;
    })
    .replace(ARRIVAL, (_, name: string, value: string, fraction = "") => {
      const t = Date.parse(`${value} +0000`);
      const now = arrival(t + shift, fraction);
      dates.set(now, `(sent${offset(t)}, as Exchange stamps arrival)`);
      return `${name}: ${now}`;
    });
  return { raw: dated + fixture.slice(split), dates };
}

export interface Summary {
  headers: [string, string][];
  parts: { path: string; type: string; sha256: string; calendar?: string[] }[];
}

/** Header fields exactly as written and, per MIME leaf, its type, body hash and calendar lines. */
export function summary(message: string): Summary {
  const r = spawnSync("/usr/bin/python3", [SUMMARY], { input: message, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mime-summary.py: ${r.stderr}`);
  return JSON.parse(r.stdout) as Summary;
}

/** A header value as a reader sees it: folding undone, encoded words as written. */
export const unfold = (v: string) => v.replace(/\r?\n[ \t]+/g, " ").trim();

/** What tenant B receives, as the golden files record it. */
export interface Received {
  envelopeSender: string;
  /**
   * Every field but Received, unfolded; the relaying node's name is written "(node)", a timestamp
   * exactly as sent by its placeholder ("(sent)", "(sent + 58 s)"): any other value is compared as is.
   */
  headers: [string, string][];
  /** Per MIME leaf: unchanged (same bytes as sent) or the new hash, and a calendar's address lines. */
  parts: { path: string; type: string; unchanged: boolean; sha256: string; calendar?: string[] }[];
}

/** What tenant B received of SENT (re-dated by sentNow: its dates are written as their placeholders). */
export function received(sent: SentNow, got: string, envelopeSender: string, nodeFqdn: string): Received {
  const before = summary(sent.raw);
  const after = summary(got);
  const hashes = new Map(before.parts.map((p) => [p.path, p.sha256]));
  return {
    envelopeSender,
    headers: after.headers
      .filter(([n]) => n.toLowerCase() !== "received")
      .map(([n, v]) => {
        const value = unfold(v);
        return [n, sent.dates.get(value) ?? value.replaceAll(nodeFqdn, "(node)")];
      }),
    parts: after.parts.map((p) => ({
      path: p.path,
      type: p.type,
      unchanged: hashes.get(p.path) === p.sha256,
      sha256: p.sha256,
      ...(p.calendar ? { calendar: p.calendar } : {}),
    })),
  };
}

/**
 * Compares with test/golden/mail/NAME.json. `UPDATE_GOLDEN=1` writes it instead: review the diff
 * (git diff test/golden/mail) before committing, as for the Microsoft 365 scripts.
 */
export function expectGolden(file: string, observed: Received | { refused: string }): void {
  const golden = path.join(GOLDEN, file.replace(/\.eml$/, ".json"));
  const text = JSON.stringify(observed, null, 2) + "\n";
  if (process.env.UPDATE_GOLDEN) {
    fs.mkdirSync(GOLDEN, { recursive: true });
    fs.writeFileSync(golden, text);
  }
  expect(fs.existsSync(golden), `${golden} is missing: run with UPDATE_GOLDEN=1 and review it`).toBe(true);
  expect(observed, `differs from test/golden/mail/${path.basename(golden)}`).toEqual(
    JSON.parse(fs.readFileSync(golden, "utf8")),
  );
}
