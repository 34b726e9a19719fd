// Every validator rule that says "Postfix would do X" is checked here once against a real Postfix:
// the production config runs on a node namespace, the test writes the map lines the validator
// refuses straight into the live config (bypassing it), and observes what Postfix does.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { POSTFIX_LIVE } from "../../src/node-layout";
import { refusal, sendMail } from "../../sandbox/mail";
import { onNode } from "../../sandbox/node-host";
import type { Result } from "../../sandbox/shell";
import { BASELINE, report } from "../helpers/cases";
import { deferred, sendLocal, useLon1 } from "../helpers/node";

describe("the validator and Postfix agree", () => {
  const lon1 = useLon1();
  const sh = (cmd: string, input?: string) => onNode(lon1(), cmd, input);
  // Postfix's own address semantics, so the tenant-pinning milter (which would refuse the senders
  // these raw maps let in before Postfix's answer shows) is taken off port 25 for this file.
  beforeAll(() => {
    expect(sh("postconf -P 'smtp/inet/smtpd_milters=' && postfix reload").status).toBe(0);
  });

  /** Replaces live maps with raw text (no validation), rebuilds them, reloads Postfix. */
  const rawMaps = (texts: Record<string, string>) => {
    const all = { ...BASELINE, ...texts };
    for (const [name, text] of Object.entries(all)) {
      const file = `${POSTFIX_LIVE}/${name}`;
      const r = sh(`cat > ${file} && { [ ${name} = allow_relay_by_ip ] || postmap cdb:${file}; }`, text);
      expect(r.status, r.stderr).toBe(0);
    }
    expect(sh("postfix reload").status).toBe(0);
    // The validator refuses (or warns about) this very input:
    const verdict = report({ name: "raw", maps: all, expected: [] });
    expect(verdict.length, "the validator objects to this input").toBeGreaterThan(0);
    return verdict;
  };
  const send = (from: string) => sendLocal(lon1(), { from, headers: [`From: ${from}`] }).r;
  const queued = (r: Result) => deferred(lon1(), r);
  const refused = (r: Result) => /^5/.test(refusal(r) ?? "");

  it('access(5): "@old.example" never matches, so its senders are refused', () => {
    const v = rawMaps({ allowed_senders: "@old.example OK\n" });
    expect(refused(send("bob@old.example"))).toBe(true);
    console.log(`Postfix refuses bob@old.example; validator: ${v[0]}`);
  });

  it('access(5): "old.example" does not allow sub.old.example here (parent_domain_matches_subdomains)', () => {
    rawMaps({ allowed_senders: "old.example OK\nuser@ OK\n" }); // warning-only input: user@ at any domain
    expect(refused(send("bob@sub.old.example"))).toBe(true);
    expect(
      refused(send("user@elsewhere.example")),
      "user@ allows user at every domain, as the warning says",
    ).toBe(false);
  });

  it('canonical(5): a bare "old.example" key is a local user name and rewrites nothing', async () => {
    rawMaps({ translate_domains: "old.example new.example\n" });
    expect((await queued(send("bob@old.example"))).sender).toBe("bob@old.example");
  });

  it('canonical(5): "@old.example" does not match subdomains', async () => {
    rawMaps({ allowed_senders: "old.example OK\n.old.example OK\n" });
    expect((await queued(send("bob@sub.old.example"))).sender).toBe("bob@sub.old.example");
  });

  it("canonical(5): results are rewritten again, so a chain ends at its last link", async () => {
    rawMaps({
      translate_domains: "@old.example @new.example\n@new.example @newer.example\n",
      per_sender_relayhosts:
        "@new.example [new-example.mail.protection.outlook.com]\n@newer.example [newer-example.mail.protection.outlook.com]\n",
    });
    expect((await queued(send("bob@old.example"))).sender).toBe("bob@newer.example");
  });

  it("relayhost keyed by the OLD domain never matches: mail heads for the recipient's own MX", async () => {
    rawMaps({ per_sender_relayhosts: "@old.example [new-example.mail.protection.outlook.com]\n" });
    const e = await queued(send("bob@old.example"));
    expect(e.sender).toBe("bob@new.example");
    expect(e.recipients[0].delay_reason).toContain("partner.example");
    expect(e.recipients[0].delay_reason).not.toContain("new-example.mail.protection.outlook.com");
  });

  it("an unbracketed next hop makes Postfix look up MX records", async () => {
    rawMaps({ per_sender_relayhosts: "@new.example new-example.mail.protection.outlook.com\n" });
    expect((await queued(send("bob@old.example"))).recipients[0].delay_reason).toMatch(/type=MX/);
  });

  it('cidr: host bits and missing results make Postfix skip the line; "!net" and /0 match everyone else', () => {
    const q = (table: string, ip: string) => {
      sh(`cat > /run/t.cidr`, table);
      const r = sh(`postmap -q ${ip} cidr:/run/t.cidr 2>&1; echo rc=$?`);
      return r.stdout.trim();
    };
    const check = (line: string, ip: string, want: RegExp) => {
      const v = report({ name: "raw", maps: { allow_relay_by_ip: `${line}\n` }, expected: [] });
      expect(v.join("\n")).toMatch(/error/);
      const got = q(`${line}\n`, ip);
      expect(got).toMatch(want);
      console.log(`${line} -> postmap -q ${ip}: ${got.replace(/\n/g, " | ")}`);
    };
    check("192.0.2.7/24 OK", "192.0.2.8", /non-null host address bits[\s\S]*rc=1$/);
    check("192.0.2.0/24", "192.0.2.8", /no lookup result[\s\S]*rc=1$/);
    check("!203.0.113.0/24 OK", "198.51.100.9", /^OK\nrc=0$/);
    check("0.0.0.0/0 OK", "198.51.100.9", /^OK\nrc=0$/);
  });

  /** What Postfix's own table reader finds for KEY in TEXT (postmap -q), and the validator's verdict. */
  const lookup = (type: "cdb" | "cidr", text: string, key: string, map: string) => {
    const verdict = report({ name: "raw", maps: { [map]: text }, expected: [] });
    expect(verdict.join("\n"), "the validator objects to this input").toMatch(/error/);
    sh("cat > /run/t.map", text);
    if (type === "cdb") expect(sh("postmap cdb:/run/t.map").status).toBe(0);
    const r = sh(`postmap -q ${key} ${type}:/run/t.map`);
    return r.status === 0 ? r.stdout.trimEnd() : undefined;
  };

  it("readlline: # inside a line is part of the value, and an indented line joins the entry above, even after a comment", () => {
    expect(
      lookup("cdb", "@old.example @new.example # the new name\n", "@old.example", "translate_domains"),
    ).toBe("@new.example # the new name");
    const text = "@old.example @new.example\n# legacy domain:\n  @legacy.example @new.example\n";
    expect(lookup("cdb", text, "@old.example", "translate_domains")).toMatch(
      /^@new\.example\s+@legacy\.example @new\.example$/,
    );
    expect(lookup("cdb", text, "@legacy.example", "translate_domains")).toBeUndefined();
  });

  it("a byte order mark becomes part of the first key, which then never matches", async () => {
    const text = "\ufeff@old.example @new.example\n";
    expect(lookup("cdb", text, "@old.example", "translate_domains")).toBeUndefined();
    rawMaps({ translate_domains: text });
    expect((await queued(send("bob@old.example"))).sender).toBe("bob@old.example");
  });

  it("access(5): text after OK is ignored, and a domain joined to the line above gets no entry", () => {
    rawMaps({ allowed_senders: "old.example OK\nlegacy.example OK REJECT\n" });
    expect(refused(send("bob@legacy.example")), "REJECT after OK is ignored").toBe(false);
    rawMaps({ allowed_senders: "old.example OK\n legacy.example OK\n" });
    expect(refused(send("bob@old.example"))).toBe(false);
    expect(refused(send("bob@legacy.example")), "the joined domain is refused").toBe(true);
  });

  describe("mynetworks (allow_relay_by_ip) from a client at 198.51.100.7", () => {
    // A documentation address on the node's own loopback, so Postfix sees a client outside 127/8.
    const client = "198.51.100.7";
    beforeAll(() => expect(sh(`ip addr add ${client}/32 dev lo`).status).toBe(0));
    afterAll(() => sh(`ip addr del ${client}/32 dev lo`));
    const sendFrom = () =>
      sendMail((c) => sh(c), {
        server: client,
        from: "bob@old.example",
        headers: ["From: bob@old.example"],
        extra: `--local-interface ${client}`,
      }).r;

    it("the result is ignored: a REJECT line still lets the range relay", () => {
      rawMaps({ allow_relay_by_ip: "192.0.2.0/24 OK\n198.51.100.0/24 REJECT\n" });
      const r = sendFrom();
      expect(refusal(r), r.stdout).toBeUndefined();
    });

    it("a second range on a line is ignored: its clients may not relay", () => {
      const text = "192.0.2.0/24 OK 198.51.100.0/24\n";
      expect(lookup("cidr", text, "192.0.2.9", "allow_relay_by_ip")).toBe("OK 198.51.100.0/24");
      expect(lookup("cidr", text, client, "allow_relay_by_ip")).toBeUndefined();
      rawMaps({ allow_relay_by_ip: text });
      // smtpd_client_restrictions = permit_mynetworks, reject
      expect(refusal(sendFrom())).toMatch(/^554 5\.7\.1 <unknown\[198\.51\.100\.7\]>: Client host rejected/);
    });
  });

  it("duplicate keys: postmap warns, and the validator refuses them", () => {
    const text = "@old.example @new.example\n@OLD.example @other.example\n";
    sh("cat > /run/dup", text);
    expect(sh("postmap cdb:/run/dup 2>&1").stdout).toContain('duplicate entry: "@old.example"');
    expect(report({ name: "raw", maps: { translate_domains: text }, expected: [] })[0]).toContain(
      "duplicate key",
    );
  });
});
