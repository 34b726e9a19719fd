// npm run render -- --stack <lon|bhs> --out <dir> [--addresses <file.json>]
// Writes, per node, exactly the files that node receives, for review and for the real-tool checks.
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { listStacks } from "../src/config";
import type { NodeAddresses } from "../src/render";
import { renderStack } from "../src/review";

try {
  const { values } = parseArgs({
    options: { stack: { type: "string" }, out: { type: "string" }, addresses: { type: "string" } },
  });
  if (!values.stack || !values.out) {
    const stacks = listStacks().join("|");
    console.error(`usage: npm run render -- --stack <${stacks}> --out <dir> [--addresses file.json]`);
    process.exit(2);
  }
  const given = values.addresses
    ? (JSON.parse(fs.readFileSync(values.addresses, "utf8")) as Record<string, NodeAddresses>)
    : {};
  const written = renderStack(values.stack, values.out, given);
  console.log(`rendered ${written.length} files for stack ${values.stack} into ${values.out}`);
  if (Object.keys(given).length === 0) {
    console.log("addresses are documentation-range PLACEHOLDERS (see ADDRESSES.json in each node directory)");
  }
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}
