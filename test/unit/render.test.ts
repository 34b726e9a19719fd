// Rendering is pure and deterministic; a change re-runs exactly the steps whose content changed.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  loadStackConfig,
  nodeIdentity,
  parseStackConfig,
  readStackFile,
} from "../../src/config/stack-config";
import { type DnsOvhCredentials, STEPS, type StepId, deploySteps } from "../../src/deploy/steps";
import { MapValidationError, loadMaps, parseMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR, PROJECT_ROOT as ROOT } from "../../src/project";
import {
  type NodeAddresses,
  type RenderContext,
  renderNode,
  renderUserData,
} from "../../src/render/node-render";
import { PLACEHOLDER_SECRETS, renderStack } from "../../src/review/offline-review";
import { committedMapsWith } from "../../sandbox/topology";
import { copyProject } from "../helpers/pulumi-mocks";
import { hostKeyIn } from "../../sandbox/host-keys";
import { editedMaps } from "../helpers/maps";

const HOST_KEY = hostKeyIn(fs.mkdtempSync(path.join(os.tmpdir(), "hr-hostkey-")), "lon1");
const cfg = loadStackConfig("lon");
const maps = loadMaps(MAPS_DIR);
const ctx: RenderContext = { stack: "lon", cfg, maps, node: nodeIdentity(cfg, "lon1") };
const mainCf = (c = ctx) => renderNode(c).files["main.cf"];
/** The scripts of every deploy step, by step. */
const scripts = (c = ctx, dns: DnsOvhCredentials = PLACEHOLDER_SECRETS.dnsCredentials) =>
  Object.fromEntries(
    deploySteps(c.cfg, renderNode(c), { dnsCredentials: dns }).map((s) => [s.id, s.script]),
  ) as Record<StepId, string>;

/** The rendered files in a directory, read back by Postfix's own postconf and postmap. */
function readByPostfix(files: Record<string, string>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-postconf-"));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const postconf = (args: string[]) => {
    const r = spawnSync("postconf", ["-c", dir, ...args], { encoding: "utf8" });
    expect(r.stderr, `postconf ${args.join(" ")}`).toBe("");
    return r.stdout;
  };
  const overrides = postconf(["-P"]);
  return {
    mainCf: files["main.cf"],
    param: (k: string) => postconf(["-h", k]).replace(/\n$/, ""),
    service: (name: string) => postconf(["-M", `${name}/unix`]),
    serviceParam: (service: string, k: string) =>
      new RegExp(`^${service}/unix/${k} = (.*)$`, "m").exec(overrides)?.[1],
    postmap: (name: string) => {
      const r = spawnSync("postmap", ["-c", dir, `cdb:${path.join(dir, name)}`], { encoding: "utf8" });
      return `${r.stdout}${r.stderr}`;
    },
  };
}

function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, "utf8");
    }
  };
  walk(dir);
  return out;
}

