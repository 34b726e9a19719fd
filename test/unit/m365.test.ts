// The Microsoft 365 scripts: parsed by a real PowerShell grammar, every cmdlet, parameter and value
// checked against Microsoft's cmdlet reference (m365/cmdlets.json), compared with reviewed golden
// files, and derived from the same maps and stacks as the relays.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { listStacks, loadStackConfig, nodeFqdn } from "../../src/config/stack-config";
import { loadMaps } from "../../src/maps/relay-maps";
import {
  M365Error,
  type FleetStack,
  m365Files,
  planM365,
  psString,
  replyRoutes,
} from "../../src/m365/tenant-scripts";
import { readMailboxes } from "../../src/review/offline-review";
import { MAPS_DIR, PROJECT_ROOT } from "../../src/project";
import { renderNode } from "../../src/render/node-render";
import { committedMapsWith } from "../../sandbox/topology";
import { exchangeSchema, parsePowershell, schemaProblems } from "../helpers/powershell";

const GOLDEN = path.join(PROJECT_ROOT, "test", "golden", "m365");
const fleet = (): FleetStack[] => listStacks().map((stack) => ({ stack, cfg: loadStackConfig(stack) }));
const committed = () => m365Files(planM365(loadMaps(MAPS_DIR), fleet()));
/** The committed stacks without tenantCertificates: every tenant is given the node certificate. */
const nodeCertificateOnly = (): FleetStack[] =>
  fleet().map((f) => ({ ...f, cfg: { ...f.cfg, tenantCertificates: {} } }));
const schema = exchangeSchema();

async function check(text: string): Promise<string[]> {
  const script = await parsePowershell(text);
  return [...script.errors, ...schemaProblems(script, schema)];
}

/** The parameters of the first command named CMDLET, as name -> values. */
async function paramsOf(text: string, cmdlet: string): Promise<Record<string, string[]>> {
  const c = (await parsePowershell(text)).commands.find((x) => x.name === cmdlet);
  if (!c) throw new Error(`no ${cmdlet} in the script`);
  return Object.fromEntries(c.params.map((p) => [p.name, p.values]));
}

