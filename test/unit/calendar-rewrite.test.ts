// node/calendar_rewrite.py on its own (Debian's python3 and python3-icalendar): which calendar
// addresses change, which never do, and that every byte outside the changed lines stays as sent.
// The corpus tests prove the same module inside the milter on real Postfix (one node, both sandbox nodes).
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "../../src/project";
import { calendarPolicy } from "../../src/maps/calendar-addresses";
import { loadMaps } from "../../src/maps/relay-maps";
import { corpusMessage, summary } from "../helpers/corpus";

const maps = loadMaps(path.join(PROJECT_ROOT, "maps"));
const POLICY = JSON.parse(calendarPolicy(maps.translations, maps.calendar)) as object;

const DRIVER = `
import json, sys
sys.path.insert(0, sys.argv[1])
import calendar_rewrite
job = json.load(sys.stdin)
data = job["message"].encode("utf-8", "surrogateescape").replace(b"\\r\\n", b"\\n").replace(b"\\n", b"\\r\\n")
head, _, body = data.partition(b"\\r\\n\\r\\n")
new, notes = calendar_rewrite.rewrite_message(head + b"\\r\\n", body, job["policy"])
print(json.dumps({"body": None if new is None else new.decode("utf-8", "surrogateescape"), "notes": notes}))
`;

interface Outcome {
  /** The whole message after the rewrite (LF line ends), or null when the body was left as sent. */
  message: string | null;
  notes: string[];
}

