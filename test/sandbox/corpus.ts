// Real mail through both sandbox nodes (run from test/sandbox/sandbox.test.ts): every message of
// test/fixtures/mail, signed by tenant A, goes through each node to the tenant sink, and what the
// sink received must equal the message's golden file (test/golden/mail), the same file the one-node
// test checks the queued message against: bhs runs Debian 13, lon Debian 12 (two Postfix and
// python3-icalendar releases).
import { expect, it } from "vitest";
import { refusal, waitForMessage } from "../../sandbox/mail";
import { milterLog } from "../../sandbox/node-host";
import { CORPUS_CASES, expectGolden, received, sentNow } from "../helpers/corpus";
import type { Suite } from "./harness";

const MESSAGE_ID = /^Message-ID:\s*(<[^>]+>)/im;

export function corpusTests(sb: Suite): void {
  const relays = () => sb.t.nodes.filter((n) => n.kind !== "stock");

  it("every corpus message through every node reaches the sink exactly as its golden file says", async () => {
    const sent = [];
    for (const n of relays()) {
      for (const c of CORPUS_CASES) {
        const dated = sentNow(c.file);
        const raw = dated.raw;
        // One Message-ID per node, so each arrival is found; put back before the comparison.
        const original = MESSAGE_ID.exec(raw)![1];
        const unique = `<corpus-${c.file.replace(/\.eml$/, "")}-${n.name}-${Date.now()}@test.sandbox.example>`;
        const { r } = sb.send(n, { from: c.from, to: c.to, raw: raw.replace(original, unique) });
        if (c.refused) {
          expect(refusal(r), `${n.name} ${c.file}\n${sb.explain(r, n)}`).toBeDefined();
          expectGolden(c.file, { refused: refusal(r)! });
          continue;
        }
        expect(r.status, `${n.name} ${c.file}\n${sb.explain(r, n)}`).toBe(0);
        sent.push({ n, c, dated, original, unique });
      }
    }
    for (const { n, c, dated, original, unique } of sent) {
      const got = await waitForMessage(sb.t, unique.slice(1, -1));
      expect(
        got,
        `${n.name} ${c.file} did not reach a tenant sink\n${sb.explain(undefined, n)}`,
      ).toBeTruthy();
      expect(got!.record.node, c.file).toBe(n.name);
      expect(got!.sink, c.file).toBe("[new-example.mail.protection.outlook.com]");
      const eml = got!.eml.replace(unique, original);
      expectGolden(c.file, received(dated, eml, got!.record.mailFrom, n.fqdn));
    }
    console.log(
      `${sent.length} corpus messages through ${relays()
        .map((n) => n.name)
        .join(", ")}: as golden`,
    );
  });

  it("the milter logs each calendar address it rewrote, with the queue ID", () => {
    for (const n of relays()) {
      const log = milterLog(n);
      expect(log).toMatch(
        /^header-rewrite-pin: \w+: calendar: ORGANIZER;SENT-BY mailto:dave@old\.example -> mailto:dave@new\.example$/m,
      );
      expect(log).toMatch(
        /^header-rewrite-pin: \w+: calendar: ATTENDEE mailto:alice@old\.example -> mailto:a\.smith@new\.example$/m,
      );
      expect(log).not.toMatch(/calendar left as sent/);
    }
  });
}