describe("npm run m365: the scripts for the committed maps and stacks", () => {
  const files = committed();

  it("each tenant is given its own certificate name; two given one name: a warning in each script (MC1226222)", async () => {
    // The committed stacks: every tenant its own name, under its own accepted domain.
    expect(planM365(loadMaps(MAPS_DIR), fleet()).warnings).toEqual([]);
    for (const [id, name] of [
      ["new_example", "relay.new.example"],
      ["other_example", "relay.other.example"],
    ]) {
      const b = files[`tenant-b-${id}.ps1`];
      expect(b).not.toContain("# WARNING");
      expect((await paramsOf(b, "New-InboundConnector")).TlsSenderCertificateName).toEqual([name]);
      expect((await paramsOf(b, "Get-AcceptedDomain")).Identity).toEqual([name]);
    }
    // Without tenantCertificates both would get the node certificate's name.
    const plan = planM365(loadMaps(MAPS_DIR), nodeCertificateOnly());
    expect(plan.warnings).toEqual([
      expect.stringContaining(
        "tenants new_example, other_example are all given the certificate name *.example.net: it can be an " +
          "accepted domain of one of them only",
      ),
    ]);
    const shared = m365Files(plan);
    for (const id of ["new_example", "other_example"])
      expect(shared[`tenant-b-${id}.ps1`]).toContain(`# WARNING: ${plan.warnings[0]}\n`);
    // DANE and MTA-STS stay at Exchange Online's default on the connector to the relays: a mode tenant A
    // cannot verify (Mandatory without TLSA records) would queue and then drop its mail.
    expect(files["tenant-a.ps1"]).not.toMatch(/SmtpDaneMode|MtaStsMode/);
    // With --ip-based the certificate name attributes nothing: no warning.
    const known = nodeCertificateOnly().map((f) => ({
      ...f,
      ipv4: { lon1: "203.0.113.10", bhs1: "203.0.113.11" },
    }));
    expect(planM365(loadMaps(MAPS_DIR), known, { ipBased: true }).warnings).toEqual([]);
  });

  it("writes tenant A's and each target tenant's scripts, matching the reviewed golden files", () => {
    expect(Object.keys(files).sort()).toEqual([
      "tenant-a.ps1",
      "tenant-b-new_example.ps1",
      "tenant-b-other_example.ps1",
      "verify-tenant-a.ps1",
      "verify-tenant-b-new_example.ps1",
      "verify-tenant-b-other_example.ps1",
    ]);
    for (const [name, text] of Object.entries(files)) {
      const golden = fs.readFileSync(path.join(GOLDEN, name), "utf8");
      expect(text, `update test/golden/m365/${name} after reviewing the diff`).toBe(golden);
    }
  });

  for (const name of Object.keys(files)) {
    it(`${name}: PowerShell parses it, and every cmdlet, parameter and value is in Microsoft's reference`, async () => {
      expect(await check(files[name])).toEqual([]);
    });
  }

  it("and the same checks fail on a typo'd parameter, a wrong value, a made-up cmdlet and a broken quote", async () => {
    const a = files["tenant-a.ps1"];
    expect(await check(a.replaceAll("-TlsSettings", "-TlsSetting"))).toEqual([
      expect.stringMatching(
        /Set-OutboundConnector has no parameter -TlsSetting \(https:\/\/learn\.microsoft\.com/,
      ),
      expect.stringMatching(/New-OutboundConnector has no parameter -TlsSetting/),
    ]);
    expect((await check(a.replace(/'DomainValidation'/g, "'DomainValidaton'"))).join("\n")).toContain(
      "-TlsSettings 'DomainValidaton' is not one of EncryptionOnly, CertificateValidation, DomainValidation",
    );
    expect((await check(a.replace("Get-OutboundConnector", "Get-OutboundConector"))).join("\n")).toContain(
      "Get-OutboundConector is not in the cmdlet schema",
    );
    expect(
      (await check(a.replace("'header-rewrite relays' `", "'header-rewrite relays `"))).length,
    ).toBeGreaterThan(0);
  });

  it("tenant A routes exactly the rewritten senders, only outbound, never mail the relays already saw", async () => {
    const a = files["tenant-a.ps1"];
    const maps = loadMaps(MAPS_DIR);
    const connector = await paramsOf(a, "New-OutboundConnector");
    const nodes = fleet().flatMap((s) => s.cfg.nodes.map((n) => nodeFqdn(s.cfg, n)));
    expect(connector.SmartHosts.sort()).toEqual(nodes.sort());
    expect(connector).toMatchObject({
      ConnectorType: ["OnPremises"],
      IsTransportRuleScoped: ["$true"],
      UseMXRecord: ["$false"],
      TlsSettings: ["DomainValidation"],
      TlsDomain: ["*.example.net"],
    });
    const rule = await paramsOf(a, "New-TransportRule");
    const whole = maps.translations.filter((t) => t.kind === "domain").map((t) => t.fromDomain);
    expect(rule.SenderDomainIs.sort()).toEqual(whole.sort());
    expect(rule).toMatchObject({
      FromScope: ["InOrganization"],
      SentToScope: ["NotInOrganization"],
      RouteMessageOutboundConnector: ["header-rewrite relays"],
    });
    // The loop guard is the header and value every node stamps (main.cf's check_client_access).
    for (const s of fleet())
      for (const n of s.cfg.nodes) {
        const mainCf = renderNode({
          stack: s.stack,
          cfg: s.cfg,
          maps,
          node: { name: n, fqdn: nodeFqdn(s.cfg, n) },
        }).files["main.cf"];
        const stamped = /static:\{PREPEND ([^:]+): ([^}]+)\}/.exec(mainCf)!;
        expect(rule.ExceptIfHeaderContainsMessageHeader).toEqual([stamped[1]]);
        expect(rule.ExceptIfHeaderContainsWords).toContain(stamped[2]);
      }
    // ceo@old.example keeps its address, but per_sender_relayhosts routes it: through the relays too.
    expect(a).not.toContain("ExceptIfFrom");
    expect(a).not.toContain("New-TransportRule `\n  -Name 'header-rewrite: single addresses");
  });

  it("each target tenant: inbound connector by certificate name, accepted domain and DKIM checks", async () => {
    const b = files["tenant-b-new_example.ps1"];
    expect(await paramsOf(b, "New-InboundConnector")).toMatchObject({
      ConnectorType: ["OnPremises"],
      SenderDomains: ["*"],
      TlsSenderCertificateName: ["relay.new.example"],
    });
    const accepted = (await parsePowershell(b)).commands
      .filter((c) => c.name === "Get-AcceptedDomain")
      .map((c) => c.params[0].values[0]);
    // The certificate's domain first: attribution by certificate needs it to be an accepted domain.
    expect(accepted).toEqual(["relay.new.example", "new.example"]);
    expect(files["tenant-b-other_example.ps1"]).toContain("Get-DkimSigningConfig -Identity 'other.example'");
  });
});