describe("render", () => {
  it("writes identical bytes twice for both stacks (no spurious redeploys)", () => {
    for (const stack of ["lon", "bhs"]) {
      const a = fs.mkdtempSync(path.join(os.tmpdir(), "hr-a-"));
      const b = fs.mkdtempSync(path.join(os.tmpdir(), "hr-b-"));
      renderStack(stack, a);
      renderStack(stack, b);
      const ta = tree(a);
      expect(Object.keys(ta).length).toBeGreaterThanOrEqual(13);
      expect(tree(b)).toEqual(ta);
      console.log(`render ${stack}: ${Object.keys(ta).length} files identical across two renders`);
    }
  });

  it("main.cf for lon1 matches the reviewed golden file", () => {
    const golden = fs.readFileSync(path.join(ROOT, "test", "golden", "lon1.main.cf"), "utf8");
    expect(mainCf(), "update test/golden/lon1.main.cf after reviewing the diff").toBe(golden);
  });

  it("main.cf does what docs/relay.md's table promises, as Postfix itself reads it", () => {
    const pf = readByPostfix(renderNode(ctx).files);
    const param = pf.param;
    expect(param("compatibility_level")).toBe("3.6");
    expect(param("mydestination")).toBe("$myhostname, localhost");
    // Who may relay: loopback and the allow-listed ranges; everybody else is refused outright.
    expect(param("mynetworks")).toBe("127.0.0.0/8, [::1]/128, cidr:${config_directory}/allow_relay_by_ip");
    expect(param("smtpd_client_restrictions")).toBe("permit_mynetworks, reject");
    expect(param("smtpd_relay_restrictions")).toBe("permit_mynetworks, reject_unauth_destination");
    // Which senders: the allow-list, keyed by the sender before rewriting, then a final reject.
    expect(param("smtpd_sender_restrictions")).toBe(
      "check_sender_access cdb:${config_directory}/allowed_senders, reject",
    );
    // "old.example OK" must not allow sub.old.example: access maps are not in this list.
    expect(param("parent_domain_matches_subdomains").split(/[\s,]+/)).not.toContain("smtpd_access_maps");
    // Rewrite: envelope and header senders, for tenant A's clients.
    expect(param("sender_canonical_maps")).toBe("cdb:${config_directory}/translate_domains");
    expect(param("sender_canonical_classes")).toBe("envelope_sender, header_sender");
    expect(param("local_header_rewrite_clients")).toBe("permit_mynetworks");
    expect(param("sender_dependent_relayhost_maps")).toBe("cdb:${config_directory}/per_sender_relayhosts");
    expect(param("allow_percent_hack")).toBe("no");
    expect(param("swap_bangpath")).toBe("no");
    expect(param("disable_vrfy_command")).toBe("yes");
    expect(param("alias_maps")).toBe("inline:{ { postmaster = root }, { abuse = root } }");
    // TLS: mandatory inbound, 1.2 and up both ways, verified outbound through the policy table.
    expect(param("smtpd_tls_security_level")).toBe("encrypt");
    expect(param("smtpd_tls_protocols")).toBe(">=TLSv1.2");
    expect(param("smtpd_tls_mandatory_protocols")).toBe(">=TLSv1.2");
    expect(param("smtp_tls_mandatory_protocols")).toBe(">=TLSv1.2");
    expect(param("smtp_tls_CAfile")).toBe("/etc/ssl/certs/ca-certificates.crt");
    expect(param("smtp_tls_policy_maps")).toBe("cdb:${config_directory}/tls_policy");
    // Size: Exchange Online's maximum; local delivery at least twice that (docs/relay.md, "Size").
    expect(Number(param("message_size_limit"))).toBe(150 * 1024 * 1024);
    expect(Number(param("mailbox_size_limit"))).toBeGreaterThanOrEqual(
      2 * Number(param("message_size_limit")),
    );
    expect(param("smtpd_data_restrictions")).toContain("PREPEND X-Header-Rewrite-Relayed: lon1.example.net");
    expect(param("debug_peer_list")).toBe("");
    expect(param("local_header_rewrite_clients")).not.toContain("static:all");
    for (const m of pf.mainCf.matchAll(/(cdb|cidr):(\S+)/g)) {
      expect(m[2].startsWith("${config_directory}/")).toBe(true);
    }
  });

  it("every tenant next hop gets verified TLS and its own transport, chosen by the sender after rewriting", () => {
    const bundle = renderNode(ctx);
    const pf = readByPostfix(bundle.files);
    const rows = (name: string) => bundle.indexedMaps.find((m) => m.name === name)!.rows;
    // tls_policy: exactly the tenant next hops, each "secure" (verified, never plaintext).
    expect(Object.fromEntries(rows("tls_policy"))).toEqual(
      Object.fromEntries(maps.tenants.map((t) => [t.nexthop, "secure"])),
    );
    // tenant_transports: keyed like per_sender_relayhosts, each naming the transport of the tenant
    // that key's next hop belongs to, and that transport exists in master.cf.
    const relayhost = Object.fromEntries(rows("per_sender_relayhosts"));
    const transports = rows("tenant_transports");
    expect(transports.map(([k]) => k).sort()).toEqual(Object.keys(relayhost).sort());
    for (const [key, transport] of transports) {
      const tenant = maps.tenants.find((t) => t.nexthop === relayhost[key])!;
      expect(transport, key).toBe(`tenant_${tenant.id}`);
      expect(pf.service(transport), `${transport} in master.cf`).toMatch(
        /^\S+ +unix +- +- +y +- +- +smtp( |$)/m,
      );
      expect(pf.serviceParam(transport, "inet_protocols"), "IPv4 only toward tenants").toBe("ipv4");
    }
    // With forceIPv4ToTenants off, the transports use both families.
    const both = readByPostfix(renderNode({ ...ctx, cfg: { ...cfg, forceIPv4ToTenants: false } }).files);
    for (const t of maps.tenants)
      expect(both.serviceParam(`tenant_${t.id}`, "inet_protocols")).toBeUndefined();
    // The committed stack: each tenant presents the certificate the nodes obtain for its own name.
    const committed = readByPostfix(renderNode(ctx).files);
    for (const t of maps.tenants)
      expect(committed.serviceParam(`tenant_${t.id}`, "smtp_tls_chain_files")).toBe(
        `/etc/letsencrypt/live/tenant-${t.id}/privkey.pem,/etc/letsencrypt/live/tenant-${t.id}/fullchain.pem`,
      );
    // Without tenantCertificates: a tenant with an operator client certificate presents it; the others
    // present the node's.
    const nodeCertOnly = { ...ctx, cfg: { ...cfg, tenantCertificates: {} } };
    const withCert = readByPostfix(
      renderNode({ ...nodeCertOnly, clientCertTenants: ["other_example"] }).files,
    );
    expect(withCert.serviceParam("tenant_other_example", "smtp_tls_chain_files")).toBe(
      "/etc/header-rewrite/client-certs/other_example.pem",
    );
    expect(withCert.serviceParam("tenant_new_example", "smtp_tls_chain_files")).toBeUndefined();
    // A tenant whose name the nodes obtain a certificate for presents that one (key, then chain).
    const obtained = { ...ctx, cfg: { ...cfg, tenantCertificates: { new_example: "relay.new.example" } } };
    expect(
      readByPostfix(renderNode(obtained).files).serviceParam("tenant_other_example", "smtp_tls_chain_files"),
    ).toBeUndefined();
    expect(
      readByPostfix(renderNode(obtained).files).serviceParam("tenant_new_example", "smtp_tls_chain_files"),
    ).toBe(
      "/etc/letsencrypt/live/tenant-new_example/privkey.pem,/etc/letsencrypt/live/tenant-new_example/fullchain.pem",
    );
  });

  it("debug peer logging appears only when configured", () => {
    const withDebug = { ...ctx, cfg: { ...cfg, debugPeers: ["192.0.2.7"] } };
    expect(mainCf(withDebug)).toMatch(/^debug_peer_list = 192\.0\.2\.7$/m);
  });

  it("a map edit changes only the Postfix step; an address-free step stays byte-identical", () => {
    const before = scripts();
    const after = scripts({ ...ctx, maps: editedMaps() });
    expect(after.postfix).not.toBe(before.postfix);
    expect(after["cloud-init"]).toBe(before["cloud-init"]);
    expect(after.certificate).toBe(before.certificate);
    expect(after["client-certificates"]).toBe(before["client-certificates"]);
    expect(scripts()).toEqual(before);
  });

  it("the null sender is refused by a generated, explained line unless allowed_senders lists it", () => {
    const nullKeys = (files: Record<string, string>) =>
      files.allowed_senders.split("\n").filter((l) => /^<>\s/.test(l));
    expect(nullKeys(renderNode(ctx).files)).toEqual([
      expect.stringMatching(/^<> +550 5\.7\.1 Null sender \(bounce or auto-reply\) is not relayed/),
    ]);
    // Listed by the operator (with a next hop): exactly that one line, no generated duplicate,
    // and postmap builds the table without a warning.
    const allowed = committedMapsWith({
      allowed_senders: ["<> OK"],
      per_sender_relayhosts: ["<> [new-example.mail.protection.outlook.com]"],
    });
    const bundle = renderNode({ ...ctx, maps: allowed });
    expect(nullKeys(bundle.files)).toEqual([expect.stringMatching(/^<> +OK$/)]);
    expect(
      bundle.indexedMaps.find((m) => m.name === "allowed_senders")!.rows.filter(([k]) => k === "<>"),
    ).toEqual([["<>", "OK"]]);
    const pf = readByPostfix(bundle.files);
    expect(pf.postmap("allowed_senders")).toBe("");
  });
});

