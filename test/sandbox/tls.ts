// TLS through real Postfix on the sandbox nodes: certbot against Pebble, mandatory inbound TLS 1.2+,
// verified outbound TLS with the right client certificate per tenant, renewal without a restart.
import * as fs from "node:fs";
import * as path from "node:path";
import { expect, it } from "vitest";
import {
  CERTBOT_DEPLOY_HOOK,
  CLIENT_CERT_DIR,
  clientCertPath,
  tenantCertChainFiles,
  tlsPaths,
} from "../../src/node-layout";
import { readSink, refusal, waitForMessage } from "../../sandbox/mail";
import { masterPid, nodeLog, onNode, queue } from "../../sandbox/node-host";
import { deployNode, nodeContext } from "../../sandbox/nodes";
import { issueLeaf, restartSink } from "../../sandbox/services";
import { inNetns, pollFor } from "../../sandbox/shell";
import { type SandboxNode, type Sink, TENANT_CERT_LABEL } from "../../sandbox/topology";
import { knownImage } from "../../src/config/images";
import { planM365 } from "../../src/m365/tenant-scripts";
import type { Suite } from "./harness";

export function tlsTests(sb: Suite): void {
  const { send, explain } = sb;
  const pebbleRoot = () => path.join(sb.t.dir, "pebble", "root.pem");
  const sinkFor = (host: string): Sink => sb.t.sinks.find((s) => s.host === host)!;
  const relays = () => sb.t.nodes.filter((n) => n.kind !== "stock");
  /** openssl s_client from tenant A's client to a node's port 25 with STARTTLS. */
  const sClient = (n: SandboxNode, args: string) =>
    inNetns(
      sb.t.clients.allowed.netns,
      `openssl s_client -starttls smtp -connect ${n.ipv4}:25 -servername ${n.fqdn} ${args} < /dev/null 2>&1`,
      undefined,
      20_000,
    );
  const servedSerial = (n: SandboxNode) => {
    const r = sClient(n, "");
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0] ?? "";
    return inNetns(sb.t.clients.allowed.netns, "openssl x509 -noout -serial", pem).stdout.trim();
  };

  it("the certificate name the Microsoft 365 scripts trust (npm run m365) is on every node's Pebble certificate", () => {
    const plan = planM365(sb.sandbox.maps, sb.sandbox.stacks);
    const suffix = plan.certificateName.replace(/^\*/, "");
    for (const n of sb.t.nodes.filter((x) => x.kind !== "stock")) {
      const r = onNode(n, `openssl x509 -in ${tlsPaths(n.fqdn).certFile} -noout -ext subjectAltName`);
      const names = [...r.stdout.matchAll(/DNS:([^,\s]+)/g)].map((m) => m[1]);
      // A wildcard covers exactly one more label: <node>.<zone> for "*.<zone>".
      const covered = names.filter((d) => d.endsWith(suffix) && !d.slice(0, -suffix.length).includes("."));
      expect(covered, `${n.name}: ${names.join(", ")} vs ${plan.certificateName}`).toContain(n.fqdn);
      expect(plan.smartHosts).toContain(n.fqdn);
    }
  });

  it("each node's certificate came from Pebble through the production certbot step, and the full chain verifies", () => {
    for (const n of sb.t.nodes) {
      const live = onNode(n, `openssl x509 -in ${tlsPaths(n.fqdn).certFile} -noout -issuer -subject`);
      // OpenSSL 3.0 (Debian 12) prints "CN = x", 3.5 (Debian 13) "CN=x".
      expect(live.stdout).toMatch(/issuer=CN ?= ?Pebble Intermediate CA/);
      expect(live.stdout).toMatch(new RegExp(`subject=CN ?= ?${n.fqdn.replace(/\./g, "\\.")}\n`));
      expect(onNode(n, `test -x ${CERTBOT_DEPLOY_HOOK}`).status, "certbot deploy hook installed").toBe(0);
      const r = sClient(
        n,
        `-verify_return_error -verify_hostname ${n.fqdn} -CAfile ${pebbleRoot()} -showcerts`,
      );
      expect(r.stdout, r.stdout).toContain("Verify return code: 0 (ok)");
      expect(
        (r.stdout.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length,
        "leaf + intermediate served",
      ).toBe(2);
      console.log(`${n.name}: served chain of 2 verifies against Pebble's root for ${n.fqdn}`);
    }
  });

  it("inbound: plaintext MAIL FROM gets 530, TLS 1.1 is refused, TLS 1.2 and 1.3 relay", async () => {
    const n = sb.t.nodes[0];
    const plain = send(n, { from: "alice@old.example", tls: false, quitAfter: "RCPT" }).r;
    expect(refusal(plain), explain(plain, n)).toMatch(/^530 5\.7\.0 Must issue a STARTTLS command first/);
    console.log(`plaintext: ${refusal(plain)}`);
    // Lower the client's own floor so that only the server can refuse TLS 1.1.
    const old = sClient(n, "-tls1_1 -cipher DEFAULT@SECLEVEL=0");
    expect(old.stdout).toMatch(/alert protocol version/);
    expect(old.stdout).toMatch(/Cipher is \(NONE\)/);
    expect(sClient(n, "-tls1_2 -cipher DEFAULT@SECLEVEL=0").stdout).toMatch(/Protocol *: TLSv1\.2/);
    console.log("TLS 1.1 handshake refused by the node (the same client completes TLS 1.2)");
    for (const proto of ["tlsv1_2", "tlsv1_3"]) {
      const got = await sb.relayed(n, { from: "alice@old.example", extra: `--tls-protocol ${proto}` });
      const want = proto === "tlsv1_2" ? "TLSv1.2" : "TLSv1.3";
      expect(got.eml).toMatch(new RegExp(`\\(using ${want.replace(".", "\\.")} with cipher`));
      console.log(`${want} client relayed (Received header: using ${want})`);
    }
  });

  it("outbound: verified TLS over IPv4 to each tenant, presenting the certificate for that tenant's own name", async () => {
    const name = `${TENANT_CERT_LABEL}.other.example`;
    for (const n of relays()) {
      const got = await sb.relayed(n, { from: "erin@legacy.example" });
      expect(got.sink).toBe("[other-example.mail.protection.outlook.com]");
      const rec = got.record;
      expect(rec.tls?.protocol).toMatch(/^TLSv1\.[23]$/);
      expect(rec.clientAddress).toBe(n.ipv4);
      expect(rec.clientCertificate?.subject).toBe(`CN=${name}`);
      expect(rec.clientCertificate?.issuer).toMatch(/^CN=Pebble Intermediate CA/);
      expect(rec.clientCertificate?.chainLength).toBe(2);
      console.log(
        `${n.name} -> other-example over ${rec.tls?.protocol} from ${rec.clientAddress}, ` +
          `client cert ${rec.clientCertificate?.subject} (chain ${rec.clientCertificate?.chainLength})`,
      );
    }
    expect(nodeLog(sb.t.nodes[0], 10_000)).toMatch(
      /Verified TLS connection established to other-example\.mail\.protection\.outlook\.com/,
    );
  });

  for (const mode of ["wrong-name", "none"] as const) {
    const mx = mode === "none" ? "no TLS" : "a certificate for the wrong name";
    it(`outbound: a tenant MX with ${mx} makes mail defer, never bounce or go out in the clear`, async () => {
      const s = sinkFor("other-example.mail.protection.outlook.com");
      const n = sb.t.nodes[0];
      const before = readSink(s.dir).length;
      await restartSink(sb.t, s, mode);
      let fixed = false;
      try {
        const { r, id } = send(n, { from: "erin@legacy.example" });
        expect(r.status, explain(r, n)).toBe(0);
        const reason =
          (await pollFor(
            () => queue(n).find((e) => e.recipients[0]?.delay_reason)?.recipients[0].delay_reason,
            20_000,
          )) ?? "";
        expect(reason, explain(undefined, n)).toMatch(
          mode === "none" ? /TLS is required, but was not offered/ : /Server certificate not verified/,
        );
        expect(readSink(s.dir).length, "nothing reached the sink").toBe(before);
        expect(nodeLog(n, 10_000)).not.toMatch(/status=bounced/);
        console.log(`${mode}: deferred (${reason.slice(0, 80)})`);
        await restartSink(sb.t, s, "valid");
        fixed = true;
        const got = await waitForMessage(sb.t, id, 60_000);
        expect(got, explain(undefined, n)).toBeTruthy();
        expect(got!.record.tls).not.toBeNull();
        console.log(`${mode}: delivered over ${got!.record.tls?.protocol} once the sink was fixed`);
      } finally {
        // The next suites need the tenant's sink as it was.
        if (!fixed) await restartSink(sb.t, s, "valid");
      }
    });
  }

  it("an operator-supplied client certificate for one tenant is presented to that tenant only", async () => {
    const { stacks, maps } = sb.sandbox;
    const dir = path.join(sb.t.dir, "pki", "operator-other_example");
    issueLeaf(sb.t, "relay-client.example.net", ["relay-client.example.net"], dir, {
      intermediate: true,
      clientAuth: true,
    });
    const bundle =
      fs.readFileSync(path.join(dir, "privkey.pem"), "utf8") +
      fs.readFileSync(path.join(dir, "fullchain.pem"), "utf8");
    const secrets = { clientCertificates: { other_example: bundle } };
    // A tenant takes one certificate: other_example's comes from the operator instead of the nodes.
    const supplying = (n: SandboxNode) => {
      const ctx = nodeContext(sb.t, n, stacks, maps);
      const { other_example: _supplied, ...obtained } = ctx.cfg.tenantCertificates;
      return { ...ctx, cfg: { ...ctx.cfg, tenantCertificates: obtained } };
    };
    const newName = `${TENANT_CERT_LABEL}.new.example`;
    try {
      for (const n of relays()) {
        const r = deployNode(sb.t, n, supplying(n), { secrets });
        expect(r.status, explain(r, n)).toBe(0);
        expect(onNode(n, `stat -c '%a %U' ${clientCertPath("other_example")}`).stdout.trim()).toBe(
          "600 root",
        );
      }
      for (const n of relays()) {
        const other = send(n, { from: "erin@legacy.example" });
        const fresh = send(n, { from: "alice@old.example" });
        const gotOther = await waitForMessage(sb.t, other.id);
        const gotNew = await waitForMessage(sb.t, fresh.id);
        expect(gotOther?.record.clientCertificate, explain(other.r, n)).toMatchObject({
          subject: "CN=relay-client.example.net",
          chainLength: 2,
        });
        expect(gotNew?.record.clientCertificate?.subject, explain(fresh.r, n)).toBe(`CN=${newName}`);
        console.log(
          `${n.name}: other-example saw CN=relay-client.example.net (chain 2); new-example saw CN=${newName}`,
        );
      }
    } finally {
      for (const n of relays()) deployNode(sb.t, n, nodeContext(sb.t, n, stacks, maps));
    }
    for (const n of relays()) expect(onNode(n, `ls ${CLIENT_CERT_DIR}/`).stdout.trim()).toBe("");
  });

  it("tenant certificates as committed: each node obtains one per tenant (OVH API, dns-01), for that tenant only", async () => {
    const { stacks, maps } = sb.sandbox;
    // certbot's OVH plugin on Debian 12, lego on Debian 13 (src/config/images.ts): both nodes.
    const client = (n: SandboxNode) =>
      knownImage(nodeContext(sb.t, n, stacks, maps).cfg.image).certbotOvhPlugin ? "certbot" : "lego";
    const names = { new_example: "new.example", other_example: "other.example" };
    for (const n of relays()) {
      const cfg = nodeContext(sb.t, n, stacks, maps).cfg;
      expect(Object.keys(cfg.tenantCertificates).sort()).toEqual(Object.keys(names));
      for (const [id, domain] of Object.entries(names)) {
        const name = `${TENANT_CERT_LABEL}.${domain}`;
        expect(cfg.tenantCertificates[id]).toBe(name);
        const chain = tenantCertChainFiles(id, name, client(n) === "lego").split(",")[1];
        const cert = onNode(n, `openssl x509 -in ${chain} -noout -issuer -ext subjectAltName`);
        expect(cert.stdout, `${n.name} ${id}`).toMatch(/issuer=CN ?= ?Pebble Intermediate CA/);
        expect(cert.stdout).toContain(`DNS:${name}`);
      }
      if (client(n) === "lego") {
        // Renewal: the daily timer is armed, and what it starts runs, as does the program an admin
        // types without arguments (nothing due yet, so no change).
        const timer = onNode(
          n,
          "systemctl is-active header-rewrite-lego-renew.timer && " +
            "systemctl start header-rewrite-lego-renew.service && header-rewrite-lego-renew 2>&1",
        );
        expect(timer.stdout, timer.stderr).toMatch(/^active\n/);
        expect(timer.status, timer.stdout).toBe(0);
      }
    }
    // The nodes wrote (and removed) their TXT records through the API, with OVH's signed headers.
    const api = fs.readFileSync(path.join(sb.t.ovhApi.dir, "requests.log"), "utf8");
    for (const domain of Object.values(names)) {
      const zone = domain.replace(/\./g, "\\.");
      expect(api).toMatch(
        new RegExp(`POST /1\\.0/domain/zone/${zone}/record app=sandbox-application-key signed=true`),
      );
      expect(api).toMatch(
        new RegExp(`DELETE /1\\.0/domain/zone/${zone}/record/\\d+ app=sandbox-application-key signed=true`),
      );
      expect(api).toMatch(
        new RegExp(`DNS _acme-challenge\\.${TENANT_CERT_LABEL}\\.${zone} type=16 answers=[1-9]`),
      );
    }
    for (const n of relays()) {
      const fresh = send(n, { from: "alice@old.example" });
      const other = send(n, { from: "erin@legacy.example" });
      const gotNew = await waitForMessage(sb.t, fresh.id);
      const gotOther = await waitForMessage(sb.t, other.id);
      expect(gotNew?.record.clientCertificate, explain(fresh.r, n)).toMatchObject({
        subject: `CN=${TENANT_CERT_LABEL}.new.example`,
        chainLength: 2,
      });
      expect(gotOther?.record.clientCertificate?.subject, explain(other.r, n)).toBe(
        `CN=${TENANT_CERT_LABEL}.other.example`,
      );
      console.log(
        `${n.name}: new-example saw CN=${TENANT_CERT_LABEL}.new.example, other-example saw ` +
          `CN=${TENANT_CERT_LABEL}.other.example (${client(n)} through the OVH API stand-in)`,
      );
    }
  });

  const renewal = "the hook reloads Postfix, the new certificate is served, nothing restarts or is lost";
  it(`certbot renew --force-renewal: ${renewal}`, async () => {
    const n = sb.t.nodes[0];
    const serialBefore = servedSerial(n);
    const master = masterPid(n);
    const first = send(n, { from: "alice@old.example" });
    const renew = onNode(
      n,
      "certbot renew --force-renewal --no-random-sleep-on-renew 2>&1",
      undefined,
      120_000,
    );
    expect(renew.status, renew.stdout).toBe(0);
    expect(renew.stdout).toContain("all renewals succeeded");
    expect(onNode(n, "cat /var/log/letsencrypt/letsencrypt.log").stdout).toContain(
      `Running deploy-hook command: ${CERTBOT_DEPLOY_HOOK}`,
    );
    let serialAfter = serialBefore;
    for (let i = 0; i < 50 && serialAfter === serialBefore; i++) {
      await new Promise((res) => setTimeout(res, 200));
      serialAfter = servedSerial(n);
    }
    expect(serialAfter).toMatch(/^serial=/);
    expect(serialAfter).not.toBe(serialBefore);
    expect(masterPid(n), "Postfix master not restarted").toBe(master);
    const second = send(n, { from: "alice@old.example" });
    for (const m of [first, second]) expect(await waitForMessage(sb.t, m.id), explain(m.r, n)).toBeTruthy();
    console.log(
      `${n.name}: ${serialBefore} -> ${serialAfter} served after renewal; ` +
        `master pid ${master} unchanged; both messages delivered`,
    );
  });
}
