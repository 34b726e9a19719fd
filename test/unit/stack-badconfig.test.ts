// `pulumi preview` with a misspelled optional key: the program refuses it before a single resource
// is registered, with the message `npm run validate` and `npm run render` give for the stack file.
import * as fs from "node:fs";
import * as path from "node:path";
import { expect, it } from "vitest";
import { copyProject, runRefused } from "../helpers/pulumi-mocks";
import { loadStackConfig } from "../../src/config/stack-config";
import { checkExampleValues, exampleValues } from "../../src/config/examples";
import { PROJECT_ROOT } from "../../src/project";

it("refuses an unknown key of the project namespace, as validate and render do, and registers nothing", async () => {
  const typo = "header-rewrite:messageSizeLimt";
  const copy = copyProject();
  const { error, registered } = await runRefused(copy, "lon", { [typo]: "1048576" });
  const said = `${typo} is not a known key (hint: check the spelling against docs/configuration.md "Configuration")`;
  expect(error?.message).toContain("Pulumi.lon.yaml: invalid stack configuration; nothing was deployed:");
  expect(error?.message).toContain(said);
  expect(registered).toEqual([]);
  // The same key in the stack file: npm run validate and render read it there.
  const file = path.join(copy, "Pulumi.lon.yaml");
  fs.appendFileSync(file, `  ${typo}: 1048576\n`);
  expect(() => loadStackConfig("lon", copy)).toThrow(said);
  fs.rmSync(copy, { recursive: true, force: true });
});

it("checks the secrets' shape before any resource, in one message that prints no secret", async () => {
  const dns = { endpoint: "ovh-eu", applicationKey: "k-not-shown", applicationSecret: "", consumerKey: "c" };
  const { error, registered } = await runRefused(copyProject(), "lon", {
    "header-rewrite:clientCertificates": JSON.stringify({
      nosuch: "-----BEGIN PRIVATE KEY-----\nsecret-body\n",
    }),
    "header-rewrite:acmeDnsOvhCredentials": JSON.stringify(dns),
    "header-rewrite:pinSecret": "short",
  });
  expect(error?.message).toContain("Pulumi.lon.yaml: invalid stack configuration; nothing was deployed:");
  expect(error?.message).toContain(
    "  - header-rewrite:clientCertificates.nosuch: no such tenant in maps/per_sender_relayhosts",
  );
  expect(error?.message).toContain("  - header-rewrite:acmeDnsOvhCredentials lacks applicationSecret");
  expect(error?.message).toContain("  - header-rewrite:pinSecret must be 24 to 200 characters");
  for (const secret of ["secret-body", "k-not-shown", "short"]) expect(error?.message).not.toContain(secret);
  expect(registered).toEqual([]);
});

it("refuses the repository's example values before any resource, listing each, and passes a stack's own", async () => {
  const { error, registered } = await runRefused(copyProject(), "lon", {
    "header-rewrite:allowExampleValues": "false",
  });
  expect(error?.message).toContain(
    'Pulumi.lon.yaml: still holds example values a real deployment must replace (README "Running it"); nothing was deployed:',
  );
  for (const item of [
    '  - openstack:tenantId is the repository\'s example "0123456789abcdef0123456789abcdef"',
    '  - openstack:userName is the repository\'s example "user-example"',
    "  - header-rewrite:deploySshPublicKey is the repository's example",
    '  - header-rewrite:dnsZone "example.net" is a reserved example domain (RFC 2606)',
    '  - header-rewrite:acmeEmail "hostmaster@example.net" is at a reserved example domain',
    "  - header-rewrite:adminCidrs holds documentation ranges (198.51.100.0/28, 2001:db8:ad::/48)",
    "  - header-rewrite:tenantCertificates names reserved example domains (new_example: relay.new.example, " +
      "other_example: relay.other.example): no CA issues a certificate for them",
  ])
    expect(error?.message).toContain(item);
  expect(registered).toEqual([]);
  // The fixture with a real stack's own values in their place: nothing left to refuse.
  const fixture = JSON.parse(
    fs.readFileSync(path.join(PROJECT_ROOT, "test", "fixtures", "lon.config.json"), "utf8"),
  ) as { config: Record<string, string> };
  const own = {
    ...fixture.config,
    "header-rewrite:allowExampleValues": "false",
    "openstack:tenantId": "5f0c1d2e3a4b4c5d8e9f0a1b2c3d4e5f",
    "openstack:userName": "user-hr-fixture",
    "header-rewrite:deploySshPublicKey":
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureOwnDeployKeyForTheExampleValuesTest00 ops@hr-fixture.net",
    "header-rewrite:dnsZone": "hr-fixture.net",
    "header-rewrite:acmeEmail": "hostmaster@hr-fixture.net",
    // A configuration value only (nothing is contacted): not a documentation range, so not an example.
    "header-rewrite:adminCidrs": JSON.stringify(["127.0.0.0/28"]),
    "header-rewrite:tenantCertificates": JSON.stringify({
      new_example: "relay.new-tenant.hr-fixture.net",
      other_example: "relay.other-tenant.hr-fixture.net",
    }),
  };
  expect(exampleValues(own)).toEqual([]);
  expect(() => checkExampleValues(own, "Pulumi.lon.yaml")).not.toThrow();
});
