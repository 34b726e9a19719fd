// Tenant pinning on a real Postfix node: the milter sees tenant A's message as it was signed, a pass
// is then rewritten by cleanup, and everything that does not prove tenant A is refused with a 5.7.x
// reply that names the check, from the attacker's seat (another tenant on the same addresses).
import { describe, expect, it } from "vitest";
import { MAPS_DIR } from "../../src/project";
import { parseMaps, readMapTexts } from "../../src/maps/relay-maps";
import { PIN_MILTER } from "../../src/node-layout";
import { queuedAs, refusal, rfc5322Date } from "../../sandbox/mail";
import { replays } from "../helpers/replays";
import { onNode, queue } from "../../sandbox/node-host";
import type { Result } from "../../sandbox/shell";
import {
  IMPOSTOR,
  TENANT_A,
  TENANT_A_INITIAL,
  deferred,
  deployPostfix,
  deployStep,
  explain,
  lon1Bundle,
  nodeMetrics,
  nodeStatus,
  sendLocal,
  smtpReady,
  useLon1,
} from "../helpers/node";

const lon1 = useLon1();
const sh = (c: string) => onNode(lon1(), c);

/** The committed maps with tenant_pins lines replaced (by key) or added. */
function pinsWith(lines: Record<string, string>) {
  const texts = readMapTexts(MAPS_DIR);
  for (const [key, line] of Object.entries(lines)) {
    const re = new RegExp(`^${key.replace(/\./g, "\\.")}\\s.*$`, "m");
    texts.tenant_pins = re.test(texts.tenant_pins)
      ? texts.tenant_pins.replace(re, line)
      : texts.tenant_pins + line + "\n";
  }
  return parseMaps(texts);
}

/** The queued message's headers after both passes. */
async function queuedHeaders(r: Result): Promise<{ sender: string; headers: string }> {
  const entry = await deferred(lon1(), r);
  return { sender: entry.sender, headers: sh(`postcat -hq ${entry.queue_id}`).stdout };
}

function refused(r: Result): string {
  const line = refusal(r);
  expect(line, explain(lon1(), r)).toBeTruthy();
  return line!;
}

const bob = {
  from: "bob@old.example",
  to: "carol@partner.example",
  headers: ["From: Bob <bob@old.example>"],
};

describe("tenant A's signed mail is verified as sent, then rewritten", () => {
  it("relaxed/relaxed by old.example: passes, sender and From rewritten, signature removed, verdict stamped", async () => {
    const { r } = sendLocal(lon1(), bob);
    const q = await queuedHeaders(r);
    expect(q.sender).toBe("bob@new.example");
    expect(q.headers).toMatch(/^From: Bob <bob@new\.example>$/m);
    expect(q.headers).not.toMatch(/^DKIM-Signature:/im);
    expect(q.headers).toMatch(
      /^X-Header-Rewrite-Pin: pass \(enforce\) old\.example: dkim d=old\.example s=selector1 /m,
    );
    console.log(q.headers.split("\n").find((l) => l.startsWith("X-Header-Rewrite-Pin")));
  });

  it("simple/simple, an over-signed From, and the tenant's onmicrosoft.com signature pass too", async () => {
    const variants = [
      { ...TENANT_A, canon: "simple/simple" },
      { ...TENANT_A, canon: "relaxed/simple", headers: ["From", "From", "Date", "Subject", "To"] },
      TENANT_A_INITIAL,
    ];
    for (const dkim of variants) {
      const { r } = sendLocal(lon1(), { ...bob, dkim });
      const q = await queuedHeaders(r);
      expect(q.headers, JSON.stringify(dkim)).toMatch(/^From: Bob <bob@new\.example>$/m);
      expect(q.headers).toMatch(
        new RegExp(
          `^X-Header-Rewrite-Pin: pass \\(enforce\\) old\\.example: dkim d=${dkim.domain.replace(/\./g, "\\.")} `,
          "m",
        ),
      );
    }
  });

  it("scheduled over a weekend: dated when Send was pressed 63 h ago, it passes the 7-day window", async () => {
    const friday = rfc5322Date(Date.now() - 63 * 3600_000);
    const { r } = sendLocal(lon1(), { ...bob, headers: [...bob.headers, `Date: ${friday}`] });
    const q = await queuedHeaders(r);
    expect(q.sender).toBe("bob@new.example");
    expect(q.headers).toMatch(/^X-Header-Rewrite-Pin: pass \(enforce\) old\.example: dkim d=old\.example /m);
  });
});

