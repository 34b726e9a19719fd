// `pulumi preview` with a bad map: the program throws the validator's report before a single
// resource is registered. (Runs a copy of the project whose maps/ has mistakes.)
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { expect, it } from "vitest";
import { copyProject, fixture } from "../harness/pulumi-mocks";

it("refuses bad maps with file:line messages and registers nothing", async () => {
  const copy = copyProject();
  fs.appendFileSync(path.join(copy, "maps", "allowed_senders"), "@legacy.example OK\n");
  fs.appendFileSync(path.join(copy, "maps", "allow_relay_by_ip"), "0.0.0.0/0 OK\n");
  const registered: string[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource: (a) => {
        registered.push(`${a.type}:${a.name}`);
        return { id: `${a.name}-id`, state: a.inputs };
      },
      call: () => ({}),
    },
    "header-rewrite",
    "lon",
    false,
  );
  const f = fixture("lon");
  pulumi.runtime.setAllConfig(f.config, f.secretKeys);
  let error: Error | undefined;
  try {
    await import(path.join(copy, "index.ts"));
  } catch (e) {
    error = e as Error;
  }
  expect(error?.message).toContain("maps/ has 2 error(s); nothing was deployed:");
  expect(error?.message).toContain(
    'maps/allow_relay_by_ip:5:1: error: "0.0.0.0/0" lets every client on the Internet relay (open relay)',
  );
  expect(error?.message).toContain(
    'maps/allowed_senders:7:1: error: "@legacy.example" is not an access(5) key and never matches',
  );
  await new Promise((r) => setTimeout(r, 200));
  expect(registered).toEqual([]);
  console.log(error?.message);
});
