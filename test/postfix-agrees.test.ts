// Every validator rule that says "Postfix would do X" is checked here once against a real Postfix:
// the production config runs on a node namespace, the test writes the map lines the validator
// refuses straight into the live config (bypassing it), and observes what Postfix does.
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseStackConfig, readStackFile } from "../src/config";
import { MAP_FILES, loadMaps } from "../src/maps";
import { nodeIdentity, renderPostfix } from "../src/render";
import { deployPostfixScript } from "../src/deploy";
import { overlayPostfixFiles } from "../sandbox/overlay";
import { BASELINE, report } from "./helpers/cases";
import { ROOT } from "./helpers/stack";
import { NodeNamespace } from "./helpers/node";

const { raw, region, file } = readStackFile(ROOT, "lon");
const cfg = parseStackConfig(raw, region, file);
const node = nodeIdentity(cfg, "lon1");

describe("the validator and Postfix agree", () => {
  let n: NodeNamespace;
  const sh = (cmd: string) => n.run(cmd);

  /** Replaces live maps with raw text (no validation), rebuilds them, reloads Postfix. */
  const rawMaps = (texts: Record<string, string>) => {
    const all = { ...BASELINE, ...texts };
    for (const [name, text] of Object.entries(all)) {
      const r = n.run(
        `cat > /etc/postfix/${name} && { [ ${name} = allow_relay_by_ip ] || postmap cdb:/etc/postfix/${name}; }`,
        text,
      );
      expect(r.status, r.stderr).toBe(0);
    }
    expect(sh("postfix reload").status).toBe(0);
    // The validator refuses (or warns about) this very input:
    const verdict = report({ name: "raw", maps: all, expected: [] });
    expect(verdict.length, "the validator objects to this input").toBeGreaterThan(0);
    return verdict;
  };
  const send = (from: string) =>
    sh(
      `swaks --server 127.0.0.1 --tls --helo client.example --from '${from}' --to rcpt@partner.example --header 'From: ${from}' 2>&1`,
    );
  const queued = async (r: { stdout: string }) => {
    const id = /queued as (\w+)/.exec(r.stdout)?.[1];
    expect(id, r.stdout).toBeTruthy();
    for (let i = 0; i < 100; i++) {
      const e = sh("postqueue -j")
        .stdout.trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .find((x) => x.queue_id === id);
      if (e?.recipients?.[0]?.delay_reason)
        return e as { sender: string; recipients: { delay_reason: string }[] };
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`message ${id} not deferred yet`);
  };
  const refused = (r: { stdout: string }) => /<~\* +5\d\d /.test(r.stdout);

  beforeAll(async () => {
    n = await NodeNamespace.start(node.fqdn);
    const files = overlayPostfixFiles(
      renderPostfix({ stack: "lon", cfg, maps: loadMaps(path.join(ROOT, "maps")), node }),
    );
    const r = n.run("bash -s", deployPostfixScript(node, files));
    expect(r.status, r.stderr).toBe(0);
  });
  afterAll(() => n?.stop());

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
      n.run(`cat > /tmp/t.cidr`, table);
      const r = sh(`postmap -q ${ip} cidr:/tmp/t.cidr 2>&1; echo rc=$?`);
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

  it("duplicate keys: postmap warns, and the validator refuses them", () => {
    const text = "@old.example @new.example\n@OLD.example @other.example\n";
    n.run("cat > /tmp/dup", text);
    expect(sh("postmap cdb:/tmp/dup 2>&1").stdout).toContain('duplicate entry: "@old.example"');
    expect(report({ name: "raw", maps: { [MAP_FILES.translations]: text }, expected: [] })[0]).toContain(
      "duplicate key",
    );
  });
});