describe("stack configuration errors name the file, the key and the fix", () => {
  const base = readStackFile(ROOT, "lon");
  const attempt = (raw: Record<string, unknown>, region: string | undefined = base.region) => {
    try {
      parseStackConfig(raw, region, "Pulumi.lon.yaml");
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
    throw new Error("expected a ConfigError");
  };
  it("missing key", () => {
    const { nodes: _n, ...rest } = base.raw;
    expect(attempt(rest)).toContain("Pulumi.lon.yaml: invalid stack configuration");
    expect(attempt(rest)).toContain(
      "header-rewrite:nodes is required (hint: pulumi config set header-rewrite:nodes",
    );
  });
  it("misspelt key", () => {
    expect(attempt({ ...base.raw, node: ["x"] })).toContain("header-rewrite:node is not a known key");
  });
  it("wrong type and bad values", () => {
    expect(attempt({ ...base.raw, messageSizeLimit: "999999999999" })).toContain(
      "header-rewrite:messageSizeLimit must be <= 157286400",
    );
    expect(attempt({ ...base.raw, adminCidrs: '["0.0.0.0/0"]' })).toContain(
      "opens SSH to the whole Internet",
    );
    expect(attempt({ ...base.raw, adminCidrs: '["198.51.100.300/32"]' })).toContain(
      'adminCidrs item 0 "198.51.100.300/32" is not a CIDR',
    );
    // A value of neither accepted form is one problem, named by its item, with the forms as the hint.
    const limits = attempt({ ...base.raw, tenantRecipientLimits: '{"new_example": {"licences": 200}}' });
    expect(limits).toContain(
      "header-rewrite:tenantRecipientLimits item new_example has none of the accepted forms " +
        "(hint: Per tenant id, tenant B's external recipients per 24 h (TERRL): a number, or {licensedUsers: N}",
    );
    expect(limits.split("\n  - ")).toHaveLength(2);
    const licensed = { ...base.raw, tenantRecipientLimits: '{"new_example": {"licensedUsers": 200}}' };
    expect(parseStackConfig(licensed, base.region, "Pulumi.lon.yaml").tenantRecipientLimits).toEqual({
      new_example: { licensedUsers: 200 },
    });
    // A nested object's missing key is that object's, not the namespace's.
    expect(
      attempt({ ...base.raw, servers: '{"lon1": {"ipv4": "203.0.113.9", "ipv6": "2001:db8::9"}}' }),
    ).toContain("header-rewrite:servers item lon1 must have required property 'hostKey'");
  });
  it("an image, resolver or rebuild the program cannot honour", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ image: "Ubuntu 24.04" }, "header-rewrite:image must be equal to one of the allowed values"],
      [{ image: "Ubuntu 24.04" }, "(hint: OVH image the servers boot (Debian 12, Debian 13))"],
      [{ dnsResolvers: '["dns.example"]' }, 'dnsResolvers item 0 "dns.example" is not an IP address'],
      [{ rebuildNodes: '["lon1"]' }, "rebuildNodes replaces servers, which protectServers forbids"],
      [{ rebuildNodes: '["lon2"]', protectServers: "false" }, 'rebuildNodes names "lon2", which is not in'],
      [
        { image: "Debian 13", acmeChallenge: "dns-01" },
        "which Debian 13 does not package (python3-certbot-dns-ovh",
      ],
    ];
    for (const [change, message] of cases) expect(attempt({ ...base.raw, ...change })).toContain(message);
  });
  it("missing region", () => {
    expect(attempt(base.raw, "")).toContain("openstack:region is required");
  });
  it("a project ID under openstack:tenantName (the provider reads a name there)", () => {
    let message = "";
    try {
      parseStackConfig(base.raw, base.region, "Pulumi.lon.yaml", "0123456789abcdef0123456789abcdef");
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("openstack:tenantName holds a project ID");
    expect(message).toContain("pulumi config set openstack:tenantId");
    expect(() =>
      parseStackConfig(base.raw, base.region, "Pulumi.lon.yaml", "8697178539611767"),
    ).not.toThrow();
  });
});

