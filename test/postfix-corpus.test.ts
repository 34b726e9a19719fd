// Real mail, not test mail (issue 17): every message of test/fixtures/mail goes through a node's
// real Postfix (signed as tenant A, as Exchange Online would), and what the relay queues for tenant B
// is compared with the original: the sender-class header fields rewritten (Postfix's header_opts.c
// HDR_OPT_SENDER), every other field and every body part byte for byte as sent, S/MIME signatures
// still verifying, null-sender mail refused by the documented policy.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "../src/project";
import { refusal } from "../sandbox/mail";
import { onNode } from "../sandbox/node-host";
import { deferred, explain, sendLocal, useLon1 } from "./helpers/node";

const CORPUS = path.join(PROJECT_ROOT, "test", "fixtures", "mail");
const SUMMARY = path.join(PROJECT_ROOT, "sandbox", "mime-summary.py");

/** The fields Postfix rewrites with sender_canonical_classes = header_sender (header_opts.c). */
const SENDER_CLASS = new Set(
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

interface Summary {
  headers: [string, string][];
  parts: { path: string; type: string; sha256: string; calendar?: string[] }[];
}

function summary(message: string): Summary {
  const r = spawnSync("/usr/bin/python3", [SUMMARY], { input: message, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mime-summary.py: ${r.stderr}`);
  return JSON.parse(r.stdout) as Summary;
}

/** Alice's new address: maps/translate_domains has a per-address override for her. */
const ALICE = { old: "alice@old.example", new: "a.smith@new.example" };

/** A header value as a reader sees it: folding undone. */
const unfold = (v: string) => v.replace(/\r?\n[ \t]+/g, " ").trim();

/** Each corpus message, the envelope it is sent with, and what must happen to it. */
const CASES: { file: string; from: string; to: string; refused?: RegExp }[] = [
  { file: "meeting-request.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "meeting-update.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "meeting-cancel.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "meeting-reply.eml", from: "alice@old.example", to: "carol@partner.example" },
  { file: "read-receipt-request.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "read-receipt.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "auto-reply.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "names-groups-resent.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "smime-signed.eml", from: "alice@old.example", to: "bob@partner.example" },
  { file: "smime-opaque.eml", from: "alice@old.example", to: "bob@partner.example" },
  // Null-sender mail: refused unless maps/allowed_senders lists <> (README, "Null sender").
  {
    file: "auto-reply-null-sender.eml",
    from: "<>",
    to: "bob@partner.example",
    refused: /^550 5\.7\.1 <>: Sender address rejected: Null sender \(bounce or auto-reply\) is not relayed/,
  },
  {
    file: "ndr.eml",
    from: "<>",
    to: "alice@old.example",
    refused: /^550 5\.7\.1 <>: Sender address rejected: Null sender \(bounce or auto-reply\) is not relayed/,
  },
];

describe("real mail through a node (test/fixtures/mail)", () => {
  const lon1 = useLon1();

  it("covers every corpus message, with the committed override for alice", () => {
    expect(fs.readFileSync(path.join(PROJECT_ROOT, "maps", "translate_domains"), "utf8")).toMatch(
      new RegExp(`^${ALICE.old}\\s+${ALICE.new}$`, "m"),
    );
    const files = fs.readdirSync(CORPUS).filter((f) => f.endsWith(".eml"));
    expect(CASES.map((c) => c.file).sort()).toEqual(files.sort());
  });

  for (const c of CASES) {
    it(`${c.file}: ${c.refused ? "refused" : "sender fields rewritten, everything else as sent"}`, async () => {
      const raw = fs.readFileSync(path.join(CORPUS, c.file), "utf8");
      // Signed as tenant A by the test (the pinning milter requires it), From among the signed fields.
      const { r } = sendLocal(lon1(), { from: c.from, to: c.to, raw });
      if (c.refused) {
        expect(refusal(r), explain(lon1(), r)).toMatch(c.refused);
        return;
      }
      expect(r.status, explain(lon1(), r)).toBe(0);
      const entry = await deferred(lon1(), r);
      expect(entry.sender).toBe(ALICE.new);
      const relayed = onNode(lon1(), `postcat -bhq ${entry.queue_id}`).stdout;
      const before = summary(raw);
      const after = summary(relayed);

      // Every field as sent, in order, but the sender class with the new address.
      const remaining = [...after.headers];
      for (const [name, value] of before.headers) {
        const i = remaining.findIndex(([n]) => n.toLowerCase() === name.toLowerCase());
        expect(i, `${name} still present`).toBeGreaterThanOrEqual(0);
        const [, got] = remaining.splice(i, 1)[0];
        const want = SENDER_CLASS.has(name.toLowerCase())
          ? unfold(value).replaceAll(ALICE.old, ALICE.new)
          : unfold(value);
        expect(unfold(got), name).toBe(want);
      }
      // Added by the relay: its Received lines, the pinning verdict and the loop guard; tenant A's
      // signature (broken by the rewrite) is removed.
      expect([...new Set(remaining.map(([n]) => n))].sort()).toEqual([
        "Received",
        "X-Header-Rewrite-Pin",
        "X-Header-Rewrite-Relayed",
      ]);
      // Every body part byte for byte (calendar included: see README "What gets rewritten").
      expect(after.parts).toEqual(before.parts);
      if (c.file.startsWith("smime")) {
        const verify = spawnSync("openssl", ["smime", "-verify", "-noverify"], { input: relayed });
        expect(verify.status, verify.stderr.toString()).toBe(0);
      }
    });
  }
});

it('README "What gets rewritten" lists exactly the fields this test proves rewritten', () => {
  const readme = fs.readFileSync(path.join(PROJECT_ROOT, "README.md"), "utf8");
  const section = /### What gets rewritten\n([\s\S]*?)\n## /.exec(readme)![1];
  const row = section.split("\n").find((l) => /^\| .* \| yes: the address only \|/.test(l))!;
  const listed = [...row.split("|")[1].matchAll(/`([^`]+)`/g)].map((m) => m[1].toLowerCase());
  expect(new Set(listed)).toEqual(SENDER_CLASS);
});
