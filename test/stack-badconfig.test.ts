// `pulumi preview` with a misspelled optional key: the program refuses it before a single resource
// is registered, with the message `npm run validate` and `npm run render` give for the stack file.
import * as fs from "node:fs";
import * as path from "node:path";
import { expect, it } from "vitest";
import { copyProject, runRefused } from "../harness/pulumi-mocks";
import { loadStackConfig } from "../src/config";

it("refuses an unknown key of the project namespace, as validate and render do, and registers nothing", async () => {
  const typo = "header-rewrite:messageSizeLimt";
  const copy = copyProject();
  const { error, registered } = await runRefused(copy, "lon", { [typo]: "1048576" });
  const said = `${typo} is not a known key (hint: check the spelling against README "Configuration")`;
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
