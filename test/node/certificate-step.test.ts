// The certificate steps as a node runs them (node/steps/*.sh with their facts), in a private mount
// namespace whose /etc is an overlay and /usr/local/sbin an empty tmpfs: certbot and lego are stand-ins that
// record how they were called and leave the files the real ones leave. Nothing outlives the run.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadStackConfig, nodeIdentity } from "../../src/config/stack-config";
import { type DnsOvhCredentials, deploySteps } from "../../src/deploy/steps";
import { loadMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { type RenderContext, renderNode } from "../../src/render/node-render";
import { shellQuote as q } from "../../src/deploy/shell-text";

const committed = loadStackConfig("lon");
// The node's own certificate alone; the tests add tenant certificates where they are about them.
const cfg = { ...committed, tenantCertificates: {} };
const ctx: RenderContext = { stack: "lon", cfg, maps: loadMaps(MAPS_DIR), node: nodeIdentity(cfg, "lon1") };
const dns: DnsOvhCredentials = {
  endpoint: "ovh-eu",
  applicationKey: "ak",
  applicationSecret: "as-secret",
  consumerKey: "ck-secret",
};
const ACME = cfg.acmeServer;
const work: string[] = [];
afterAll(() => work.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const CERTBOT = `#!/bin/sh
echo "certbot $*" >> "$CALLS"
name=; prev=
for a; do [ "$prev" = --cert-name ] && name=$a; prev=$a; done
mkdir -p "/etc/letsencrypt/live/$name" && echo chain > "/etc/letsencrypt/live/$name/fullchain.pem"
`;
// lego leaves its account and keys world-readable: the step must close them.
const LEGO = `#!/bin/sh
echo "lego $* (OVH_CONSUMER_KEY=$OVH_CONSUMER_KEY)" >> "$CALLS"
p=; n=; prev=
for a; do case $prev in --path) p=$a ;; -d) n=$a ;; esac; prev=$a; done
c="$p/certificates/$n.crt"
case " $* " in *" run "*) mkdir -p "$p/certificates" && echo crt > "$c" && chmod 644 "$c" ;; esac
`;

interface StepRun {
  status: number;
  stdout: string;
  stderr: string;
  /** Each certbot or lego command line, in order. */
  calls: string[];
  /** Every file the step left in /etc and /usr/local/sbin: octal mode and content. */
  files: Record<string, { mode: string; text: string }>;
}

/** Runs SCRIPTS in order (then lego's daily renewal, if a step installed it) and reads what they left. */
function runSteps(...scripts: string[]): StepRun {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "hr-cert-step-"));
  work.push(d);
  fs.mkdirSync(path.join(d, "bin"));
  fs.mkdirSync(path.join(d, "py"));
  fs.writeFileSync(path.join(d, "bin", "certbot"), CERTBOT, { mode: 0o755 });
  fs.writeFileSync(path.join(d, "bin", "lego"), LEGO, { mode: 0o755 });
  fs.writeFileSync(path.join(d, "py", "certbot_dns_ovh.py"), "");
  scripts.forEach((script, i) => fs.writeFileSync(path.join(d, `step${i}.sh`), script));
  // /etc: an overlay on this machine's (users, groups), whose upper layer holds what the steps wrote.
  const harness = `set -e
mkdir ${q(d)}/etc-up ${q(d)}/etc-work
mount -t overlay overlay -o lowerdir=/etc,upperdir=${q(d)}/etc-up,workdir=${q(d)}/etc-work /etc
mount -t tmpfs tmpfs /usr/local/sbin
export PATH=${q(path.join(d, "bin"))}:$PATH PYTHONPATH=${q(path.join(d, "py"))} CALLS=${q(path.join(d, "calls"))}
touch "$CALLS"
rc=0
for i in $(seq 0 ${scripts.length - 1}); do bash ${q(d)}/step$i.sh || { rc=$?; break; }; done
if [ "$rc" = 0 ] && [ -x /usr/local/sbin/header-rewrite-lego-renew ]; then
  /usr/local/sbin/header-rewrite-lego-renew /etc/header-rewrite/lego/settings renew
fi
mkdir ${q(d)}/copy ${q(d)}/copy/etc && cp -a ${q(d)}/etc-up/. ${q(d)}/copy/etc/
tar -C / -cf - usr/local/sbin | tar -C ${q(d)}/copy -xf -
(cd ${q(d)}/copy && find . -type f -printf '%m %P\\n') > ${q(path.join(d, "files"))}
exit "$rc"
`;
  const r = spawnSync("unshare", ["--mount", "--propagation", "private", "bash", "-c", harness], {
    encoding: "utf8",
    timeout: 60_000,
  });
  const listed = fs.existsSync(path.join(d, "files")) ? fs.readFileSync(path.join(d, "files"), "utf8") : "";
  const files = Object.fromEntries(
    listed
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [mode, file] = l.split(" ");
        return [`/${file}`, { mode, text: fs.readFileSync(path.join(d, "copy", file), "utf8") }];
      }),
  );
  const calls = fs.readFileSync(path.join(d, "calls"), "utf8").trim().split("\n").filter(Boolean);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, calls, files };
}

