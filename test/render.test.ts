// Rendering is pure and deterministic; a change re-runs exactly the steps whose content changed.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadStackConfig, nodeIdentity, parseStackConfig, readStackFile } from "../src/config";
import { type DnsOvhCredentials, STEPS, type StepId, deploySteps } from "../src/deploy";
import { MapValidationError, loadMaps, parseMaps } from "../src/maps";
import { MAPS_DIR, PROJECT_ROOT as ROOT } from "../src/project";
import { type RenderContext, renderNode } from "../src/render";
import { renderStack } from "../src/review";
import { editedMaps } from "./helpers/maps";

const cfg = loadStackConfig("lon");
const maps = loadMaps(MAPS_DIR);
const ctx: RenderContext = { stack: "lon", cfg, maps, node: nodeIdentity(cfg, "lon1") };
const mainCf = (c = ctx) => renderNode(c).files["main.cf"];
/** The scripts of every deploy step, by step. */
const scripts = (c = ctx, dns?: DnsOvhCredentials) =>
  Object.fromEntries(
    deploySteps(c.cfg, renderNode(c), { dnsCredentials: dns }).map((s) => [s.id, s.script]),
  ) as Record<StepId, string>;

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

  it("main.cf fixes every seed mistake", () => {
    const main = mainCf();
    const param = (k: string) => new RegExp(`^${k} = (.*)$`, "m").exec(main)?.[1];
    expect(param("compatibility_level")).toBe("3.6");
    expect(param("mydestination")).toBe("$myhostname, localhost");
    expect(param("local_header_rewrite_clients")).toBe("permit_mynetworks");
    expect(param("smtpd_relay_restrictions")).toBe("permit_mynetworks, reject_unauth_destination");
    expect(param("allow_percent_hack")).toBe("no");
    expect(param("swap_bangpath")).toBe("no");
    expect(param("smtpd_tls_security_level")).toBe("encrypt");
    expect(param("smtpd_tls_mandatory_protocols")).toBe(">=TLSv1.2");
    expect(param("smtp_tls_CAfile")).toBe("/etc/ssl/certs/ca-certificates.crt");
    expect(param("smtp_tls_policy_maps")).toBe("cdb:${config_directory}/tls_policy");
    expect(Number(param("mailbox_size_limit"))).toBeGreaterThanOrEqual(Number(param("message_size_limit")));
    expect(Number(param("message_size_limit"))).toBe(150 * 1024 * 1024);
    expect(main).not.toMatch(/^debug_peer/m);
    expect(main).not.toContain("static:all");
    expect(main).toContain("PREPEND X-Header-Rewrite-Relayed: lon1.example.net");
    for (const m of main.matchAll(/(cdb|cidr):(\S+)/g))
      expect(m[2].startsWith("${config_directory}/")).toBe(true);
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
    const senders = renderNode(ctx).files.allowed_senders;
    expect(senders).toMatch(/^<> +550 5\.7\.1 Null sender/m);
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
  });
  it("missing region", () => {
    expect(attempt(base.raw, "")).toContain("openstack:region is required");
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
    const { firewallRules } = await import("../src/cloud");
    expect(firewallRules(cfg, maps).filter((r) => r.port === 80)).toHaveLength(2);
    expect(
      firewallRules({ ...cfg, acmeChallenge: "dns-01" }, maps).filter((r) => r.port === 80),
    ).toHaveLength(0);
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
      "network/interfaces",
    ]) {
      expect(fs.existsSync(path.join(out, "bhs1", f)), f).toBe(true);
    }
    // Every step the node runs, in the order it runs, and nothing else.
    expect(fs.readdirSync(path.join(out, "bhs1", "deploy"))).toEqual(
      STEPS.map((id, i) => `${i + 1}-${id}.sh`),
    );
    const bad = spawnSync("npm", ["run", "-s", "render", "--", "--stack", "paris", "--out", out], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("Pulumi.paris.yaml: invalid stack configuration");
    expect(bad.stderr).toContain("stacks are bhs, lon");
  });
});

describe("certificate step", () => {
  const dns = {
    endpoint: "ovh-eu",
    applicationKey: "ak",
    applicationSecret: "as-secret",
    consumerKey: "ck-secret",
  };
  it("http-01 runs certbot standalone for the node name and writes no API credentials", () => {
    const script = scripts(ctx, dns).certificate;
    expect(script).toContain("--standalone --preferred-challenges http");
    expect(script).toContain("-d 'lon1.example.net' \\");
    expect(script).not.toContain("ovh.ini");
    expect(spawnSync("bash", ["-n"], { input: script }).status).toBe(0);
  });
  it("dns-01 uses the OVH plugin, adds the shared service name, keeps the key file root-only", () => {
    const dns01 = { ...ctx, cfg: { ...cfg, acmeChallenge: "dns-01" as const } };
    const script = scripts(dns01, dns).certificate;
    expect(script).toContain("-d 'lon1.example.net' -d 'relay.example.net'");
    expect(script).toContain("--dns-ovh --dns-ovh-credentials /etc/letsencrypt/ovh.ini");
    expect(script).toMatch(
      /\(umask 077; cat > \/etc\/letsencrypt\/ovh\.ini <<'HEADER_REWRITE_EOF'\ndns_ovh_endpoint = ovh-eu\n/,
    );
    expect(spawnSync("bash", ["-n"], { input: script }).status).toBe(0);
    expect(() => scripts(dns01)).toThrow("header-rewrite:acmeDnsOvhCredentials is required");
  });
});