describe("a map or stack edit changes the scripts exactly where expected", () => {
  const base = committed();
  const diff = (after: Record<string, string>) => Object.keys(after).filter((f) => after[f] !== base[f]);

  it("a new whole domain: tenant A's domain rule and its check (the target domain is checked already)", async () => {
    const maps = committedMapsWith({
      translate_domains: ["@third.example @new.example"],
      allowed_senders: ["third.example OK"],
      tenant_pins: ["third.example enforce dkim=tenanta.onmicrosoft.com"],
    });
    const after = m365Files(planM365(maps, fleet()));
    expect(diff(after)).toEqual(["tenant-a.ps1", "verify-tenant-a.ps1"]);
    expect((await paramsOf(after["tenant-a.ps1"], "New-TransportRule")).SenderDomainIs).toContain(
      "third.example",
    );
  });

  it("an address the relays refuse is kept away from them (ExceptIfFrom); a single address gets its rule", async () => {
    const maps = committedMapsWith({
      translate_domains: ["bob@fourth.example bob@new.example"],
      allowed_senders: ["noreply@old.example REJECT not relayed", "bob@fourth.example OK"],
      tenant_pins: ["fourth.example enforce dkim=tenanta.onmicrosoft.com"],
    });
    const a = m365Files(planM365(maps, fleet()))["tenant-a.ps1"];
    expect((await paramsOf(a, "New-TransportRule")).ExceptIfFrom).toEqual(["noreply@old.example"]);
    const rules = (await parsePowershell(a)).commands.filter((c) => c.name === "New-TransportRule");
    expect(rules.map((r) => r.params.find((p) => p.name === "From")?.values)).toEqual([
      undefined,
      ["bob@fourth.example"],
    ]);
    expect(await check(a)).toEqual([]);
  });

  it("a new node: smart hosts and loop-guard words of tenant A, nothing of tenant B", async () => {
    const grown = fleet().map((s) =>
      s.stack === "lon" ? { ...s, cfg: { ...s.cfg, nodes: [...s.cfg.nodes, "lon2"] } } : s,
    );
    const after = m365Files(planM365(loadMaps(MAPS_DIR), grown));
    expect(diff(after)).toEqual(["tenant-a.ps1", "verify-tenant-a.ps1"]);
    expect((await paramsOf(after["tenant-a.ps1"], "New-OutboundConnector")).SmartHosts).toContain(
      "lon2.example.net",
    );
  });

  it("IP-based attribution needs every node's IPv4 from the stack outputs, and says so", async () => {
    expect(() => planM365(loadMaps(MAPS_DIR), fleet(), { ipBased: true })).toThrow(M365Error);
    expect(() => planM365(loadMaps(MAPS_DIR), fleet(), { ipBased: true })).toThrow(
      /--ip-based needs every node's IPv4, and bhs1, lon1 has none: pass each stack's outputs \(pulumi stack output --json/,
    );
    const known = fleet().map((s) => ({ ...s, ipv4: { bhs1: "203.0.113.10", lon1: "203.0.113.11" } }));
    const b = m365Files(planM365(loadMaps(MAPS_DIR), known, { ipBased: true }), { ipBased: true })[
      "tenant-b-new_example.ps1"
    ];
    expect((await paramsOf(b, "New-InboundConnector")).SenderIPAddresses).toEqual([
      "203.0.113.10",
      "203.0.113.11",
    ]);
    expect(b).not.toContain("TlsSenderCertificateName");
    expect(await check(b)).toEqual([]);
  });

  it("a tenant given its own client certificate: its connector and accepted-domain check use that name", async () => {
    const shared = m365Files(planM365(loadMaps(MAPS_DIR), nodeCertificateOnly()));
    const opts = { clientCertificateNames: { new_example: "relay.new.example" } };
    const plan = planM365(loadMaps(MAPS_DIR), nodeCertificateOnly(), opts);
    const after = m365Files(plan, opts);
    // other_example keeps the node certificate, now its own: its warning goes.
    expect(Object.keys(after).filter((f) => after[f] !== shared[f])).toEqual([
      "tenant-b-new_example.ps1",
      "verify-tenant-b-new_example.ps1",
      "tenant-b-other_example.ps1",
    ]);
    expect(plan.warnings).toEqual([]);
    expect(after["tenant-b-other_example.ps1"]).not.toContain("# WARNING");
    expect(after["tenant-b-other_example.ps1"]).toContain("-TlsSenderCertificateName '*.example.net'");
    const b = after["tenant-b-new_example.ps1"];
    expect((await paramsOf(b, "New-InboundConnector")).TlsSenderCertificateName).toEqual([
      "relay.new.example",
    ]);
    expect((await paramsOf(b, "Get-AcceptedDomain")).Identity).toEqual(["relay.new.example"]);
    expect(() =>
      planM365(loadMaps(MAPS_DIR), fleet(), { clientCertificateNames: { newexample: "relay.new.example" } }),
    ).toThrow("names tenant newexample, which maps/per_sender_relayhosts does not");
    // The same name from the stacks (the nodes obtain it): same scripts; stacks that disagree are refused.
    const obtaining = nodeCertificateOnly().map((f) => ({
      ...f,
      cfg: { ...f.cfg, tenantCertificates: { new_example: "relay.new.example" } },
    }));
    expect(m365Files(planM365(loadMaps(MAPS_DIR), obtaining))).toEqual(after);
    obtaining[0].cfg.tenantCertificates = { new_example: "mx-relay.new.example" };
    expect(() => planM365(loadMaps(MAPS_DIR), obtaining)).toThrow(
      "the stacks give tenant new_example different certificate names",
    );
  });

  it("waves: the rules take only a group's members, from a date", async () => {
    // A week from the run, as an operator would plan a wave.
    const activationDate = new Date(Date.now() + 7 * 86_400_000).toISOString().replace(/\.\d+Z$/, "Z");
    const opts = { waveGroup: "relay-wave-1@old.example", activationDate };
    const a = m365Files(planM365(loadMaps(MAPS_DIR), fleet(), opts), opts)["tenant-a.ps1"];
    expect(await paramsOf(a, "New-TransportRule")).toMatchObject({
      FromMemberOf: ["relay-wave-1@old.example"],
      ActivationDate: [activationDate],
    });
    expect(await check(a)).toEqual([]);
  });
});

describe("values from maps cannot escape their quotes", () => {
  for (const hostile of [
    "o'brien@old.example",
    "x'; Remove-Mailbox -Identity * #@old.example",
    "a\u2019b\u2018c@old.example",
  ]) {
    it(JSON.stringify(hostile), async () => {
      const script = await parsePowershell(`Get-AcceptedDomain -Identity ${psString(hostile)}\n`);
      expect(script.errors).toEqual([]);
      expect(script.commands.map((c) => c.name)).toEqual(["Get-AcceptedDomain"]);
      expect(script.commands[0].params).toEqual([{ name: "Identity", values: [hostile] }]);
    });
  }
});

describe("replies reach the old mailbox: tenant B mail users from tenant A's mailbox list", () => {
  const csv = path.join(PROJECT_ROOT, "test", "fixtures", "m365", "users.csv");
  const routes = () =>
    replyRoutes(loadMaps(MAPS_DIR), readMailboxes("users.csv", fs.readFileSync(csv, "utf8")));

  it("one mail user per rewritten mailbox in the tenant that receives its new address; overrides honoured", () => {
    expect(
      routes().map((r) => `${r.mailbox.address} -> ${r.newAddress} (${r.tenantId}, ${r.mailbox.origin})`),
    ).toEqual([
      // alice has a per-address override; ceo keeps its address (exception); dave is not rewritten.
      "alice@old.example -> a.smith@new.example (new_example, users.csv:2)",
      "bob@old.example -> bob@new.example (new_example, users.csv:3)",
      "carol@legacy.example -> carol@other.example (other_example, users.csv:5)",
    ]);
  });

  it("the mail-user scripts parse, pass the schema, and create or update by the new address", async () => {
    const files = m365Files(planM365(loadMaps(MAPS_DIR), fleet()), {}, routes());
    const b = files["tenant-b-new_example-mail-users.ps1"];
    expect(await check(b)).toEqual([]);
    expect(await check(files["tenant-b-other_example-mail-users.ps1"])).toEqual([]);
    const created = (await parsePowershell(b)).commands.filter((c) => c.name === "New-MailUser");
    expect(created.map((c) => Object.fromEntries(c.params.map((p) => [p.name, p.values])))).toEqual([
      {
        Name: ["Alice Example"],
        MicrosoftOnlineServicesID: ["a.smith@new.example"],
        ExternalEmailAddress: ["alice@old.example"],
        Password: [],
      },
      {
        Name: ["Bob O'Brien"],
        MicrosoftOnlineServicesID: ["bob@new.example"],
        ExternalEmailAddress: ["bob@old.example"],
        Password: [],
      },
    ]);
    expect(b).toContain("if (Get-MailUser -Identity 'a.smith@new.example' -ErrorAction SilentlyContinue) {");
  });

  it("a bad export names the line and the export command", () => {
    expect(() => readMailboxes("u.csv", '"Mail","Name"\n"a@old.example","A"\n')).toThrow(
      "u.csv:2: needs the columns PrimarySmtpAddress and DisplayName; export with: Get-Mailbox -ResultSize Unlimited",
    );
    expect(() =>
      readMailboxes(
        "u.csv",
        '"PrimarySmtpAddress","DisplayName"\n"a@old.example","A"\n"not-an-address","B"\n',
      ),
    ).toThrow('u.csv:3: "not-an-address" is not an e-mail address (PrimarySmtpAddress)');
    expect(() => readMailboxes("u.csv", '"PrimarySmtpAddress","DisplayName"\n"a@old.example","A\n')).toThrow(
      /^u\.csv: not CSV/,
    );
  });
});

describe("npm run m365 on the command line", () => {
  const run = (args: string[]) =>
    spawnSync("npm", ["run", "-s", "m365", "--", ...args], { cwd: PROJECT_ROOT, encoding: "utf8" });
  const out = () => fs.mkdtempSync(path.join(os.tmpdir(), "hr-m365-"));

  it("writes the scripts; IP-based takes the addresses from pulumi stack output files", () => {
    const dir = out();
    const ok = run(["--out", dir]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("wrote 6 scripts");
    expect(fs.readFileSync(path.join(dir, "tenant-a.ps1"), "utf8")).toBe(committed()["tenant-a.ps1"]);

    const refused = run(["--out", out(), "--ip-based"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("--ip-based needs every node's IPv4");

    const outputs = (node: string, ipv4: string) => {
      const f = path.join(out(), `${node}.json`);
      fs.writeFileSync(
        f,
        JSON.stringify({ nodeAddresses: { [node]: { fqdn: `${node}.example.net`, ipv4 } } }),
      );
      return f;
    };
    const ipDir = out();
    const ip = run([
      "--out",
      ipDir,
      "--ip-based",
      "--outputs",
      outputs("lon1", "203.0.113.11"),
      "--outputs",
      outputs("bhs1", "203.0.113.10"),
    ]);
    expect(ip.status, ip.stderr).toBe(0);
    expect(fs.readFileSync(path.join(ipDir, "tenant-b-new_example.ps1"), "utf8")).toContain(
      "-SenderIPAddresses @('203.0.113.10', '203.0.113.11')",
    );
  });

  it("a wrong invocation says how to call it", () => {
    const usage = run([]);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain("usage: npm run m365 -- --out <dir>");
    const notJson = path.join(out(), "lon.json");
    fs.writeFileSync(notJson, "Current stack is lon");
    const bad = run(["--out", out(), "--outputs", notJson]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(`${notJson}: not JSON`);
  });
});
