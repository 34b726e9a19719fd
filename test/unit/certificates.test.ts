// Operator client certificates are checked before anything is pushed: a bad bundle only shows up at
// tenant B as "550 5.7.64 TenantAttribution".
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkClientBundle,
  checkClientCertificates,
  sharedCertificateWarning,
} from "../../src/config/client-certificates";
import { loadStackConfig } from "../../src/config/stack-config";
import { validatedProject } from "../../src/plan";
import { loadMaps } from "../../src/maps/relay-maps";
import { PROJECT_ROOT as ROOT } from "../../src/project";
import { EC_KEY, issueTestChain, openssl as run } from "../helpers/test-ca";

let dir: string;
const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
const openssl = (args: string) => run(dir, args);
const ec = EC_KEY;

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-certs-"));
  issueTestChain(dir, "relay-client.example.net");
  openssl(`req ${ec} -subj /CN=other -keyout other.key -out other.csr`);
  // An intermediate of another CA, and a leaf of ours whose validity ended in 2020 (openssl ca sets
  // the dates; `x509 -days` cannot make a certificate that has already expired).
  openssl(`req -x509 ${ec} -days 30 -subj /CN=other-root -keyout other-root.key -out other-root.pem`);
  fs.mkdirSync(path.join(dir, "issued"));
  fs.writeFileSync(path.join(dir, "index.txt"), "");
  fs.writeFileSync(
    path.join(dir, "ca.cnf"),
    "[ca]\ndefault_ca=int\n[int]\ndatabase=index.txt\nnew_certs_dir=issued\nserial=serial.txt\n" +
      "default_md=sha256\npolicy=any\nunique_subject=no\n[any]\ncommonName=supplied\n[leaf]\nbasicConstraints=CA:FALSE\n",
  );
  fs.writeFileSync(path.join(dir, "serial.txt"), "1000\n");
  openssl(
    "ca -batch -config ca.cnf -extensions leaf -cert int.pem -keyfile int.key -in leaf.csr -out expired.pem " +
      "-startdate 20200101000000Z -enddate 20200201000000Z -notext",
  );
});

describe("client certificate bundles", () => {
  it("accepts key + leaf + intermediate", () => {
    expect(checkClientBundle("other_example", read("leaf.key") + read("leaf.pem") + read("int.pem"))).toEqual(
      [],
    );
  });
  it("refuses a leaf without its intermediates, naming the Exchange Online error", () => {
    expect(checkClientBundle("other_example", read("leaf.key") + read("leaf.pem"))).toEqual([
      "header-rewrite:clientCertificates.other_example: only the leaf is present; Exchange Online " +
        "answers 550 5.7.64 TenantAttribution without the intermediates (hint: use fullchain.pem)",
    ]);
  });
  it("refuses a self-signed certificate: Exchange Online attributes only by a public CA's (MC1226222)", () => {
    // An attacker's or a test set-up's certificate with the right name: it proves nothing.
    const ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(`req -x509 ${ec} -days 30 -subj /CN=relay.new.example -keyout self.key -out self.pem`);
    expect(checkClientBundle("new_example", read("self.key") + read("self.pem"))).toEqual([
      "header-rewrite:clientCertificates.new_example: the certificate is self-signed; Exchange Online attributes " +
        "mail only by a certificate from a public CA whose name is an accepted domain of the tenant (MC1226222) " +
        "(hint: have a public CA issue it, or let the nodes obtain one: header-rewrite:tenantCertificates)",
    ]);
  });
  it("refuses a key that belongs to another certificate", () => {
    expect(
      checkClientBundle("other_example", read("other.key") + read("leaf.pem") + read("int.pem"))[0],
    ).toContain("the private key does not belong to the first certificate");
  });
  it("refuses the right certificates in the wrong order, and says which order is right", () => {
    const bundle = read("leaf.key") + read("leaf.pem") + read("root.pem") + read("int.pem");
    expect(checkClientBundle("other_example", bundle)).toEqual([
      "header-rewrite:clientCertificates.other_example: the certificates are out of order " +
        "(hint: put them as leaf, then each one's issuer: positions 1, 3, 2)",
    ]);
    // Leaf and intermediate in order, with their root after them: accepted.
    expect(
      checkClientBundle(
        "other_example",
        read("leaf.key") + read("leaf.pem") + read("int.pem") + read("root.pem"),
      ),
    ).toEqual([]);
  });
  it("refuses an intermediate of another chain", () => {
    expect(
      checkClientBundle("other_example", read("leaf.key") + read("leaf.pem") + read("other-root.pem")),
    ).toEqual([
      "header-rewrite:clientCertificates.other_example: certificate 2 did not issue certificate 1 " +
        "(hint: the bundle holds a certificate of another chain; use the CA's fullchain.pem)",
    ]);
  });
  it("refuses an expired certificate, naming the date", () => {
    expect(
      checkClientBundle("other_example", read("leaf.key") + read("expired.pem") + read("int.pem")),
    ).toEqual([
      "header-rewrite:clientCertificates.other_example: the certificate expired on Feb  1 00:00:00 2020 GMT " +
        "(hint: renew it and set the new bundle)",
    ]);
  });
  it("refuses a bundle without a key", () => {
    expect(checkClientBundle("other_example", read("leaf.pem"))[0]).toContain(
      "expected exactly one private key, found 0",
    );
  });
  it("refuses a tenant that is not in maps/per_sender_relayhosts", () => {
    const maps = loadMaps(path.join(ROOT, "maps"));
    expect(() =>
      checkClientCertificates({ nosuch: read("leaf.key") + read("leaf.pem") + read("int.pem") }, maps),
    ).toThrow(
      "header-rewrite:clientCertificates.nosuch: no such tenant in maps/per_sender_relayhosts " +
        "(hint: tenants are new_example, other_example)",
    );
  });
  it("refuses an obtained certificate for an unknown tenant, or one a supplied certificate already covers", () => {
    const maps = loadMaps(path.join(ROOT, "maps"));
    const supplied = { other_example: read("leaf.key") + read("leaf.pem") + read("int.pem") };
    expect(() => checkClientCertificates({}, maps, { nosuch: "relay.nosuch.example" })).toThrow(
      "header-rewrite:tenantCertificates.nosuch: no such tenant in maps/per_sender_relayhosts",
    );
    expect(() => checkClientCertificates(supplied, maps, { other_example: "relay.other.example" })).toThrow(
      "tenant other_example has both a supplied certificate (header-rewrite:clientCertificates.other_example) " +
        "and an obtained one (header-rewrite:tenantCertificates.other_example: relay.other.example): keep one",
    );
    expect(() => checkClientCertificates(supplied, maps, { new_example: "relay.new.example" })).not.toThrow();
  });
});

