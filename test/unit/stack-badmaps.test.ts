// `pulumi preview` with a bad map: the program throws the validator's report before a single
// resource is registered. (Runs a copy of the project whose maps/ has mistakes.)
import * as fs from "node:fs";
import * as path from "node:path";
import { expect, it } from "vitest";
import { copyProject, runRefused } from "../helpers/pulumi-mocks";

it("refuses bad maps with file:line messages and registers nothing", async () => {
  const copy = copyProject();
  fs.appendFileSync(path.join(copy, "maps", "allowed_senders"), "@legacy.example OK\n");
  fs.appendFileSync(path.join(copy, "maps", "allow_relay_by_ip"), "0.0.0.0/0 OK\n");
  const { error, registered } = await runRefused(copy, "lon");
  expect(error?.message).toContain("maps/ has 2 error(s); nothing was deployed:");
  expect(error?.message).toContain(
    'maps/allow_relay_by_ip:5:1: error: "0.0.0.0/0" lets every client on the Internet relay (open relay)',
  );
  expect(error?.message).toContain(
    'maps/allowed_senders:7:1: error: "@legacy.example" is not an access(5) key and never matches',
  );
  expect(registered).toEqual([]);
  console.log(error?.message);
});