describe("map errors stop everything with file:line", () => {
  it("reports a bad key form with its line", () => {
    try {
      parseMaps({
        translate_domains: "@old.example @new.example\n",
        allowed_senders: "# c\n\n@old.example OK\n",
        per_sender_relayhosts: "@new.example [new-example.mail.protection.outlook.com]\n",
        allow_relay_by_ip: "192.0.2.0/24 OK\n",
        tenant_pins: "old.example enforce dkim=old.example\n",
        calendar_addresses: "",
      });
      throw new Error("expected MapValidationError");
    } catch (e) {
      expect(e).toBeInstanceOf(MapValidationError);
      expect((e as Error).message).toContain(
        'maps/allowed_senders:3:1: error: "@old.example" is not an access(5) key and never matches ' +
          '(hint: write the bare domain "old.example"',
      );
    }
  });
});

describe("firewall", () => {
  it("opens TCP 80 only for the http-01 challenge", async () => {
    const { firewallRules } = await import("../../src/cloud/region");
    expect(firewallRules(cfg, maps).filter((r) => r.port === 80)).toHaveLength(2);
    expect(
      firewallRules({ ...cfg, acmeChallenge: "dns-01" }, maps).filter((r) => r.port === 80),
    ).toHaveLength(0);
  });
  it("the exporters listen beyond loopback only when the security group opens them (monitoringCidrs)", async () => {
    const { firewallRules } = await import("../../src/cloud/region");
    const listens = (c: RenderContext) =>
      [...scripts(c).metrics.matchAll(/--web\.listen-address=([\d.]*):(\d+)/g)].map(
        (m) => `${m[1] || "*"}:${m[2]}`,
      );
    expect(firewallRules(cfg, maps).some((r) => r.port === 9100)).toBe(false);
    expect(listens(ctx).sort()).toEqual(["127.0.0.1:9100", "127.0.0.1:9154"]);
    const monitored = { ...ctx, cfg: { ...cfg, monitoringCidrs: ["198.51.100.9/32"] } };
    expect(firewallRules(monitored.cfg, maps).filter((r) => r.port === 9100 || r.port === 9154)).toHaveLength(
      2,
    );
    expect(listens(monitored).sort()).toEqual(["*:9100", "*:9154"]);
  });
});

