// What `npm run status` makes of a node's answer: problems fail the exit status, warnings do not.
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadStackConfig, nodeIdentity } from "../../src/config/stack-config";
import { bundleHash } from "../../src/render/bundle";
import { loadMaps } from "../../src/maps/relay-maps";
import { PROJECT_ROOT } from "../../src/project";
import { renderNode } from "../../src/render/node-render";
import {
  DEFAULT_LIMITS,
  type NodeStatus,
  assessNode,
  deferralGroups,
  formatReport,
  reasonHint,
  recipientBudget,
  statusScript,
} from "../../src/status/fleet-status";
import { statusSpec } from "../../src/deploy/steps";
import { sh } from "../../sandbox/shell";

const cfg = loadStackConfig("lon");
const bundle = renderNode({
  stack: "lon",
  cfg,
  maps: loadMaps(path.join(PROJECT_ROOT, "maps")),
  node: nodeIdentity(cfg, "lon1"),
});
const hash = bundleHash(bundle.files);

/** A healthy answer, as node/relay-status.py gives it. */
function healthy(): NodeStatus {
  return {
    fqdn: "lon1.example.net",
    checkedAt: 1_800_000_000,
    postfixRunning: true,
    release: {
      fqdn: "lon1.example.net",
      bundle: hash,
      release: "/etc/postfix.releases/r2",
      loaded: true,
      checked: true,
    },
    queue: { counts: {}, deferred: [], error: null },
    clock: {
      service: "chrony",
      synchronized: true,
      offset: 0.0004,
      detail: "Normal, source 192.0.2.123 (stratum 2)",
    },
    deliveries: { new_example: { sent: 40, bounced: [] }, other_example: { sent: 2, bounced: [] } },
    certificates: [
      {
        label: "node certificate",
        file: "/etc/letsencrypt/live/lon1.example.net/fullchain.pem",
        subject: "CN=lon1.example.net",
        daysLeft: 61.5,
        clientAuth: true,
        usages: "TLS Web Server Authentication, TLS Web Client Authentication",
      },
    ],
    nexthops: [
      {
        tenant: "new_example",
        nexthop: "[new-example.mail.protection.outlook.com]",
        ok: true,
        detail: "Verified",
      },
    ],
  };
}

const refused = "connect to new-example.mail.protection.outlook.com[198.51.100.20]:25: Connection refused";

