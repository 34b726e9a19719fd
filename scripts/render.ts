// npm run render -- --stack <lon|bhs> --out <dir> [--addresses <file.json>]
// Writes, per node, exactly the files that node receives, for review and for the real-tool checks.
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { listStacks, loadStackConfig, readStackFile } from "../src/config/stack-config";
import { pendingExampleKeys } from "../src/config/examples";
import { PROJECT_ROOT } from "../src/project";
import { readNodeAddresses, renderStack } from "../src/review/offline-review";

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
    ? readNodeAddresses(values.addresses, fs.readFileSync(values.addresses, "utf8"), values.stack)
    : {};
  const written = renderStack(values.stack, values.out, given);
  console.log(`rendered ${written.length} files for stack ${values.stack} into ${values.out}`);
  const cfg = loadStackConfig(values.stack);
  const standIns = cfg.nodes.filter((n) => !given[n] && !cfg.servers[n]);
  if (standIns.length) {
    console.log(
      `addresses of ${standIns.join(", ")} are documentation-range PLACEHOLDERS (marked in each file; ` +
        "ADDRESSES.json shows the shape --addresses takes)",
    );
  }
  const examples = pendingExampleKeys(readStackFile(PROJECT_ROOT, values.stack).all);
  if (examples.length)
    console.log(
      `Pulumi.${values.stack}.yaml still holds example values pulumi preview refuses: ${examples.join(", ")}`,
    );
  const marked = written.filter((f) =>
    / PLACEHOLDER: .*(credentials|pin secret|host key)/.test(fs.readFileSync(f, "utf8")),
  );
  if (marked.length) console.log(`secrets are PLACEHOLDERS (marked) in: ${marked.join(", ")}`);
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}
