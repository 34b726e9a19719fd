// Tenant pinning through every sandbox node (run from test/sandbox/sandbox.test.ts): tenant A signs with
// its old.example key (published by the sandbox DNS); the impostor is another tenant on the same
// shared addresses, inside the allow-listed range, and is refused however it dresses its mail.
import { expect, it } from "vitest";
import { header, refusal, sinkCount } from "../../sandbox/mail";
import { TENANT_A_INITIAL_DOMAIN } from "../../sandbox/dkim";
import { readMapTexts, parseMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { milterLog, nodeLog } from "../../sandbox/node-host";
import { deployNode, nodeContext } from "../../sandbox/nodes";
import { readSink } from "../../sandbox/mail";
import type { Suite } from "./harness";
import { replays } from "../helpers/replays";

const alice = { from: "alice@old.example", headers: ["From: Alice <alice@old.example>"] };
const GENUINE_BODY = "This is a test mailing";

/** Messages the trap (the rest of the Internet) received: a relay leak if any. */
function trapCount(sb: Suite): number {
  return readSink(sb.t.trap.dir).length;
}

export function pinningTests(sb: Suite): void {
  const relays = () => sb.t.nodes.filter((n) => n.kind !== "stock");

  it("tenant A's signed mail passes on every node: rewritten, its signature removed, the verdict stamped", async () => {
    for (const n of relays()) {
      const { record, eml } = await sb.relayed(n, alice);
      expect(record.mailFrom).toBe("a.smith@new.example");
      expect(header(eml, "From")).toBe("Alice <a.smith@new.example>");
      expect(eml).not.toMatch(/^DKIM-Signature:/im);
      expect(header(eml, "X-Header-Rewrite-Pin")).toMatch(
        /^pass \(enforce\) old\.example: dkim d=old\.example s=selector1 \[maps\/tenant_pins:\d+\]$/,
      );
      console.log(`${n.name}: ${header(eml, "X-Header-Rewrite-Pin")}`);
    }
  });

  it("canonicalisation variants pass on every node: simple/simple, relaxed/simple with From over-signed", async () => {
    const key = sb.t.clients.allowed.dkim;
    const variants = [
      { ...key, canon: "simple/simple" },
      { ...key, canon: "relaxed/simple", headers: ["From", "From", "Date", "Subject", "Message-ID"] },
    ];
    for (const n of relays()) {
      for (const dkim of variants) {
        const { record, eml } = await sb.relayed(n, { ...alice, dkim });
        expect(record.mailFrom, `${n.name} ${dkim.canon}`).toBe("a.smith@new.example");
        expect(header(eml, "X-Header-Rewrite-Pin")).toMatch(
          /^pass \(enforce\) old\.example: dkim d=old\.example /,
        );
      }
    }
  });

  it("legacy.example signed by the tenant's onmicrosoft.com domain passes, as the map configures", async () => {
    const dkim = { ...sb.t.clients.allowed.dkim, domain: TENANT_A_INITIAL_DOMAIN };
    for (const n of relays()) {
      const { record, eml } = await sb.relayed(n, {
        from: "carol@legacy.example",
        headers: ["From: Carol <carol@legacy.example>"],
        dkim,
      });
      expect(record.mailFrom).toBe("carol@other.example");
      expect(header(eml, "X-Header-Rewrite-Pin")).toMatch(
        /^pass \(enforce\) legacy\.example: dkim d=tenanta\./,
      );
    }
  });

  it("refused with a 5.7.x naming the check, nothing reaching a sink: the impostor however dressed, A unsigned", async () => {
    const impostor = sb.t.clients.impostor;
    const a = sb.t.clients.allowed.dkim;
    type Attempt = [string, Parameters<Suite["send"]>[1], RegExp];
    const attempts: Attempt[] = [
      ["impostor, unsigned", { ...alice, netns: impostor.netns, dkim: undefined }, /^550 5\.7\.21 /],
      [
        "impostor, signed as itself",
        { ...alice, netns: impostor.netns, dkim: impostor.dkim },
        /^550 5\.7\.21 /,
      ],
      [
        "impostor replays tenant A's signature onto another body",
        {
          ...alice,
          netns: impostor.netns,
          dkim: a,
          alter: (s) => s.replace(GENUINE_BODY, "Wire 40,000 EUR today"),
        },
        /^550 5\.7\.20 .*body hash/,
      ],
      [
        "impostor replays tenant A's signature with another From",
        {
          ...alice,
          netns: impostor.netns,
          dkim: a,
          alter: (s) => s.replace("From: Alice <alice@old.example>", "From: CEO <ceo@old.example>"),
        },
        /^550 5\.7\.20 /,
      ],
      ["tenant A, unsigned", { ...alice, dkim: undefined }, /^550 5\.7\.21 /],
      // Genuine signatures the impostor received and reuses (issue 26).
      ...replays(a, alice).map((c): Attempt => [c.what, { ...c.message, netns: impostor.netns }, c.reply]),
    ];
    const sinksBefore = sinkCount(sb.t);
    const trapBefore = trapCount(sb);
    for (const n of relays()) {
      for (const [what, opts, reply] of attempts) {
        const { r } = sb.send(n, opts);
        const line = refusal(r);
        console.log(`${n.name}: ${what} -> ${line}`);
        expect(line, sb.explain(r, n)).toMatch(reply);
      }
    }
    // Nothing was queued, so nothing can arrive later either; a short wait catches a leak.
    await new Promise((r) => setTimeout(r, 3000));
    expect(sinkCount(sb.t)).toBe(sinksBefore);
    expect(trapCount(sb)).toBe(trapBefore);
  });

  it("monitor mode (map edit + redeploy) relays the impostor, the verdict in its header and the node log", async () => {
    const texts = readMapTexts(MAPS_DIR);
    texts.tenant_pins = texts.tenant_pins.replace(/^old\.example\s+enforce /m, "old.example monitor ");
    const monitor = parseMaps(texts);
    try {
      for (const n of relays()) {
        const d = deployNode(sb.t, n, nodeContext(sb.t, n, sb.sandbox.stacks, monitor));
        expect(d.status, sb.explain(d, n)).toBe(0);
      }
      for (const n of relays()) {
        const { record, eml } = await sb.relayed(n, {
          ...alice,
          netns: sb.t.clients.impostor.netns,
          dkim: undefined,
        });
        expect(record.mailFrom).toBe("a.smith@new.example");
        expect(header(eml, "X-Header-Rewrite-Pin")).toMatch(
          /^fail \(monitor\) old\.example: no DKIM signature by /,
        );
        const log = milterLog(n);
        expect(log, nodeLog(n)).toMatch(
          /from=<alice@old\.example> fail \(monitor\) old\.example: no DKIM signature/,
        );
      }
    } finally {
      for (const n of relays()) deployNode(sb.t, n, nodeContext(sb.t, n, sb.sandbox.stacks, sb.sandbox.maps));
    }
    // Enforcing again: the same message is refused.
    const { r } = sb.send(relays()[0], { ...alice, netns: sb.t.clients.impostor.netns, dkim: undefined });
    expect(refusal(r)).toMatch(/^550 5\.7\.21 /);
  });
}