describe("npm run render", () => {
  it("writes every node's files and explains a wrong stack name", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "hr-cli-"));
    const ok = spawnSync("npm", ["run", "-s", "render", "--", "--stack", "bhs", "--out", out], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("PLACEHOLDERS");
    for (const f of [
      "postfix/main.cf",
      "postfix/translate_domains",
      "cloud-init/user-data",
      "network/10-header-rewrite-public.network",
      "network/header-rewrite-network",
    ]) {
      expect(fs.existsSync(path.join(out, "bhs1", f)), f).toBe(true);
    }
    // Every step the node runs, in the order it runs, and the drain its removal runs; all valid bash.
    const deploy = path.join(out, "bhs1", "deploy");
    expect(fs.readdirSync(deploy)).toEqual([
      ...STEPS.map((id, i) => `${i + 1}-${id}.sh`),
      "on-removal-drain.sh",
    ]);
    for (const f of fs.readdirSync(deploy)) {
      const syntax = spawnSync("bash", ["-n", path.join(deploy, f)], { encoding: "utf8" });
      expect(syntax.status, `${f}: ${syntax.stderr}`).toBe(0);
    }
    const bad = spawnSync("npm", ["run", "-s", "render", "--", "--stack", "paris", "--out", out], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("Pulumi.paris.yaml: invalid stack configuration");
    expect(bad.stderr).toContain("stacks are bhs, lon");
  });
});