const certificateStep = (c: RenderContext, secrets?: DnsOvhCredentials) =>
  deploySteps(c.cfg, renderNode(c), { dnsCredentials: secrets }).find((s) => s.id === "certificate")!.script;

const certonly = (name: string, rest: string) =>
  `certbot certonly --non-interactive --agree-tos --email hostmaster@example.net --server ${ACME} ` +
  `--cert-name ${name} ${rest} --key-type ecdsa --keep-until-expiring`;
const DNS_OVH = "--dns-ovh --dns-ovh-credentials /etc/letsencrypt/ovh.ini --dns-ovh-propagation-seconds 60";
const HOOK = "/etc/letsencrypt/renewal-hooks/deploy/50-header-rewrite-postfix";

describe("certificate step (run in a private mount namespace)", () => {
  it("http-01 runs certbot standalone for the node name and writes no API credentials", () => {
    const r = runSteps(certificateStep(ctx, dns));
    expect(r.status, r.stderr).toBe(0);
    expect(r.calls).toEqual([
      certonly("lon1.example.net", "-d lon1.example.net --standalone --preferred-challenges http"),
    ]);
    expect(r.files["/etc/letsencrypt/ovh.ini"]).toBeUndefined();
    expect(r.files[HOOK]).toMatchObject({ mode: "755" });
    expect(r.files[HOOK].text).toContain("postfix reload");
    expect(r.stdout).toContain("certificate for lon1.example.net is in place");
  });

  it("dns-01 uses the OVH plugin, adds the shared service name, keeps the key file root-only", () => {
    const dns01 = { ...ctx, cfg: { ...cfg, acmeChallenge: "dns-01" as const } };
    const r = runSteps(certificateStep(dns01, dns));
    expect(r.status, r.stderr).toBe(0);
    expect(r.calls).toEqual([
      certonly("lon1.example.net", `-d lon1.example.net -d relay.example.net ${DNS_OVH}`),
    ]);
    expect(r.files["/etc/letsencrypt/ovh.ini"]).toEqual({
      mode: "600",
      text:
        "dns_ovh_endpoint = ovh-eu\ndns_ovh_application_key = ak\n" +
        "dns_ovh_application_secret = as-secret\ndns_ovh_consumer_key = ck-secret\n",
    });
    expect(r.stdout).toContain("certificate for lon1.example.net, relay.example.net is in place");
    expect(() => certificateStep(dns01)).toThrow("header-rewrite:acmeDnsOvhCredentials is required");
  });

  it("a tenant certificate through certbot's OVH plugin (Debian 12), also when the node uses http-01", () => {
    const obtaining = { ...ctx, cfg: { ...cfg, tenantCertificates: { new_example: "relay.new.example" } } };
    const r = runSteps(certificateStep(obtaining, dns));
    expect(r.status, r.stderr).toBe(0);
    // The node's own certificate keeps its http-01 challenge; the tenant's name points at no node.
    expect(r.calls).toEqual([
      certonly("lon1.example.net", "-d lon1.example.net --standalone --preferred-challenges http"),
      certonly("tenant-new_example", `-d relay.new.example ${DNS_OVH}`),
    ]);
    expect(r.files["/etc/letsencrypt/ovh.ini"].mode).toBe("600");
    expect(r.stdout).toContain("client certificate for tenant new_example: relay.new.example (certbot)");
    expect(() => certificateStep(obtaining)).toThrow(
      "acmeDnsOvhCredentials is required for acmeChallenge dns-01 and for tenantCertificates",
    );
    // The committed stack: one per tenant, each under its own name.
    const both = runSteps(certificateStep({ ...ctx, cfg: committed }, dns));
    expect(both.status, both.stderr).toBe(0);
    expect(both.calls.slice(1)).toEqual([
      certonly("tenant-new_example", `-d relay.new.example ${DNS_OVH}`),
      certonly("tenant-other_example", `-d relay.other.example ${DNS_OVH}`),
    ]);
  });

  it("Debian 13 has no certbot OVH plugin: lego obtains the tenant certificate once, a daily timer renews it", () => {
    const trixie = {
      ...ctx,
      cfg: { ...cfg, image: "Debian 13", tenantCertificates: { new_example: "relay.new.example" } },
    };
    const lego =
      `lego --accept-tos --email hostmaster@example.net --server ${ACME} ` +
      "--path /etc/header-rewrite/lego --key-type ec256 --dns ovh -d relay.new.example";
    // Twice: the second deploy finds the certificate and obtains nothing; then the timer's renewal.
    const step = certificateStep(trixie, dns);
    const r = runSteps(step, step);
    expect(r.status, r.stderr).toBe(0);
    const node = certonly("lon1.example.net", "-d lon1.example.net --standalone --preferred-challenges http");
    expect(r.calls).toEqual([
      node,
      `${lego} run (OVH_CONSUMER_KEY=ck-secret)`,
      node,
      `${lego} renew --days 30 --renew-hook ${HOOK} (OVH_CONSUMER_KEY=ck-secret)`,
    ]);
    expect(r.calls.join("\n")).not.toContain("--dns-ovh");
    const legoFiles = Object.entries(r.files).filter(([f]) => f.startsWith("/etc/header-rewrite/lego/"));
    expect(legoFiles.map(([f]) => f).sort()).toEqual(
      [
        "/etc/header-rewrite/lego/certificates/relay.new.example.crt",
        "/etc/header-rewrite/lego/ovh.env",
        "/etc/header-rewrite/lego/settings",
      ].sort(),
    );
    for (const [f, { mode }] of legoFiles) expect(mode, f).toMatch(/^[67]00$/);
    expect(r.files["/etc/header-rewrite/lego/ovh.env"].text).toContain("OVH_APPLICATION_SECRET=as-secret\n");
    expect(r.files["/etc/systemd/system/header-rewrite-lego-renew.timer"].text).toContain("OnCalendar=daily");
    expect(r.files["/usr/local/sbin/header-rewrite-lego-renew"].mode).toBe("755");
    expect(r.stdout).toContain("client certificate for tenant new_example: relay.new.example (lego)");
  });
});

describe("client-certificates step (run in a private mount namespace)", () => {
  const step = (certs: Record<string, string>) =>
    deploySteps(cfg, renderNode(ctx), { clientCertificates: certs }).find(
      (s) => s.id === "client-certificates",
    )!.script;
  const dir = "/etc/header-rewrite/client-certs";
  it("installs each tenant's PEM root-only, and removes the one of a tenant that no longer has one", () => {
    const both = { new_example: "PEM new\n", other_example: "PEM other\n" };
    const r = runSteps(step(both), step({ new_example: "PEM new, renewed\n" }));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("client certificates: new_example other_example\n");
    expect(r.stdout).toContain("client certificates: new_example\n");
    expect(Object.keys(r.files).filter((f) => f.startsWith(dir))).toEqual([`${dir}/new_example.pem`]);
    expect(r.files[`${dir}/new_example.pem`]).toEqual({ mode: "600", text: "PEM new, renewed\n" });
    const none = runSteps(step(both), step({}));
    expect(none.stdout).toContain("client certificates: none\n");
    expect(Object.keys(none.files).filter((f) => f.startsWith(dir))).toEqual([]);
  });
});