describe("status", () => {
  it("a healthy node has no problem and no warning", () => {
    const v = assessNode("lon1", healthy(), bundle, DEFAULT_LIMITS);
    expect(v.problems).toEqual([]);
    expect(v.warnings).toEqual([]);
  });

  it("drift: a node running another bundle than the repository renders", () => {
    const s = { ...healthy(), release: { fqdn: "lon1.example.net", bundle: "ab".repeat(32) } };
    const [p] = assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems;
    expect(p).toBe(
      `drift: runs bundle ${"ab".repeat(6)}, the repository renders ${hash.slice(0, 12)} ` +
        '(roll it out: pulumi up, docs/operations.md "Rolling out")',
    );
  });

  it("deferred mail: a problem once the oldest is older than the limit, with its next hop and a hint", () => {
    const young = {
      ...healthy(),
      queue: {
        counts: { deferred: 1 },
        deferred: [{ age: 30, reasons: [refused], sender: "" }],
        error: null,
      },
    };
    expect(assessNode("lon1", young, bundle, DEFAULT_LIMITS).problems).toEqual([]);
    expect(assessNode("lon1", young, bundle, DEFAULT_LIMITS).warnings).toEqual([
      "1 deferred message(s), the oldest 30 s old",
    ]);
    const old = {
      ...young,
      queue: { ...young.queue, deferred: [{ age: 3600, reasons: [refused, refused], sender: "" }] },
    };
    const [p] = assessNode("lon1", old, bundle, DEFAULT_LIMITS).problems;
    expect(p).toContain(
      "1 deferred message(s), the oldest 60 min old; top reason at new-example.mail.protection.outlook.com",
    );
    expect(p).toContain("hint: the tenant next hop does not answer");
    expect(deferralGroups(old)).toEqual([
      expect.objectContaining({ host: "new-example.mail.protection.outlook.com", count: 2 }),
    ]);
  });

  it("names what to look at for the errors Exchange Online gives relays", () => {
    const attribution =
      "host new-example.mail.protection.outlook.com[198.51.100.20] said: 550 5.7.64 TenantAttribution; Relay Access Denied";
    expect(reasonHint(attribution)).toMatch(/TlsSenderCertificateName/);
    expect(reasonHint("Server certificate not verified")).toMatch(/tenant MX certificate/);
    expect(reasonHint("Host or domain name not found. Name service error for name=x.example type=A")).toMatch(
      /per_sender_relayhosts/,
    );
    expect(reasonHint("250 2.0.0 OK")).toBeUndefined();
    // Exchange Online's 2025-26 answers: Reject Direct Send, the onmicrosoft.com cap, TERRL.
    expect(
      reasonHint(
        "host new-example.mail.protection.outlook.com[…] said: 550 5.7.68 TenantInboundAttribution; " +
          "Direct Send not allowed for this organization from unauthorized sources",
      ),
    ).toMatch(/RejectDirectSend.*TlsSenderCertificateName/);
    expect(reasonHint("said: 550 5.7.236 Access denied, ... onmicrosoft.com ...")).toMatch(
      /100 external recipients/,
    );
    expect(reasonHint("said: 550 5.7.233 tenant has exceeded its external recipient rate limit")).toMatch(
      /TERRL/,
    );
  });

  it("certificates: near expiry is a problem, no client authentication usage a warning", () => {
    const s = healthy();
    s.certificates[0] = {
      ...s.certificates[0],
      daysLeft: 9,
      clientAuth: false,
      usages: "TLS Web Server Authentication",
    };
    const v = assessNode("lon1", s, bundle, DEFAULT_LIMITS);
    expect(v.problems).toEqual([expect.stringContaining("node certificate expires in 9 days")]);
    expect(v.warnings).toEqual([expect.stringContaining("carries no TLS client authentication usage")]);
  });

  it("a next hop without a verified handshake, held mail and a stopped Postfix are problems", () => {
    const s = healthy();
    s.postfixRunning = false;
    s.queue.counts.hold = 2;
    s.nexthops[0] = { ...s.nexthops[0], ok: false, detail: refused };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([
      "Postfix is not running",
      expect.stringContaining("2 message(s) on hold"),
      expect.stringMatching(/^tenant new_example next hop .*Connection refused \(hint: the tenant next hop/),
    ]);
  });

  it("monitor mode: unsigned mail is a warning that says not to enforce yet; enforce refusals are counts", () => {
    const s = healthy();
    s.pinning = [
      {
        domain: "old.example",
        mode: "monitor",
        pass: 117,
        fail: 3,
        temperror: 0,
        reasons: [{ reason: "no DKIM signature by old.example or tenanta.onmicrosoft.com", count: 3 }],
      },
      { domain: "legacy.example", mode: "enforce", pass: 9, fail: 4, temperror: 1, reasons: [] },
    ];
    const v = assessNode("lon1", s, bundle, DEFAULT_LIMITS);
    expect(v.problems).toEqual([]);
    expect(v.warnings).toEqual([
      "old.example (monitor): 3 of 120 message(s) would be refused: 3 × no DKIM signature by old.example or " +
        "tenanta.onmicrosoft.com (hint: Exchange Online did not DKIM-sign them: do not enforce dkim= for this " +
        'domain yet; docs/tenant-pinning.md, "Which connector type tenant A sends through")',
      "legacy.example (enforce): 1 message(s) deferred because a check could not decide (DNS)",
    ]);
    // Every message passing in monitor mode: nothing to warn about.
    s.pinning = [{ ...s.pinning[0], pass: 120, fail: 0, reasons: [] }];
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).warnings).toEqual([]);
  });

  it("a pinning milter that does not answer is a problem; restarts by systemd a warning", () => {
    const s = healthy();
    s.milter = { answering: false, restarts: 7, socket: "/var/spool/postfix/header-rewrite/pin.sock" };
    const v = assessNode("lon1", s, bundle, DEFAULT_LIMITS);
    expect(v.problems).toEqual([
      expect.stringMatching(
        /^the tenant-pinning milter does not answer on \/var\/spool\/postfix\/header-rewrite\/pin\.sock: every message gets a 4xx/,
      ),
    ]);
    expect(v.warnings).toEqual([expect.stringContaining("restarted 7 time(s) by systemd")]);
    s.milter = { ...s.milter, answering: true, restarts: 0 };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS)).toMatchObject({ problems: [], warnings: [] });
  });

  it("a clock not synchronised, or more than 10 s off, is a problem naming it", () => {
    const s = healthy();
    s.clock = {
      service: "chrony",
      synchronized: false,
      offset: 0,
      detail: "Not synchronised, source 0.0.0.0 (stratum 0)",
    };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([
      expect.stringMatching(
        /^the clock is not synchronised \(Not synchronised, .*\): the pinning milter defers \(4xx\)/,
      ),
    ]);
    s.clock = { ...s.clock, synchronized: true, offset: 10800.0001 };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([
      expect.stringMatching(/^the clock is 10800\.0 s slow \(/),
    ]);
    s.clock = { ...s.clock, offset: -12.5 };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([
      expect.stringMatching(/^the clock is 12\.5 s fast/),
    ]);
    s.clock = { ...s.clock, offset: 9.9 };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([]);
    s.clock = {
      service: null,
      synchronized: false,
      offset: null,
      detail: "no time service: chrony is not installed (apt-get install chrony)",
    };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS).problems).toEqual([
      expect.stringContaining(
        "not synchronised (no time service: chrony is not installed (apt-get install chrony))",
      ),
    ]);
  });

  it("a live release Postfix has not loaded is a problem; one not yet checked a warning", () => {
    const s = healthy();
    s.release = { ...s.release!, loaded: false, checked: false };
    const v = assessNode("lon1", s, bundle, DEFAULT_LIMITS);
    expect(v.problems).toEqual([
      expect.stringMatching(
        /^\/etc\/postfix\.releases\/r2 is live but Postfix still runs the release it loaded before/,
      ),
    ]);
    s.release = { ...s.release, loaded: true };
    expect(assessNode("lon1", s, bundle, DEFAULT_LIMITS)).toMatchObject({
      problems: [],
      warnings: [expect.stringMatching(/^bundle \w{12} is live without passing its post-deploy check/)],
    });
  });

  it("tenant B's recipient budget: summed over the nodes, a warning from 80 %, a problem at the limit", () => {
    const v = (sent: number) =>
      assessNode(
        "n",
        { ...healthy(), deliveries: { new_example: { sent, bounced: [] } } },
        bundle,
        DEFAULT_LIMITS,
      );
    expect(recipientBudget([v(500), v(300)], { new_example: 1000 })).toEqual([
      expect.objectContaining({ tenant: "new_example", sent: 800, warning: expect.stringContaining("80 %") }),
    ]);
    expect(recipientBudget([v(600), v(400)], { new_example: 1000 })[0].problem).toContain(
      "the limit is reached",
    );
    expect(recipientBudget([v(10)], {})).toEqual([{ tenant: "new_example", sent: 10 }]);
    // Tenant B's licence count instead of a number: TERRL = 500 × 200^0.7 + 9,500 = 29,902.86 (MC1023294).
    const licensed = recipientBudget([v(24_000)], { new_example: { licensedUsers: 200 } })[0];
    expect(licensed).toMatchObject({
      limit: 29_902,
      limitHow: "500 × 200^0.7 + 9,500 for 200 licensed users (TERRL, MC1023294)",
      warning: "tenant new_example: 24000 of 29902 recipients in 24 h (80 %)",
    });
    expect(formatReport([], [licensed])).toBe(
      "recipients to new_example in 24 h: 24000 of 29902 (80 %) over 80 %; " +
        "limit = 500 × 200^0.7 + 9,500 for 200 licensed users (TERRL, MC1023294)",
    );
    // One licence: the floor of the formula, 10,000.
    expect(recipientBudget([v(1)], { new_example: { licensedUsers: 1 } })[0].limit).toBe(10_000);
  });

  it("the status script is valid bash and carries the collector as valid Python", () => {
    const script = statusScript(bundle, statusSpec(cfg, bundle, 24));
    expect(sh("bash -n", script).status).toBe(0);
    const program = script.split("\n").slice(3, -2).join("\n");
    const r = sh(`/usr/bin/python3 -c 'import ast, sys; ast.parse(sys.stdin.read())'`, program);
    expect(r.status, r.stderr).toBe(0);
  });
});