function rewrite(message: string, policy: object = POLICY): Outcome {
  const r = spawnSync("/usr/bin/python3", ["-c", DRIVER, path.join(PROJECT_ROOT, "node")], {
    input: JSON.stringify({ message, policy }),
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`calendar_rewrite.py: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { body: string | null; notes: string[] };
  const head = message.replace(/\r\n/g, "\n").split("\n\n")[0];
  return {
    message: out.body === null ? null : `${head}\n\n${out.body.replace(/\r\n/g, "\n")}`,
    notes: out.notes,
  };
}

/** The calendar part's address lines (unfolded) of a message. */
const calendarLines = (m: string) => summary(m).parts.flatMap((p) => p.calendar ?? []);

/** A one-part meeting message with this calendar text, in this transfer encoding. */
function meeting(ics: string, encoding: "7bit" | "quoted-printable" | "base64"): string {
  const crlf = ics.replace(/\r?\n/g, "\r\n");
  const body =
    encoding === "base64"
      ? Buffer.from(crlf)
          .toString("base64")
          .replace(/.{1,72}/g, "$&\n")
      : encoding === "quoted-printable"
        ? crlf.replace(/=/g, "=3D").replace(/\r\n/g, "=0D=0A=\n")
        : ics;
  return (
    "From: alice@old.example\nTo: bob@partner.example\nSubject: s\nMIME-Version: 1.0\n" +
    `Content-Type: text/calendar; charset="utf-8"; method=REQUEST\nContent-Transfer-Encoding: ${encoding}\n\n${body}`
  );
}

const ICS = `BEGIN:VCALENDAR
METHOD:REQUEST
VERSION:2.0
BEGIN:VEVENT
ORGANIZER;CN="Smith, Alice":MAILTO:ALICE@Old.Example
ATTENDEE;CN=Bob;DELEGATED-FROM="mailto:dave@old.example":mailto:bob@old.example
ATTENDEE;CN=Dave;DELEGATED-TO="mailto:bob@old.example":mailto:dave@old.example
ATTENDEE;CN=CEO:mailto:ceo@old.example
ATTENDEE;CN=Erin:mailto:erin@legacy.example
ATTENDEE;CN=Frank:mailto:frank@sub.old.example
ATTENDEE;CN=Room:mailto:room-2@partner.example
DESCRIPTION:Agenda: mailto:alice@old.example is the organiser
UID:040000008200E00074C5B7101A82E008
DTSTART:20261201T100000Z
DTSTAMP:20261124T091502Z
END:VEVENT
END:VCALENDAR
`;

describe("calendar addresses get From's translation (node/calendar_rewrite.py)", () => {
  for (const encoding of ["7bit", "quoted-printable", "base64"] as const) {
    it(`${encoding}: ORGANIZER/ATTENDEE and their address parameters, by the committed maps`, () => {
      const out = rewrite(meeting(ICS, encoding));
      expect(out.message).not.toBeNull();
      expect(calendarLines(out.message!)).toEqual([
        // The per-address override, looked up case-insensitively (as Postfix does); the rest of the line as written.
        'ORGANIZER;CN="Smith, Alice":MAILTO:a.smith@new.example',
        'ATTENDEE;CN=Bob;DELEGATED-FROM="mailto:dave@new.example":mailto:bob@new.example',
        'ATTENDEE;CN=Dave;DELEGATED-TO="mailto:bob@new.example":mailto:dave@new.example',
        // The exception (mapped to itself), a "keep" domain, a subdomain no line translates, a partner.
        "ATTENDEE;CN=CEO:mailto:ceo@old.example",
        "ATTENDEE;CN=Erin:mailto:erin@legacy.example",
        "ATTENDEE;CN=Frank:mailto:frank@sub.old.example",
        "ATTENDEE;CN=Room:mailto:room-2@partner.example",
      ]);
      // Text is text: an address in DESCRIPTION is not a calendar user address.
      const body = out.message!.split("\n\n").slice(1).join("\n\n");
      const text = encoding === "base64" ? Buffer.from(body.replace(/\s/g, ""), "base64").toString() : body;
      expect(text).toContain("DESCRIPTION:Agenda: mailto:alice@old.example is the organiser");
      const decoded = summary(out.message!).parts[0];
      expect(decoded.type).toBe("text/calendar");
      expect(out.message).toContain(`Content-Transfer-Encoding: ${encoding}`);
      expect(out.notes).toEqual([
        "ORGANIZER MAILTO:ALICE@Old.Example -> MAILTO:a.smith@new.example",
        "ATTENDEE mailto:bob@old.example -> mailto:bob@new.example",
        "ATTENDEE;DELEGATED-FROM mailto:dave@old.example -> mailto:dave@new.example",
        "ATTENDEE mailto:dave@old.example -> mailto:dave@new.example",
        "ATTENDEE;DELEGATED-TO mailto:bob@old.example -> mailto:bob@new.example",
      ]);
    });
  }

  it("changes only the address lines: every other calendar line and every other part byte for byte", () => {
    const sent = corpusMessage("meeting-request.eml");
    const out = rewrite(sent);
    const decode = (m: string) => {
      const b64 = m.split("Content-Transfer-Encoding: base64\n\n")[1].split("\n\n")[0];
      return Buffer.from(b64.replace(/\s/g, ""), "base64").toString("utf8");
    };
    const unfolded = (ics: string) => ics.replace(/\r\n[ \t]/g, "").split("\r\n");
    const before = unfolded(decode(sent));
    const after = unfolded(decode(out.message!));
    expect(after.length).toBe(before.length);
    const changed = before.map((l, i) => [l, after[i]]).filter(([a, b]) => a !== b);
    expect(changed).toEqual([
      [
        "ORGANIZER;CN=Alice Example:mailto:alice@old.example",
        "ORGANIZER;CN=Alice Example:mailto:a.smith@new.example",
      ],
      [
        "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Dave Example:mailto:dave@old.example",
        "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Dave Example:mailto:dave@new.example",
      ],
    ]);
    // A long line changed is folded again (RFC 5545 3.1: at most 75 octets a line).
    expect(
      decode(out.message!)
        .split("\r\n")
        .every((l) => Buffer.byteLength(l) <= 75),
    ).toBe(true);
    // Same base64 shape as Exchange's (76 columns), and the other parts untouched.
    const lines = out.message!.split("Content-Transfer-Encoding: base64\n\n")[1].split("\n\n")[0].split("\n");
    expect(lines.slice(0, -1).every((l) => l.length === 76)).toBe(true);
    const parts = (m: string) => summary(m).parts.filter((p) => p.type !== "text/calendar");
    expect(parts(out.message!)).toEqual(parts(sent));
    expect(summary(out.message!).headers).toEqual(summary(sent).headers);
  });

  it("leaves a calendar under an S/MIME signature, inside an attached message, or of a keep domain as sent", () => {
    expect(rewrite(corpusMessage("meeting-request-signed.eml"))).toEqual({ message: null, notes: [] });
    const attached =
      "From: alice@old.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n" +
      "Content-Type: text/plain\n\nForwarded invitation.\n--b\nContent-Type: message/rfc822\n\n" +
      meeting(ICS, "7bit") +
      "\n--b--\n";
    expect(rewrite(attached)).toEqual({ message: null, notes: [] });
    const keepOld = { ...POLICY, keep: ["old.example", "legacy.example"] };
    expect(rewrite(meeting(ICS, "7bit"), keepOld)).toEqual({ message: null, notes: [] });
  });

  it("from the attacker's seat: a calendar that also sits inside a signed part is not changed anywhere", () => {
    // The same bytes as an unsigned alternative and inside multipart/signed: a byte replacement
    // would break the signature, so the relay leaves both as sent (and says so).
    const signed = corpusMessage("meeting-request-signed.eml");
    const inner = signed.split("\n\n").slice(1).join("\n\n");
    const b64 = /Content-Transfer-Encoding: base64\n\n([\s\S]*?)\n\n/.exec(inner)![1];
    const twin =
      "From: alice@old.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\n" +
      `Content-Type: text/calendar; charset="utf-8"; method=REQUEST\nContent-Transfer-Encoding: base64\n\n${b64}\n\n` +
      `--outer\n${signed.slice(signed.indexOf("Content-Type: multipart/signed"))}\n--outer--\n`;
    const out = rewrite(twin);
    expect(out.message).toBeNull();
    expect(out.notes).toContain("a calendar part also appears where it must not change: left as sent");
  });

  it("a calendar icalendar cannot read, or an unknown charset, is left as sent with a note", () => {
    const broken = rewrite(meeting("ORGANIZER:mailto:alice@old.example\nBEGIN:VEVENT\n", "7bit"));
    expect(broken.message).toBeNull();
    expect(broken.notes.join("\n")).toMatch(/^a text\/calendar part was left as sent: /);
    const charset = rewrite(meeting(ICS, "7bit").replace('charset="utf-8"', 'charset="x-unknown"'));
    expect(charset).toEqual({
      message: null,
      notes: [expect.stringMatching(/left as sent: unknown encoding/)],
    });
  });
});
