// The rendered Postfix config and the staged deploy script, run by real Postfix on a node in its own
// namespaces (overlay /etc, private spool, loopback only; nothing can leave the machine).
import { describe, expect, it } from "vitest";
import { POSTFIX_RELEASES, RELEASES_KEPT } from "../../src/node-layout";
import { masterPid, onNode } from "../../sandbox/node-host";
import { committedMapsWith } from "../../sandbox/topology";
import { refusal } from "../../sandbox/mail";
import { type Result, pollUntil } from "../../sandbox/shell";
import { editedMaps } from "../helpers/maps";
import { MAIN_CF_TYPO_WARNING, expectFailedSafely, liveRelease, mainCfTypo } from "../helpers/deploys";
import {
  deferred,
  deployPostfix,
  explain as explainOn,
  lon1Bundle,
  sendLocal,
  smtpReady,
  useLon1,
} from "../helpers/node";

describe("rendered config on a real Postfix node (lon1)", () => {
  const lon1 = useLon1();
  const sh = (cmd: string, input?: string): Result => onNode(lon1(), cmd, input);
  const explain = (r: Result) => explainOn(lon1(), r);
  const live = () => liveRelease(lon1());
  const releases = () =>
    sh(`ls -1 ${POSTFIX_RELEASES}`)
      .stdout.split("\n")
      .filter((d) => /^\d{8}T/.test(d));

  it("first deploy turns /etc/postfix into a symlink to the release and starts Postfix", () => {
    expect(live()).toMatch(RELEASE);
    expect(sh("ls /etc/postfix.releases/original/postfix-files").status).toBe(0);
    expect(sh("postfix status").status).toBe(0);
  });

  it("postconf -n is clean and every map type is available", () => {
    const r = sh("postconf -n >/dev/null");
    expect(r.stderr, "postconf warnings").toBe("");
    expect(r.status).toBe(0);
    for (const m of ["translate_domains", "allowed_senders", "per_sender_relayhosts", "tls_policy"]) {
      expect(sh(`test -s /etc/postfix/${m}.cdb`).status, `${m}.cdb built`).toBe(0);
    }
  });

  it("lookups return the old-domain rewrite, the override, the exception and the routing", () => {
    const q = (key: string, map: string) => sh(`postmap -q '${key}' ${map}`).stdout.trim();
    const checks: [string, string, string][] = [
      ["@old.example", "cdb:/etc/postfix/translate_domains", "@new.example"],
      ["alice@old.example", "cdb:/etc/postfix/translate_domains", "a.smith@new.example"],
      ["ceo@old.example", "cdb:/etc/postfix/translate_domains", "ceo@old.example"],
      ["old.example", "cdb:/etc/postfix/allowed_senders", "OK"],
      ["@new.example", "cdb:/etc/postfix/per_sender_relayhosts", "[new-example.mail.protection.outlook.com]"],
      ["[other-example.mail.protection.outlook.com]", "cdb:/etc/postfix/tls_policy", "secure"],
      ["192.0.2.77", "cidr:/etc/postfix/allow_relay_by_ip", "OK"],
    ];
    for (const [key, map, want] of checks) {
      expect(q(key, map), `${key} in ${map}`).toBe(want);
      console.log(`lookup ${key} in ${map} -> ${want}`);
    }
    expect(
      sh("postmap -q 198.51.100.1 cidr:/etc/postfix/allow_relay_by_ip").status,
      "outside range not listed",
    ).toBe(1);
  });

  it("a relayed message leaves with the new sender, rewritten headers, the loop guard, toward tenant B", async () => {
    const { r } = sendLocal(lon1(), {
      from: "bob@old.example",
      to: "carol@partner.example",
      headers: ["From: Bob Example <bob@OLD.example>", "Reply-To: bob@old.example", "Cc: dave@old.example"],
    });
    expect(r.status, explain(r)).toBe(0);
    const entry = await deferred(lon1(), r);
    const id = entry.queue_id;
    expect(entry.sender).toBe("bob@new.example");
    // No DNS on this node: the failure names the next hop the relay chose, tenant B's MX.
    expect(entry.recipients[0].delay_reason).toContain("new-example.mail.protection.outlook.com");
    const headers = sh(`postcat -hq ${id}`).stdout;
    expect(headers).toMatch(/^From: Bob Example <bob@new\.example>$/m);
    expect(headers).toMatch(/^Reply-To: bob@new\.example$/m);
    expect(headers).toMatch(/^Cc: dave@old\.example$/m);
    expect(headers).toMatch(/^X-Header-Rewrite-Relayed: lon1\.example\.net$/m);
    console.log(
      `queued ${id}: sender ${entry.sender}, next hop in: ${entry.recipients[0].delay_reason?.slice(0, 90)}`,
    );
  });

  it("refuses a sender that is not allow-listed, a subdomain of an allowed domain, and the null sender", () => {
    const refuse = (from: string) => {
      const { r } = sendLocal(lon1(), { from, to: "carol@partner.example", quitAfter: "RCPT" });
      expect(r.stdout, explain(r)).toContain(`~> MAIL FROM:<${from === "<>" ? "" : from}>`);
      const line = refusal(r);
      expect(line, explain(r)).toBeTruthy();
      console.log(`MAIL FROM:<${from === "<>" ? "" : from}> -> ${line}`);
      return line!;
    };
    expect(refuse("eve@elsewhere.example")).toMatch(/^554 5\.7\.1 .*Sender address rejected: Access denied/);
    expect(refuse("bob@sub.old.example")).toMatch(/^554 5\.7\.1 .*Sender address rejected: Access denied/);
    expect(refuse("<>")).toMatch(
      /^550 5\.7\.1 <>: Sender address rejected: Null sender \(bounce or auto-reply\) is not relayed/,
    );
  });

  it("a broken deploy fails with Postfix's message and the old config stays live and relaying", () => {
    const before = liveRelease(lon1());
    const r = deployPostfix(lon1(), lon1Bundle(undefined, mainCfTypo));
    expectFailedSafely(r, MAIN_CF_TYPO_WARNING, lon1(), before);
    const dup = lon1Bundle(undefined, (f) => ({
      ...f,
      translate_domains: f.translate_domains + "@old.example @other.example\n",
    }));
    const r2 = deployPostfix(lon1(), dup);
    expectFailedSafely(r2, /postmap translate_domains: .*duplicate entry/, lon1(), before);
    const ok = sendLocal(lon1(), {
      from: "alice@old.example",
      to: "carol@partner.example",
      quitAfter: "RCPT",
    }).r;
    expect(ok.stdout, explain(ok)).toMatch(/<~ +250 2\.1\.5/);
    console.log(`broken deploys refused:\n  ${r.stderr.split("\n")[0]}\n  ${r2.stderr.split("\n")[0]}`);
  });

  it("a map edit goes live through reload without restarting Postfix", () => {
    const before = live();
    const master = masterPid(lon1());
    const r = deployPostfix(lon1(), lon1Bundle(editedMaps()));
    expect(r.status, explain(r)).toBe(0);
    expect(live()).not.toBe(before);
    expect(sh("postmap -q bob@old.example cdb:/etc/postfix/translate_domains").stdout.trim()).toBe(
      "robert@new.example",
    );
    expect(sh("postfix status").status).toBe(0);
    expect(masterPid(lon1()), "reloaded, not restarted").toBe(master);
  });

  it("a reload that fails switches back to the previous release and the deploy fails", () => {
    const before = live();
    // A postfix command whose reload fails (everything else is the real one), first on PATH.
    sh(
      `mkdir -p /run/fakebin && cat > /run/fakebin/postfix && chmod 755 /run/fakebin/postfix`,
      FAILING_RELOAD,
    );
    const r = deployPostfix(lon1(), lon1Bundle(), "/run/fakebin");
    expect(r.status, r.stdout).not.toBe(0);
    expect(r.stderr).toContain("postfix reload: simulated reload failure");
    expect(r.stderr).toContain(`switched back to ${before}`);
    expect(live(), "the previous release is live again").toBe(before);
    expect(sh("postfix status").status, "Postfix still runs").toBe(0);
    console.log(r.stderr.trim().split("\n").pop());
  });

  it("a master.cf listener that cannot bind stops the master after a 'successful' reload: the deploy switches back", async () => {
    const before = live();
    // Something else holds 127.0.0.1:2525 (bounded: it exits by itself after 60 s).
    const holder =
      "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 2525)); s.listen(); time.sleep(60)";
    sh(`nohup /usr/bin/python3 -c "${holder}" >/dev/null 2>&1 & echo $! > /run/port-holder.pid`);
    try {
      await pollUntil(
        "the port holder listens",
        () => sh("ss -Hltn 'sport = :2525' | grep -q .").status === 0,
        5000,
        100,
      );
      const taken = lon1Bundle(undefined, (f) => ({
        ...f,
        "master.cf": f["master.cf"] + "127.0.0.1:2525 inet n - y - - smtpd\n",
      }));
      const r = deployPostfix(lon1(), taken);
      expect(r.status, r.stdout).not.toBe(0);
      expect(r.stderr).toMatch(
        /Postfix stopped after taking the new configuration|127\.0\.0\.1:2525 \(port held by python3\)/,
      );
      expect(r.stderr).toContain(`switched back to ${before}`);
      expect(live(), "the previous release is live again").toBe(before);
      expect(sh("postfix status").status, "Postfix runs the previous release").toBe(0);
      console.log(r.stderr.trim().split("\n").pop());
    } finally {
      sh("kill $(cat /run/port-holder.pid) 2>/dev/null; rm -f /run/port-holder.pid");
    }
    await smtpReady(lon1());
  });

  it("a node without the cdb map type fails with the package to install, and the live config stays", () => {
    const before = live();
    // Postfix reads the map types it may load from dynamicmaps.cf, copied into the stage.
    expect(sh("sed -i.bak '/^cdb\\b/s/^/#/' /etc/postfix/dynamicmaps.cf").status).toBe(0);
    try {
      expectFailedSafely(
        deployPostfix(lon1(), lon1Bundle(editedMaps())),
        /the cdb map type is missing \(apt-get install postfix-cdb\): .*unsupported dictionary type: cdb/,
        lon1(),
        before,
      );
    } finally {
      sh("mv -f /etc/postfix/dynamicmaps.cf.bak /etc/postfix/dynamicmaps.cf");
    }
  });

  it("a change of inet_interfaces restarts Postfix (a reload does not apply it), and back", () => {
    const listening25 = () =>
      sh("ss -Hltn 'sport = :25' | awk '{print $4}' | sort").stdout.trim().split("\n");
    expect(listening25()).toEqual(["0.0.0.0:25", "[::]:25"]);
    // postconf(5): "you need to stop and start Postfix when this parameter changes"; a reload keeps
    // the old listeners (checked here once, on the live release, then put back).
    sh("postconf -e inet_interfaces=127.0.0.1 && postfix reload && sleep 1");
    expect(listening25(), "a reload does not apply inet_interfaces").toEqual(["0.0.0.0:25", "[::]:25"]);
    sh("postconf -e inet_interfaces=all && postfix reload");
    const master = masterPid(lon1());
    const loopbackOnly = lon1Bundle(undefined, (f) => ({
      ...f,
      "main.cf": f["main.cf"].replace(/^inet_interfaces = all$/m, "inet_interfaces = 127.0.0.1"),
    }));
    const r = deployPostfix(lon1(), loopbackOnly);
    expect(r.status, explain(r)).toBe(0);
    expect(r.stdout).toContain("inet_interfaces or inet_protocols changed: restarting Postfix");
    expect(masterPid(lon1()), "restarted").not.toBe(master);
    expect(listening25()).toEqual(["127.0.0.1:25"]);
    expect(deployPostfix(lon1(), lon1Bundle()).status).toBe(0);
    expect(listening25()).toEqual(["0.0.0.0:25", "[::]:25"]);
  });

  it(`keeps the ${RELEASES_KEPT} newest releases and the package original, never the live one pruned`, () => {
    const before = releases();
    for (let i = 0; i < RELEASES_KEPT + 1; i++) {
      const maps = committedMapsWith({ translate_domains: [`bob@old.example bob${i}@new.example`] });
      expect(deployPostfix(lon1(), lon1Bundle(maps)).status).toBe(0);
    }
    const after = releases();
    expect(after).toHaveLength(RELEASES_KEPT);
    expect(after).toEqual([...after].sort());
    expect(
      after.some((d) => before.includes(d)),
      "every older release was pruned",
    ).toBe(false);
    expect(`${POSTFIX_RELEASES}/${after[after.length - 1]}`).toBe(live());
    expect(sh(`test -d ${POSTFIX_RELEASES}/original`).status).toBe(0);
    expect(sh("postmap -q bob@old.example cdb:/etc/postfix/translate_domains").stdout.trim()).toBe(
      `bob${RELEASES_KEPT}@new.example`,
    );
  });

  it("a built map that lacks a rendered key, or answers another value, fails the deploy", () => {
    const before = live();
    // postmap builds these without a word; only the deploy's own lookups notice.
    const lostKey = lon1Bundle(undefined, (f) => ({
      ...f,
      translate_domains: f.translate_domains.replace(/^alice@old\.example .*\n/m, ""),
    }));
    expectFailedSafely(
      deployPostfix(lon1(), lostKey),
      /translate_domains: only (\d+) of (\d+) rendered keys are found in the built map/,
      lon1(),
      before,
    );
    const otherValue = lon1Bundle(undefined, (f) => ({
      ...f,
      translate_domains: f.translate_domains.replace("a.smith@new.example", "a.smyth@new.example"),
    }));
    expectFailedSafely(
      deployPostfix(lon1(), otherValue),
      "translate_domains: staged lookups differ from the rendered map",
      lon1(),
      before,
    );
  });
});

const RELEASE = new RegExp(
  `^${POSTFIX_RELEASES.replace(/\./g, "\\.")}/\\d{8}T\\d{6}\\.\\d{9}Z-[0-9a-f]{12}$`,
);

/** `postfix`, except that `postfix reload` fails (as a reload the master refuses would). */
const FAILING_RELOAD = `#!/bin/sh
if [ "$1" = reload ]; then echo "simulated reload failure" >&2; exit 1; fi
exec /usr/sbin/postfix "$@"
`;