describe("tenant certificates, as the node installs and Postfix presents them", () => {
  // (What the certificate step runs is tested in test/node/certificate-step.test.ts.)
  const addresses: NodeAddresses = {
    mac: "fa:16:3e:00:00:0a",
    ipv4: { address: "203.0.113.10", gateway: "203.0.113.1" },
    ipv6: { address: "2001:db8:ffff::a", gateway: "2001:db8:ffff::1" },
    dns: ["192.0.2.53"],
  };
  const obtaining = { ...ctx, cfg: { ...cfg, tenantCertificates: { new_example: "relay.new.example" } } };
  it("Debian 12 installs certbot's OVH plugin; Debian 13, which lacks it, installs lego and presents lego's files", () => {
    expect(renderUserData(obtaining, addresses, HOST_KEY)).toContain('"python3-certbot-dns-ovh"');
    const trixie = { ...obtaining, cfg: { ...obtaining.cfg, image: "Debian 13" } };
    expect(renderNode(trixie).tenantCertTool).toBe("lego");
    expect(renderUserData(trixie, addresses, HOST_KEY)).toContain('"lego"');
    expect(
      readByPostfix(renderNode(trixie).files).serviceParam("tenant_new_example", "smtp_tls_chain_files"),
    ).toBe(
      "/etc/header-rewrite/lego/certificates/relay.new.example.key,/etc/header-rewrite/lego/certificates/relay.new.example.crt",
    );
  });
});