describe("refused with a 5.7.x that names the check, nothing queued", () => {
  const before = () => queue(lon1()).length;
  type Case = [string, Parameters<typeof sendLocal>[1], RegExp];
  const cases: Case[] = [
    [
      "unsigned",
      { ...bob, dkim: undefined },
      /^550 5\.7\.21 .*no DKIM signature by old\.example or tenanta\.onmicrosoft\.com/,
    ],
    [
      "signed by the impostor's own domain",
      { ...bob, dkim: IMPOSTOR },
      /^550 5\.7\.21 .*no DKIM signature by old\.example/,
    ],
    [
      "tenant A's signature replayed onto an altered body",
      { ...bob, alter: (s) => s.replace("This is a test mailing", "Please pay invoice 4711") },
      /^550 5\.7\.20 .*signature by old\.example does not verify \(.*body hash/,
    ],
    [
      "tenant A's signature replayed with an altered From",
      { ...bob, alter: (s) => s.replace("From: Bob <bob@old.example>", "From: CEO <ceo@old.example>") },
      /^550 5\.7\.20 .*signature by old\.example does not verify/,
    ],
    ...replays(TENANT_A, bob).map((c): Case => [c.what, c.message, c.reply]),
  ];
  for (const [what, message, reply] of cases) {
    it(what, () => {
      const queued = before();
      const { r } = sendLocal(lon1(), message);
      const line = refused(r);
      console.log(`${what} -> ${line}`);
      expect(line).toMatch(reply);
      expect(queue(lon1()).length).toBe(queued);
    });
  }

  it("keep-signatures (a map edit) leaves tenant A's signature on the relayed message", async () => {
    const maps = pinsWith({ "old.example": "old.example enforce dkim=old.example keep-signatures" });
    expect(deployPostfix(lon1(), lon1Bundle(maps)).status).toBe(0);
    await smtpReady(lon1());
    try {
      const q = await queuedHeaders(sendLocal(lon1(), bob).r);
      expect(q.headers).toMatch(/^DKIM-Signature: .*d=old\.example;/ms);
      expect(q.headers).toMatch(/^From: Bob <bob@new\.example>$/m);
    } finally {
      expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
    }
  });

  it("a forged verdict header is removed; only the relay's own verdict remains", async () => {
    const { r } = sendLocal(lon1(), {
      ...bob,
      headers: [...bob.headers, "X-Header-Rewrite-Pin: pass (enforce) forged"],
    });
    const q = await queuedHeaders(r);
    const verdicts = q.headers.split("\n").filter((l) => /^X-Header-Rewrite-Pin:/i.test(l));
    expect(verdicts).toHaveLength(1);
    expect(verdicts[0]).toMatch(/: pass \(enforce\) old\.example: dkim d=old\.example/);
  });
});

describe("modes and undecided checks (a map edit and a redeploy)", () => {
  it("a key that DNS cannot serve defers with 451 4.7.0, so the sender retries", async () => {
    const maps = pinsWith({ "old.example": "old.example enforce dkim=old.example,nodns.example" });
    expect(deployPostfix(lon1(), lon1Bundle(maps)).status).toBe(0);
    await smtpReady(lon1());
    const { r } = sendLocal(lon1(), { ...bob, dkim: { ...TENANT_A, domain: "nodns.example" } });
    const line = refused(r);
    console.log(`unreachable key -> ${line}`);
    expect(line).toMatch(/^451 4\.7\.0 .*DKIM key of nodns\.example could not be fetched/);
  });

  it("monitor mode relays the impostor, stamps and logs the failed verdict", async () => {
    const maps = pinsWith({ "old.example": "old.example monitor dkim=old.example" });
    const d = deployPostfix(lon1(), lon1Bundle(maps));
    expect(d.status, explain(lon1(), d)).toBe(0);
    await smtpReady(lon1());
    const { r } = sendLocal(lon1(), { ...bob, dkim: IMPOSTOR });
    const q = await queuedHeaders(r);
    expect(q.sender).toBe("bob@new.example");
    expect(q.headers).toMatch(
      /^X-Header-Rewrite-Pin: fail \(monitor\) old\.example: no DKIM signature by old\.example /m,
    );
    // The node log has it too, with the queue ID the client was given.
    expect(sh(`cat ${PIN_MILTER.log}`).stdout).toMatch(
      new RegExp(
        `${queuedAs(r)}: from=<bob@old\\.example> fail \\(monitor\\) old\\.example: no DKIM signature`,
      ),
    );
    // The status collector counts the verdict from the same log, for the monitor phase.
    const b = lon1Bundle(maps);
    const pinning = nodeStatus(lon1(), b).pinning!;
    expect(pinning.find((p) => p.domain === "old.example" && p.mode === "monitor")).toMatchObject({
      fail: 1,
      reasons: [{ reason: "no DKIM signature by old.example", count: 1 }],
    });
    // Back to the committed (enforce) maps: the same message is refused again.
    expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
    await smtpReady(lon1());
    expect(refused(sendLocal(lon1(), { ...bob, dkim: IMPOSTOR }).r)).toMatch(/^550 5\.7\.21 /);
  });
});

describe("optional header requirements (a map edit, the secret from header-rewrite:pinSecret)", () => {
  const SECRET = "Zq8xR2vLw5NcT7yH3kPb-test-only";
  const GUID = "3dd8961f-e488-4e60-8e11-a82d994e183d";

  it("secret-header: missing, wrong or repeated is refused; right passes and the header never leaves the relay", async () => {
    const maps = pinsWith({
      "old.example": "old.example enforce dkim=old.example secret-header=X-Tenant-A-Token",
    });
    const bundle = lon1Bundle(maps);
    expect(deployStep(lon1(), "pin-secret", bundle, { secrets: { pinSecret: SECRET } }).status).toBe(0);
    expect(sh(`stat -c '%a %U:%G' ${PIN_MILTER.secretFile}`).stdout.trim()).toBe(
      `640 root:${PIN_MILTER.user}`,
    );
    expect(deployPostfix(lon1(), bundle).status).toBe(0);
    await smtpReady(lon1());
    try {
      const guess = "X-Tenant-A-Token: guessed-value-of-some-length";
      const attempts: [string, string[], RegExp, ((s: string) => string)?][] = [
        ["missing", [], /is missing; want exactly one \(tenant A's transport rule sets it\)/],
        ["wrong", [guess], /is wrong \(tenant A's transport rule\)/],
        [
          "repeated: a guess above the right value",
          [`X-Tenant-A-Token: ${SECRET}`],
          /is repeated \(2 copies\)/,
          (s) => `${guess}\r\n${s}`,
        ],
      ];
      for (const [what, extra, reply, alter] of attempts) {
        const line = refused(sendLocal(lon1(), { ...bob, headers: [...bob.headers, ...extra], alter }).r);
        console.log(`secret header ${what} -> ${line}`);
        expect(line).toMatch(new RegExp(`^550 5\\.7\\.1 .*header X-Tenant-A-Token ${reply.source}`));
      }
      const { r } = sendLocal(lon1(), { ...bob, headers: [...bob.headers, `X-Tenant-A-Token: ${SECRET}`] });
      const q = await queuedHeaders(r);
      expect(q.headers).not.toContain(SECRET);
      expect(q.headers).toMatch(
        /^X-Header-Rewrite-Pin: pass \(enforce\) old\.example: dkim d=old\.example /m,
      );
    } finally {
      expect(deployStep(lon1(), "pin-secret", lon1Bundle()).status).toBe(0);
      expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
    }
    expect(sh(`test -e ${PIN_MILTER.secretFile}`).status, "no secret configured: the file is removed").toBe(
      1,
    );
  });

  it("originator-org and tenant-id: absent, wrong or duplicated (a prepended forgery) is refused", async () => {
    const maps = pinsWith({
      "old.example": `old.example enforce dkim=old.example originator-org=old.example tenant-id=${GUID}`,
    });
    expect(deployPostfix(lon1(), lon1Bundle(maps)).status).toBe(0);
    await smtpReady(lon1());
    const stamped = ["X-OriginatorOrg: old.example", `X-MS-Exchange-CrossTenant-Id: ${GUID}`];
    try {
      const attempts: [string, string[], ((s: string) => string)?][] = [
        ["absent", []],
        [
          "another tenant's id",
          [
            "X-OriginatorOrg: old.example",
            "X-MS-Exchange-CrossTenant-Id: 00000000-0000-0000-0000-000000000000",
          ],
        ],
        ["a second, prepended X-OriginatorOrg", stamped, (s) => `X-OriginatorOrg: old.example\r\n${s}`],
      ];
      for (const [what, extra, alter] of attempts) {
        const line = refused(sendLocal(lon1(), { ...bob, headers: [...bob.headers, ...extra], alter }).r);
        console.log(`Exchange headers ${what} -> ${line}`);
        expect(line).toMatch(/^550 5\.7\.1 .*X-(OriginatorOrg|MS-Exchange-CrossTenant-Id) is /);
      }
      const q = await queuedHeaders(sendLocal(lon1(), { ...bob, headers: [...bob.headers, ...stamped] }).r);
      expect(q.sender).toBe("bob@new.example");
    } finally {
      expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
    }
  });
});

describe("a milter Postfix cannot reach", () => {
  it("every connection gets a 4xx, nothing is queued; status and the metrics name the milter", async () => {
    const b = lon1Bundle();
    const queued = queue(lon1()).length;
    // As a dead milter looks to smtpd and to the collector: nothing to connect to. (The test node's
    // PID 1 reaps no children, so a stopped milter would linger as a zombie.)
    const away = `${PIN_MILTER.socket}.away`;
    expect(sh(`mv ${PIN_MILTER.socket} ${away}`).status).toBe(0);
    try {
      for (let i = 0; i < 3; i++) expect(refused(sendLocal(lon1(), bob).r)).toMatch(/^4\d\d /);
      expect(queue(lon1()).length).toBe(queued);
      expect(nodeStatus(lon1(), b).milter).toEqual({
        answering: false,
        restarts: null,
        socket: PIN_MILTER.socket,
      });
      // The metrics: the three connections refused for the milter, none counted as "other".
      const prom = nodeMetrics(lon1(), b);
      expect(prom).toMatch(/^header_rewrite_milter_answering 0$/m);
      expect(prom).toMatch(/^header_rewrite_refusals_total\{reason="milter_unavailable"\} 3$/m);
      expect(prom).toMatch(/^header_rewrite_refusals_total\{reason="other"\} 0$/m);
    } finally {
      sh(`mv ${away} ${PIN_MILTER.socket}`);
    }
    expect(nodeStatus(lon1(), b).milter?.answering).toBe(true);
  });
});