describe("one certificate name for several tenants", () => {
  const maps = loadMaps(path.join(ROOT, "maps"));
  const committed = loadStackConfig("lon");
  // The committed stack gives each tenant its own; these tests start from a stack that does not.
  const cfg = { ...committed, tenantCertificates: {} };
  const dns = JSON.stringify({
    endpoint: "ovh-eu",
    applicationKey: "a",
    applicationSecret: "b",
    consumerKey: "c",
  });
  it("npm run validate warns when tenants would share the node certificate (secrets unknown offline)", () => {
    expect(sharedCertificateWarning(cfg, maps, undefined)).toContain(
      "tenants new_example, other_example would all be presented the node certificate (*.example.net) unless " +
        "header-rewrite:clientCertificates gives them their own: a certificate name can be an accepted domain of " +
        "one tenant only",
    );
  });
  it("the committed stack gives each tenant a name of its own: no warning", () => {
    expect(Object.keys(committed.tenantCertificates).sort()).toEqual(["new_example", "other_example"]);
    expect(sharedCertificateWarning(committed, maps, undefined)).toBeUndefined();
    // The same name obtained for both is the same mistake.
    const twice = {
      ...committed,
      tenantCertificates: { new_example: "relay.new.example", other_example: "Relay.New.Example" },
    };
    expect(sharedCertificateWarning(twice, maps, undefined)).toContain(
      "header-rewrite:tenantCertificates gives tenants new_example, other_example one name (relay.new.example): " +
        "a certificate name can be an accepted domain of one tenant only",
    );
    expect(
      validatedProject("lon", committed, { "header-rewrite:acmeDnsOvhCredentials": dns }, "Pulumi.lon.yaml")
        .warnings,
    ).toEqual([]);
  });
  it("pulumi preview warns only when two tenants are really left with it", () => {
    const bundle = read("leaf.key") + read("leaf.pem") + read("int.pem");
    // Neither has a certificate of its own: a warning naming both.
    expect(validatedProject("lon", cfg, {}, "Pulumi.lon.yaml").warnings).toEqual([
      expect.stringContaining("Pulumi.lon.yaml: tenants new_example, other_example would all be presented"),
    ]);
    // One supplied, one obtained: each has its own, no warning.
    const own = { ...cfg, tenantCertificates: { new_example: "relay.new.example" } };
    expect(
      validatedProject(
        "lon",
        own,
        {
          "header-rewrite:clientCertificates": JSON.stringify({ other_example: bundle }),
          "header-rewrite:acmeDnsOvhCredentials": dns,
        },
        "Pulumi.lon.yaml",
      ).warnings,
    ).toEqual([]);
    // One tenant on the node certificate is fine: the name can be that tenant's.
    expect(
      validatedProject(
        "lon",
        cfg,
        { "header-rewrite:clientCertificates": JSON.stringify({ other_example: bundle }) },
        "Pulumi.lon.yaml",
      ).warnings,
    ).toEqual([]);
  });
});