describe("npm run render (the CLI)", () => {
  const render = (project: string, ...args: string[]) =>
    spawnSync(
      path.join(ROOT, "node_modules", ".bin", "tsx"),
      [path.join(project, "scripts", "render.ts"), ...args],
      {
        cwd: project,
        encoding: "utf8",
      },
    );
  const addresses: NodeAddresses = {
    mac: "fa:16:3e:aa:bb:cc",
    ipv4: { address: "192.0.2.44", gateway: "192.0.2.1" },
    ipv6: { address: "2001:db8:44::44", gateway: "2001:db8:44::1" },
    dns: ["192.0.2.2"],
  };
  const withFile = (content: string) => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "hr-addr-")), "addresses.json");
    fs.writeFileSync(file, content);
    return file;
  };

  it("renders a dns-01 stack with placeholder credentials, marked in the file that holds them", () => {
    const copy = copyProject();
    const stackFile = path.join(copy, "Pulumi.bhs.yaml");
    fs.writeFileSync(
      stackFile,
      fs
        .readFileSync(stackFile, "utf8")
        .replace("header-rewrite:image: Debian 13", "header-rewrite:image: Debian 12")
        .concat("  header-rewrite:acmeChallenge: dns-01\n"),
    );
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-"));
    const r = render(copy, "--stack", "bhs", "--out", out);
    expect(r.status, r.stderr).toBe(0);
    const cert = fs.readFileSync(path.join(out, "bhs1", "deploy", "2-certificate.sh"), "utf8");
    expect(cert.split("\n")[1]).toMatch(
      /^# PLACEHOLDER: OVH API credentials stand in for the secret header-rewrite:acmeDnsOvhCredentials/,
    );
    expect(cert).toContain("dns_ovh_application_key = PLACEHOLDER-application-key");
    expect(spawnSync("bash", ["-n"], { input: cert }).status).toBe(0);
    expect(r.stdout).toContain(
      `secrets are PLACEHOLDERS (marked) in: ${path.join(out, "bhs1", "cloud-init", "user-data")}, ` +
        path.join(out, "bhs1", "deploy", "2-certificate.sh"),
    );
    fs.rmSync(copy, { recursive: true, force: true });
  });

  it("marks placeholder addresses in every file holding one, and none once real ones are given", () => {
    const placeholder = fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-"));
    expect(render(ROOT, "--stack", "lon", "--out", placeholder).status).toBe(0);
    const files = tree(path.join(placeholder, "lon1"));
    const holding = Object.keys(files).filter(
      (f) => f !== "ADDRESSES.json" && files[f].includes("203.0.113.10"),
    );
    expect(holding.sort()).toEqual([
      "cloud-init/user-data",
      "network/10-header-rewrite-public.network",
      "network/header-rewrite-network",
    ]);
    for (const f of holding)
      expect(files[f], f).toMatch(/^(#![^\n]*\n|#cloud-config\n)?# PLACEHOLDER: documentation-range/);
    const given = fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-"));
    const r = render(
      ROOT,
      "--stack",
      "lon",
      "--out",
      given,
      "--addresses",
      withFile(JSON.stringify({ lon1: addresses })),
    );
    expect(r.status, r.stderr).toBe(0);
    const real = tree(path.join(given, "lon1"));
    // Only secrets remain stand-ins: the SSH host key the program creates, and the OVH API key the
    // tenant certificates need (render cannot read the stack's secrets).
    for (const [f, text] of Object.entries(real))
      if (!["cloud-init/user-data", "deploy/2-certificate.sh"].includes(f))
        expect(text, f).not.toContain("PLACEHOLDER");
    expect(real["deploy/2-certificate.sh"].split("\n").filter((l) => l.startsWith("# PLACEHOLDER"))).toEqual([
      "# PLACEHOLDER: OVH API credentials stand in for the secret header-rewrite:acmeDnsOvhCredentials. " +
        "Not deployable as written (npm run render).",
    ]);
    expect(real["cloud-init/user-data"].split("\n").filter((l) => l.includes("PLACEHOLDER"))).toEqual([
      "# PLACEHOLDER: the SSH host key stands in for the one the program creates (a secret in the stack's state). " +
        "Not deployable as written (npm run render).",
      "    PLACEHOLDER-host-key-created-by-the-program",
      '  ed25519_public: "ssh-ed25519 PLACEHOLDER-host-key-created-by-the-program"',
    ]);
    expect(real["network/10-header-rewrite-public.network"]).toContain("192.0.2.44");
    expect(r.stdout).toMatch(
      /secrets are PLACEHOLDERS \(marked\) in: .*lon1\/cloud-init\/user-data, .*lon1\/deploy\/2-certificate\.sh$/m,
    );
    expect(r.stdout).not.toMatch(/documentation-range addresses stand in/);
    expect(r.stdout, "render names the example values as validate does").toContain(
      "Pulumi.lon.yaml still holds example values pulumi preview refuses: openstack:tenantId,",
    );
  });

  it("gives each node placeholders of its own", () => {
    const copy = copyProject();
    const stackFile = path.join(copy, "Pulumi.lon.yaml");
    fs.writeFileSync(
      stackFile,
      fs.readFileSync(stackFile, "utf8").replace("    - lon1\n", "    - lon1\n    - lon2\n"),
    );
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-"));
    expect(render(copy, "--stack", "lon", "--out", out).status).toBe(0);
    const [a, b] = ["lon1", "lon2"].map(
      (n) => JSON.parse(fs.readFileSync(path.join(out, n, "ADDRESSES.json"), "utf8")) as NodeAddresses,
    );
    for (const k of ["mac", "ipv4", "ipv6"] as const) expect(a[k], k).not.toEqual(b[k]);
    const network = (n: string) =>
      fs.readFileSync(path.join(out, n, "network", "10-header-rewrite-public.network"), "utf8");
    expect(network("lon2")).toContain(b.ipv4.address);
    expect(network("lon2")).not.toContain(a.ipv4.address);
    fs.rmSync(copy, { recursive: true, force: true });
  });

  it("refuses an addresses file that is not JSON, names a node the stack lacks, or has a bad field", () => {
    const bad = (content: string) => {
      const file = withFile(content);
      const r = render(
        ROOT,
        "--stack",
        "lon",
        "--out",
        fs.mkdtempSync(path.join(os.tmpdir(), "hr-render-")),
        "--addresses",
        file,
      );
      expect(r.status).toBe(1);
      return r.stderr.replaceAll(file, "FILE");
    };
    expect(bad("{lon1:")).toMatch(
      /^FILE: invalid --addresses file; nothing was rendered:\n {2}- not JSON \(/,
    );
    expect(bad(JSON.stringify({ lon3: addresses }))).toContain(
      '  - "lon3" is not a node of stack lon (its nodes: lon1)',
    );
    const wrong = {
      lon1: { ...addresses, ipv4: { address: "2001:db8::1", gateway: "192.0.2.1" }, mac: "x" },
    };
    const said = bad(JSON.stringify(wrong));
    expect(said).toContain("  - lon1.mac must be the port's MAC address, e.g. fa:16:3e:12:34:56");
    expect(said).toContain("  - lon1.ipv4.address must be an IPV4 address");
    expect(bad(JSON.stringify({ lon1: { ...addresses, placeholder: true } }))).toContain(
      '  - lon1 is marked "placeholder": true',
    );
  });
});
