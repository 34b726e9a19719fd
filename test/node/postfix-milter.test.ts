// Where a milter sees the message relative to Postfix's own rewriting, on the real Postfix the nodes
// run. Tenant pinning (issue 11) verifies tenant A's DKIM signature in a milter, and a signature
// over From only verifies if the milter sees From exactly as tenant A sent it. Postfix's documents
// do not say this plainly; this test is the evidence the design rests on.
import * as path from "node:path";
import { expect, it } from "vitest";
import { PROJECT_ROOT } from "../../src/project";
import { shellQuote as q } from "../../src/deploy/shell-text";
import { onNode } from "../../sandbox/node-host";
import { deployPostfix, lon1Bundle, sendLocal, smtpReady, useLon1 } from "../helpers/node";
import { queuedAs } from "../../sandbox/mail";
import { queue } from "../../sandbox/node-host";
import { pollFor } from "../../sandbox/shell";

const PROBE = path.join(PROJECT_ROOT, "test", "fixtures", "milter", "header-probe.py");
const lon1 = useLon1();

/** Sends bob@old.example with `From: Bob <bob@old.example>` through smtpd with the probe milter. */
async function seen(options: string[]) {
  const sh = (c: string) => onNode(lon1(), c);
  // A port of its own per call: a probe still exiting from the previous call cannot answer for it.
  const port = 10040 + options.length; // clear of the relay's own loopback ports
  const log = `/run/probe-${port}.log`;
  sh(`rm -f ${log}; setsid /usr/bin/python3 ${q(PROBE)} inet:${port}@127.0.0.1 ${log} >/dev/null 2>&1 &`);
  sh(`for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/${port}) 2>/dev/null && break; sleep 0.1; done`);
  // On port 25's own line in master.cf, which overrides main.cf: the probe instead of the pinning
  // milter, and no second pass, so what is queued is what this one cleanup made of the message.
  const set = [
    `smtpd_milters=inet:127.0.0.1:${port}`,
    "content_filter=",
    "receive_override_options=",
    ...options,
  ];
  try {
    expect(sh(`postconf -P ${set.map((s) => q(`smtp/inet/${s}`)).join(" ")} && postfix reload`).status).toBe(
      0,
    );
    await smtpReady(lon1());
    const { r } = sendLocal(lon1(), { from: "bob@old.example", headers: ["From: Bob <bob@old.example>"] });
    const id = queuedAs(r);
    const entry = await pollFor(
      () => queue(lon1()).find((e) => e.queue_id === id && e.recipients[0]?.delay_reason),
      20_000,
    );
    if (!entry) throw new Error(`message ${id} was not queued and tried:\n${r.stdout}`);
    const queuedFrom = sh(`postcat -hq ${entry.queue_id} | grep '^From:'`).stdout.trim();
    return { milter: sh(`cat ${log}`).stdout.trim().split("\n"), queuedSender: entry.sender, queuedFrom };
  } finally {
    sh(
      "pkill -f header-probe.py; for i in $(seq 50); do pgrep -f header-probe.py >/dev/null || break; sleep 0.1; done",
    );
    expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
  }
}

it("by default a milter sees the envelope as sent but From already rewritten by sender_canonical_maps", async () => {
  const s = await seen([]);
  console.log("default:", JSON.stringify(s));
  expect(s.milter).toEqual(["envelope <bob@old.example>", "From: Bob <bob@new.example>"]);
  expect(s.queuedSender).toBe("bob@new.example");
  expect(s.queuedFrom).toBe("From: Bob <bob@new.example>");
});

it("with receive_override_options=no_address_mappings it sees From as sent, and nothing is rewritten", async () => {
  const s = await seen(["receive_override_options=no_address_mappings"]);
  console.log("no_address_mappings:", JSON.stringify(s));
  expect(s.milter).toEqual(["envelope <bob@old.example>", "From: Bob <bob@old.example>"]);
  // So verification and rewriting need two passes through cleanup: verify first, rewrite after.
  expect(s.queuedSender).toBe("bob@old.example");
  expect(s.queuedFrom).toBe("From: Bob <bob@old.example>");
});
