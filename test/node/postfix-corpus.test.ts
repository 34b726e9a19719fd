// Real mail, not test mail (issue 17): every message of test/fixtures/mail goes through a node's
// real Postfix (signed as tenant A, as Exchange Online would), and what the relay queues for tenant B
// is compared with the original and with its golden file (test/golden/mail): the sender-class header
// fields rewritten (Postfix's header_opts.c HDR_OPT_SENDER), the calendar's addresses given the same
// translation unless signed, every other field and body part byte for byte as sent, S/MIME
// signatures still verifying, null-sender mail refused by the documented policy.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "../../src/project";
import { refusal } from "../../sandbox/mail";
import { onNode } from "../../sandbox/node-host";
import { deferred, explain, sendLocal, useLon1 } from "../helpers/node";
import {
  CORPUS,
  CORPUS_CASES,
  SENDER_CLASS,
  expectGolden,
  received,
  sentNow,
  summary,
  unfold,
} from "../helpers/corpus";

/** Alice's new address: maps/translate_domains has a per-address override for her. */
const ALICE = { old: "alice@old.example", new: "a.smith@new.example" };

describe("real mail through a node (test/fixtures/mail)", () => {
  const lon1 = useLon1();

  it("covers every corpus message, with the committed override for alice", () => {
    expect(fs.readFileSync(path.join(PROJECT_ROOT, "maps", "translate_domains"), "utf8")).toMatch(
      new RegExp(`^${ALICE.old}\\s+${ALICE.new}$`, "m"),
    );
    const files = fs.readdirSync(CORPUS).filter((f) => f.endsWith(".eml"));
    expect(CORPUS_CASES.map((c) => c.file).sort()).toEqual(files.sort());
  });

  for (const c of CORPUS_CASES) {
    const what = c.refused
      ? "refused"
      : "sender fields and meeting addresses rewritten, everything else as sent";
    it(`${c.file}: ${what}`, async () => {
      // Dated now and signed as tenant A by the test (the pinning milter requires both), From and
      // Date among the signed fields.
      const sent = sentNow(c.file);
      const raw = sent.raw;
      const { r } = sendLocal(lon1(), { from: c.from, to: c.to, raw });
      if (c.refused) {
        expect(refusal(r), explain(lon1(), r)).toBeDefined();
        expectGolden(c.file, { refused: refusal(r)! });
        return;
      }
      expect(r.status, explain(lon1(), r)).toBe(0);
      const entry = await deferred(lon1(), r);
      const relayed = onNode(lon1(), `postcat -bhq ${entry.queue_id}`).stdout;
      // The node stamps Received with the clock the test dated the message by (under
      // scripts/test-future.sh the moved one: the node's Postfix and milter moved with it).
      const head = relayed.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, " ");
      const stamp = /^Received: .*;\s*([^;]+?)(?:\s+\([A-Z]+\))?$/m.exec(head)?.[1];
      expect(stamp, head).toBeTruthy();
      const dated = Date.parse(/^Date: (.+)$/m.exec(raw)![1]);
      expect(
        Math.abs(Date.parse(stamp!) - dated),
        `Received ${stamp}, Date ${new Date(dated).toUTCString()}`,
      ).toBeLessThan(300_000);
      const before = summary(raw);
      const after = received(sent, relayed, entry.sender, lon1().fqdn);
      expectGolden(c.file, after);

      // Why the golden file says what it says: every field as sent, in order, but the sender class
      // with the new address.
      const remaining = [...after.headers];
      for (const [name, value] of before.headers) {
        const i = remaining.findIndex(([n]) => n.toLowerCase() === name.toLowerCase());
        expect(i, `${name} still present`).toBeGreaterThanOrEqual(0);
        const [, got] = remaining.splice(i, 1)[0];
        const want = SENDER_CLASS.has(name.toLowerCase())
          ? unfold(value).replaceAll(ALICE.old, ALICE.new).replaceAll("dave@old.example", "dave@new.example")
          : (sent.dates.get(unfold(value)) ?? unfold(value));
        expect(got, name).toBe(want);
      }
      // Added by the relay: the pinning verdict and the loop guard (Received lines aside); tenant A's
      // signature (broken by the rewrite) is removed.
      expect([...new Set(remaining.map(([n]) => n))].sort()).toEqual([
        "X-Header-Rewrite-Pin",
        "X-Header-Rewrite-Relayed",
      ]);
      // Only an unsigned calendar part may change, and then only in its address lines.
      const signed = /smime|signed/.test(c.file);
      for (const p of after.parts) {
        const was = before.parts.find((b) => b.path === p.path)!;
        expect(p.type).toBe(was.type);
        if (p.type !== "text/calendar" || signed) expect(p.unchanged, `${p.path} ${p.type}`).toBe(true);
        else expect(p.calendar?.length).toBe(was.calendar?.length);
      }
      if (signed) {
        const verify = spawnSync("openssl", ["smime", "-verify", "-noverify"], { input: relayed });
        expect(verify.status, verify.stderr.toString()).toBe(0);
      }
    });
  }
});

/** docs/relay.md's section "What gets rewritten", up to the next top-level section. */
function whatGetsRewritten(): string {
  const doc = fs.readFileSync(path.join(PROJECT_ROOT, "docs", "relay.md"), "utf8");
  return doc.split("### What gets rewritten\n")[1].split("\n## ")[0];
}

it('docs/relay.md "What gets rewritten" lists exactly the fields this test proves rewritten', () => {
  const section = whatGetsRewritten();
  const row = section.split("\n").find((l) => /^\| .* \| yes: the address only \|/.test(l))!;
  const listed = [...row.split("|")[1].matchAll(/`([^`]+)`/g)].map((m) => m[1].toLowerCase());
  expect(new Set(listed)).toEqual(SENDER_CLASS);
});

it('docs/relay.md "What gets rewritten" names exactly the calendar properties and parameters the milter rewrites', () => {
  const section = whatGetsRewritten();
  const row = section.split("\n").find((l) => l.startsWith("| `text/calendar` parts:"))!;
  const listed = [...row.split("|")[1].matchAll(/`([A-Z-]+)`/g)].map((m) => m[1]);
  const program = fs.readFileSync(path.join(PROJECT_ROOT, "node", "calendar_rewrite.py"), "utf8");
  const names = (constant: string) =>
    [...new RegExp(`^${constant} = [{(]([^})]*)[})]`, "m").exec(program)![1].matchAll(/"([A-Z-]+)"/g)].map(
      (m) => m[1],
    );
  expect(new Set(listed)).toEqual(new Set([...names("ADDRESS_PROPERTIES"), ...names("ADDRESS_PARAMETERS")]));
});
