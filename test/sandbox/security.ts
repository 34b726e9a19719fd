// Security battery on the sandbox: classic open-relay address forms, spoofing, size and rate limits.
// A "trap" host answers for every recipient domain (MX and A): anything arriving there leaked.
import { expect, it } from "vitest";
import { rcptReply, readSink, refusal, sinkCount, smtpEdge, waitForMessage } from "../../sandbox/mail";
import { deliveries, onNode, queuedMessages } from "../../sandbox/node-host";
import { pollFor } from "../../sandbox/shell";
import type { Result } from "../../sandbox/shell";
import type { Suite } from "./harness";

export function securityTests(sb: Suite): void {
  const { send } = sb;

  const openRelay = "open relay: 22 classic address forms from the allowed client and the outsider";
  it(`${openRelay}; nothing reaches anyone but the sender's tenant`, async () => {
    const n = sb.t.nodes[0];
    const forms = [
      `user%partner.example@${n.fqdn}`,
      `user%partner.example@[${n.ipv4}]`,
      `"user@partner.example"@${n.fqdn}`,
      `"user%partner.example"@${n.fqdn}`,
      `partner.example!user@${n.fqdn}`,
      "partner.example!user",
      `@${n.fqdn}:user@partner.example`,
      `@${n.fqdn},@partner.example:user@relay-target.example`,
      `user@partner.example@${n.fqdn}`,
      "user@partner.example.",
      `user@[${sb.t.trap.ipv4}]`,
      `user@[IPv6:${sb.t.trap.ipv6}]`,
      "USER@PARTNER.EXAMPLE",
      `user@${n.fqdn.toUpperCase()}`,
      "user@bücher.example",
      "user@xn--bcher-kva.example",
      `${"a".repeat(300)}@partner.example`,
      `user@${"b".repeat(70)}.example`,
      "user@localhost",
      "user@[127.0.0.1]",
      `user@sub.${n.fqdn}`,
      '"user@partner.example"',
    ];
    const rows: string[][] = [];
    const accepted: { to: string; id: string }[] = [];
    const refused: string[] = [];
    for (const to of forms) {
      const inside = send(n, { from: "alice@old.example", to });
      const outside = send(n, { from: "alice@old.example", to, netns: sb.t.clients.outsider.netns });
      const out = rcptReply(outside.r);
      // From outside, every form is refused at RCPT (or before): the outsider cannot relay at all.
      expect(out, `outsider, RCPT TO:<${to}>\n${outside.r.stdout}`).toMatch(/^5\d\d /);
      refused.push(outside.id);
      const ins = rcptReply(inside.r);
      // From tenant A a form is relayed to the sender's tenant (as any recipient is) or refused for
      // good; never a 4xx, which would make Exchange Online retry it for days.
      expect(ins, `allowed client, RCPT TO:<${to}>\n${inside.r.stdout}\n${sb.explain(undefined, n)}`).toMatch(
        /^(250|5\d\d) /,
      );
      if (inside.r.status === 0) accepted.push({ to, id: inside.id });
      else refused.push(inside.id);
      rows.push([to.length > 46 ? `${to.slice(0, 43)}...` : to, ins.slice(0, 60), out.slice(0, 44)]);
    }
    // Every accepted form went to the sender's own tenant and nowhere else: delivered, or refused by
    // that tenant (a 300-character local part) and returned to the sender. The one exception is the
    // node's own name (a source route through it): local delivery on the node, to its postmaster.
    const tenant = "new-example.mail.protection.outlook.com";
    for (const { to, id } of accepted) {
      const done = await pollFor(() => {
        const d = deliveries(n, `<${id}>`).filter((x) => x.status !== "deferred");
        return d.length ? d : undefined;
      }, 30_000);
      expect(done, `RCPT TO:<${to}> accepted: where did it go?\n${sb.explain(undefined, n)}`).toBeTruthy();
      for (const d of done!) {
        const where = `RCPT TO:<${to}> -> ${JSON.stringify(d)}`;
        if (d.relay === "local") {
          expect(d.to.toLowerCase().endsWith(`@${n.fqdn}`), where).toBe(true);
          continue;
        }
        expect(d.relay, where).toBe(tenant);
        expect(d.status, where).toMatch(/^(sent|bounced)$/);
        if (d.status === "bounced") expect(d.detail, where).toContain(`host ${tenant}[`);
      }
    }
    // Nothing of this test sits in a queue waiting to go anywhere else, and nothing refused arrived.
    const ours = new Set([...accepted.map((a) => `<${a.id}>`), ...refused.map((id) => `<${id}>`)]);
    for (const x of sb.t.nodes) {
      expect(
        queuedMessages(x).filter((q) => ours.has(q.messageId)),
        `${x.name} queue`,
      ).toEqual([]);
    }
    const arrived = [...sb.t.sinks.map((s) => s.dir), sb.t.trap.dir].flatMap((d) => readSink(d));
    expect(arrived.filter((r) => refused.some((id) => r.messageId === `<${id}>`))).toEqual([]);
    const leaked = readSink(sb.t.trap.dir);
    const w = [46, 60, 44];
    console.log(
      ["form (RCPT TO)", "allowed client: reply", "outsider: reply"]
        .map((h, i) => h.padEnd(w[i]))
        .join(" | "),
    );
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join(" | "));
    console.log(
      `${accepted.length} form(s) accepted, each to the sender's tenant (or the node's postmaster) only; ` +
        `trap (the rest of the Internet) received ${leaked.length} message(s)`,
    );
    expect(leaked, JSON.stringify(leaked, null, 2)).toEqual([]);
  }, 120_000);

  const spoofs =
    "an allowed sender from the outsider, a foreign sender from tenant A, and a forged header From";
  it(`spoofing: ${spoofs} are refused`, () => {
    const n = sb.t.nodes[0];
    const cases: [string, Result, RegExp][] = [
      [
        "outsider sends as alice@old.example",
        send(n, { from: "alice@old.example", netns: sb.t.clients.outsider.netns, quitAfter: "RCPT" }).r,
        /^554 5\.7\.1 .*Client host rejected/,
      ],
      [
        "tenant A sends as eve@elsewhere.example",
        send(n, { from: "eve@elsewhere.example", quitAfter: "RCPT" }).r,
        /^554 5\.7\.1 .*Sender address rejected/,
      ],
      [
        "envelope eve@elsewhere.example, header From alice@old.example",
        send(n, { from: "eve@elsewhere.example", headers: ["From: alice@old.example"] }).r,
        /^554 5\.7\.1 .*Sender address rejected/,
      ],
    ];
    for (const [label, r, want] of cases) {
      expect(refusal(r), `${label}\n${r.stdout}`).toMatch(want);
      console.log(`${label}: ${refusal(r)}`);
    }
  });

  it("size: a message over message_size_limit gets 552 (declared or sent), and nothing reaches a sink", () => {
    const n = sb.t.nodes[0];
    const limit = Number(onNode(n, "postconf -h message_size_limit").stdout.trim());
    expect(limit).toBe(150 * 1024 * 1024);
    const before = sinkCount(sb.t);
    // Declared: the client announces the size in MAIL FROM (as Exchange Online does).
    const declared = smtpEdge(sb.t, n, "declared-size", { bytes: limit + 1 });
    expect(declared).toEqual({ code: 552, reply: "552 5.3.4 Message size exceeds fixed limit" });
    // Sent: 1 MiB over the limit without SIZE=, so the whole body really goes over the wire.
    const sent = smtpEdge(sb.t, n, "sent-size", { bytes: limit + 1048576 }) as {
      code: number;
      reply: string;
    };
    expect(sent.code, JSON.stringify(sent)).toBe(552);
    expect(sent.reply).toMatch(/^552 5\.3\.4 Error: message file too big/);
    expect(sinkCount(sb.t)).toBe(before);
    const mib = ((limit + 1048576) / 1048576).toFixed(0);
    console.log(`declared SIZE=${limit + 1}: 552 at MAIL FROM; ${mib} MiB sent: ${sent.reply}`);
  }, 200_000);

  it("rate limits: connections beyond the per-client limit get 421 and the retried message is delivered", async () => {
    const n = sb.t.nodes[1] ?? sb.t.nodes[0];
    const limit = Number(onNode(n, "postconf -h smtpd_client_connection_count_limit").stdout.trim());
    // Hold `limit` connections open from tenant A's client, then try one more, then retry after release.
    const held = smtpEdge(sb.t, n, "hold-connections", { count: limit }) as { held: number; extra: string };
    expect(held.held, JSON.stringify(held)).toBe(limit);
    expect(held.extra).toMatch(/^421 4\.7\.0 .*Error: too many connections/);
    console.log(`${limit} connections held; connection ${limit + 1}: ${held.extra}`);
    // The sender's retry after the burst goes through.
    let delivered = false;
    for (let attempt = 0; attempt < 10 && !delivered; attempt++) {
      const { r, id } = send(n, { from: "alice@old.example" });
      if (r.status === 0) delivered = !!(await waitForMessage(sb.t, id));
      else await new Promise((res) => setTimeout(res, 1000));
    }
    expect(delivered).toBe(true);
  }, 120_000);

  // Last in the battery: it uses up tenant A's connection rate on one node for a minute.
  it("rate limits: a burst beyond the connection rate gets 421, and mail retried after the window is delivered", async () => {
    const n = sb.t.nodes[1] ?? sb.t.nodes[0];
    const rate = Number(onNode(n, "postconf -h smtpd_client_connection_rate_limit").stdout.trim());
    const messages = Number(onNode(n, "postconf -h smtpd_client_message_rate_limit").stdout.trim());
    expect(rate).toBeGreaterThan(0);
    expect(messages).toBeGreaterThan(0);
    const codes = smtpEdge(sb.t, n, "burst", { count: rate + 5 }) as Record<string, number>;
    expect(codes["421"], JSON.stringify(codes)).toBeGreaterThan(0);
    console.log(`${rate + 5} connections in a burst (limit ${rate}/min): ${JSON.stringify(codes)}`);
    const { r } = send(n, { from: "alice@old.example", quitAfter: "RCPT" });
    expect(r.stdout).toMatch(/421 4\.7\.0 .*too many connection/);
    // A real sender (Exchange Online) queues on 421 and retries; after the window it goes through.
    const started = Date.now();
    let delivered = false;
    while (!delivered && Date.now() - started < 90_000) {
      await new Promise((res) => setTimeout(res, 5000));
      const { r: retry, id } = send(n, { from: "alice@old.example" });
      if (retry.status === 0) delivered = !!(await waitForMessage(sb.t, id));
    }
    expect(delivered).toBe(true);
    console.log(`throttled message delivered on retry after ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }, 180_000);
}
