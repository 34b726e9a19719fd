// Relay behaviour through real Postfix on both sandbox nodes (run from test/sandbox/sandbox.test.ts).
import { expect, it } from "vitest";
import { header, refusal, sinkCount, waitForMessage } from "../../sandbox/mail";
import { masterPid, onNode, queuedMessages } from "../../sandbox/node-host";
import { deployNode, nodeContext } from "../../sandbox/nodes";
import { probe, probeTable } from "../../sandbox/probe";
import { restartSink, stopSink } from "../../sandbox/services";
import type { Result } from "../../sandbox/shell";
import { MAIN_CF_TYPO_WARNING, expectFailedSafely, liveRelease, mainCfTypo } from "../helpers/deploys";
import { editedMaps } from "../helpers/maps";
import { knownImage } from "../../src/config/images";
import { NETWORK_FILE } from "../../src/render/node-render";
import { NODE_IFACE } from "../../sandbox/network";
import type { Suite } from "./harness";

export function relayTests(sb: Suite): void {
  const { send, explain } = sb;
  it("each node runs its stack's Debian release, and its own networkd found the port by MAC and configured it", () => {
    for (const n of sb.t.nodes) {
      const image = knownImage(sb.sandbox.stacks.find((s) => s.stack === n.stack)!.cfg.image);
      const r = onNode(
        n,
        `. /etc/os-release; echo "release $VERSION_ID"; postconf -h mail_version; ` +
          `networkctl status ${NODE_IFACE} --no-pager; ip -4 -o addr show dev ${NODE_IFACE}; ip -4 route; ` +
          `ip -6 -o addr show dev ${NODE_IFACE} scope global; ip -6 route show default; ` +
          `ls /etc/netplan; resolvectl dns ${NODE_IFACE}; cloud-init status`,
      );
      const out = r.stdout;
      expect(out, explain(r, n)).toContain(`release ${image.versionId}\n`);
      // The interface has a name no file mentions: only the MAC match can have found it.
      expect(out).toMatch(new RegExp(`Network File: ${NETWORK_FILE.replace(/\./g, "\\.")}`));
      expect(out).toMatch(new RegExp(`Hardware Address: ${n.mac}`));
      expect(out).toContain(`inet ${n.ipv4}/32`);
      expect(out).toMatch(new RegExp(`^default via 203\\.0\\.113\\.1 dev ${NODE_IFACE}`, "m"));
      expect(out).toContain(`inet6 ${n.ipv6}/128`);
      expect(out).toMatch(new RegExp(`^default via 2001:db8:ffff::1 dev ${NODE_IFACE}`, "m"));
      // cloud-init's first-boot DHCP-style setup is gone; the resolvers are Ext-Net's (the sandbox DNS).
      expect(out).not.toContain("50-cloud-init.yaml");
      expect(out).toContain(sb.t.dns.ipv4);
      expect(out).toContain("status: done");
      const postfix = out.split("\n")[1];
      console.log(
        `${n.name}: Debian ${image.versionId}, Postfix ${postfix}, ${NODE_IFACE} (${n.mac}) ${n.ipv4}/32 + ${n.ipv6}/128 ` +
          `from ${NETWORK_FILE}`,
      );
    }
  });

  it("npm start's probe: one message through each node reaches tenant B rewritten, over TLS", async () => {
    const rows = [];
    for (const n of sb.t.nodes) rows.push(await probe(sb.t, n));
    console.log(probeTable(rows));
    for (const row of rows)
      expect(
        row.verdict,
        `${row.node}: ${row.detail}\n${explain(
          undefined,
          sb.t.nodes.find((n) => n.name === row.node),
        )}`,
      ).toBe("ok");
  });

  it("rewrites envelope and From/Sender/Reply-To/Resent-From, keeps To/Cc and the display name, folds case", async () => {
    for (const n of sb.t.nodes) {
      const got = await sb.relayed(n, {
        from: "bob@Old.Example",
        headers: [
          'From: "Bob Example" <bob@OLD.example>',
          "Sender: bob@old.example",
          "Reply-To: Bob <bob@old.example>",
          "Resent-From: bob@old.example",
          "To: Rcpt <rcpt@partner.example>",
          "Cc: dave@old.example",
        ],
      });
      const { record, eml, sink } = got;
      expect(record.mailFrom.toLowerCase()).toBe("bob@new.example");
      expect(header(eml, "From")).toMatch(/^"Bob Example" <bob@new\.example>$/i);
      expect(header(eml, "Sender")).toMatch(/^bob@new\.example$/i);
      expect(header(eml, "Reply-To")).toMatch(/^Bob <bob@new\.example>$/i);
      expect(header(eml, "Resent-From")).toMatch(/^bob@new\.example$/i);
      expect(header(eml, "To")).toBe("Rcpt <rcpt@partner.example>");
      expect(header(eml, "Cc")).toBe("dave@old.example");
      expect(header(eml, "X-Header-Rewrite-Relayed")).toBe(n.fqdn);
      expect(sink).toBe("[new-example.mail.protection.outlook.com]");
      console.log(
        `${n.name}: MAIL FROM bob@Old.Example -> ${record.mailFrom}; From ${header(eml, "From")}; Cc kept; loop guard ${n.fqdn}`,
      );
    }
  });

  it("an override maps to its new address, an exception stays, each domain reaches its own tenant", async () => {
    const cases = [
      {
        from: "alice@old.example",
        out: "a.smith@new.example",
        sink: "[new-example.mail.protection.outlook.com]",
      },
      { from: "ceo@old.example", out: "ceo@old.example", sink: "[new-example.mail.protection.outlook.com]" },
      {
        from: "erin@legacy.example",
        out: "erin@other.example",
        sink: "[other-example.mail.protection.outlook.com]",
      },
    ];
    for (const n of sb.t.nodes) {
      for (const c of cases) {
        const got = await sb.relayed(n, { from: c.from, headers: [`From: ${c.from}`] });
        expect(got.record.mailFrom).toBe(c.out);
        expect(header(got.eml, "From")).toBe(c.out);
        expect(got.sink).toBe(c.sink);
        expect(got.record.node).toBe(n.name);
        console.log(`${n.name}: ${c.from} -> ${c.out} at ${c.sink}`);
      }
    }
  });

  it("refuses untranslated and unlisted senders at RCPT, the null sender as documented, and any outsider", () => {
    const n = sb.t.nodes[0];
    const expectRefused = (label: string, r: Result, pattern: RegExp) => {
      const line = refusal(r);
      expect(line, `${label}\n${explain(r, n)}`).toMatch(pattern);
      expect(r.stdout).toMatch(/~> RCPT TO:/);
      console.log(`${label}: ${line}`);
    };
    expectRefused(
      "untranslated domain x@untranslated.example",
      send(n, { from: "x@untranslated.example", quitAfter: "RCPT" }).r,
      /^554 5\.7\.1 .*Sender address rejected/,
    );
    expectRefused(
      "unlisted eve@elsewhere.example",
      send(n, { from: "eve@elsewhere.example", quitAfter: "RCPT" }).r,
      /^554 5\.7\.1 .*Sender address rejected/,
    );
    expectRefused(
      "null sender <>",
      send(n, { from: "<>", quitAfter: "RCPT" }).r,
      /^550 5\.7\.1 <>: Sender address rejected: Null sender/,
    );
    expectRefused(
      "outsider with an allowed sender",
      send(n, { from: "bob@old.example", netns: sb.t.clients.outsider.netns, quitAfter: "RCPT" }).r,
      /^554 5\.7\.1 .*Client host rejected: Access denied/,
    );
    const before = sinkCount(sb.t);
    const { r } = send(n, { from: "bob@old.example", netns: sb.t.clients.outsider.netns });
    expect(r.status).not.toBe(0);
    expect(sinkCount(sb.t)).toBe(before);
  });

  const mapEdit = "a map edit deployed to both nodes goes live without a restart";
  it(`${mapEdit}, and mail queued while tenant B was down arrives`, async () => {
    const sink = sb.t.sinks.find((s) => s.host === "new-example.mail.protection.outlook.com")!;
    const masters = sb.t.nodes.map(masterPid);
    stopSink(sink);
    let sinkDown = true;
    try {
      const queued = sb.t.nodes.map((n) => {
        const { r, id } = send(n, { from: "bob@old.example", headers: ["From: bob@old.example"] });
        expect(r.status, explain(r, n)).toBe(0);
        return id;
      });
      for (const n of sb.t.nodes) {
        const ctx = nodeContext(sb.t, n, sb.sandbox.stacks, editedMaps());
        const r = deployNode(sb.t, n, ctx);
        expect(r.status, explain(r, n)).toBe(0);
        // The post-deploy check cannot reach tenant B, as the release before could not: an outage
        // this map edit did not cause, so the edit stays live.
        expect(r.stderr).toMatch(
          /WARNING on \S+: tenant new_example next hop .*unchanged by this release, which stays/,
        );
        console.log(r.stdout.trim().split("\n").pop());
      }
      sb.t.nodes.forEach((n, i) => expect(masterPid(n), `${n.name} master not restarted`).toBe(masters[i]));
      for (const [i, n] of sb.t.nodes.entries()) {
        const held = queuedMessages(n).find((q) => q.messageId === `<${queued[i]}>`);
        expect(held?.entry.sender, `${n.name} keeps the message queued while the sink is down`).toBe(
          "bob@new.example",
        );
      }
      await restartSink(sb.t, sink);
      sinkDown = false;
      for (const id of queued) {
        const got = await waitForMessage(sb.t, id, 60_000);
        expect(
          got,
          `queued message ${id} delivered after the sink came back\n${explain(undefined)}`,
        ).toBeTruthy();
        expect(got!.record.mailFrom).toBe("bob@new.example"); // rewritten on arrival, before the edit
      }
      for (const n of sb.t.nodes) {
        const got = await sb.relayed(n, { from: "bob@old.example", headers: ["From: bob@old.example"] });
        expect(got.record.mailFrom, `${n.name} uses the edited map`).toBe("robert@new.example");
        console.log(
          `${n.name}: master pid unchanged, queued mail delivered, bob@old.example now -> ${got.record.mailFrom}`,
        );
      }
    } finally {
      // The next suites expect the committed maps and a running sink.
      if (sinkDown) await restartSink(sb.t, sink);
      for (const n of sb.t.nodes)
        deployNode(sb.t, n, nodeContext(sb.t, n, sb.sandbox.stacks, sb.sandbox.maps));
    }
  }, 180_000);

  it("a deliberately broken deploy fails and the node keeps relaying with the old config", async () => {
    const n = sb.t.nodes[1] ?? sb.t.nodes[0];
    const live = liveRelease(n);
    const ctx = nodeContext(sb.t, n, sb.sandbox.stacks, sb.sandbox.maps);
    const r = deployNode(sb.t, n, ctx, { edit: mainCfTypo });
    expectFailedSafely(r, MAIN_CF_TYPO_WARNING, n, live);
    console.log(`${n.name}: broken deploy refused: ${r.stderr.split("\n")[0]}`);
    const { r: ok, id } = send(n, { from: "alice@old.example", headers: ["From: alice@old.example"] });
    expect(ok.status, explain(ok, n)).toBe(0);
    expect((await waitForMessage(sb.t, id))?.record.mailFrom).toBe("a.smith@new.example");
  });
}
