// npm run render -- --stack <lon|bhs> --out <dir> [--addresses <file.json>]
// Writes, per node, exactly the files that node receives, for review and for the real-tool checks.
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { listStacks, parseStackConfig, readStackFile } from "../src/config";
import { loadMaps } from "../src/maps";
import { type NodeAddresses, nodeIdentity, renderInterfaces, renderUserData } from "../src/render";
import { nodeSteps } from "../src/deploy";

const ROOT = path.join(__dirname, "..");

/** Documentation-range stand-ins for addresses the cloud assigns; marked in the output. */
export function placeholderAddresses(index: number): NodeAddresses {
  return {
    ipv4: { address: `203.0.113.${10 + index}`, gateway: "203.0.113.1" },
    ipv6: { address: `2001:db8:ffff::${(10 + index).toString(16)}`, gateway: "2001:db8:ffff::1" },
  };
}

export function renderStack(
  stack: string,
  outDir: string,
  given: Record<string, NodeAddresses> = {},
): string[] {
  const { raw, region, file } = readStackFile(ROOT, stack);
  const cfg = parseStackConfig(raw, region, file);
  const maps = loadMaps(path.join(ROOT, "maps"));
  const written: string[] = [];
  cfg.nodes.forEach((name, i) => {
    const ctx = { stack, cfg, maps, node: nodeIdentity(cfg, name) };
    const addrs = given[name] ?? placeholderAddresses(i);
    const steps = nodeSteps(ctx);
    const files: Record<string, string> = {
      "ADDRESSES.json":
        JSON.stringify(
          {
            ...addrs,
            placeholder: !given[name],
            note: given[name]
              ? "given with --addresses"
              : "PLACEHOLDER documentation-range addresses: the real ones come from the OVH port",
          },
          null,
          2,
        ) + "\n",
      "cloud-init/user-data": renderUserData(ctx, addrs),
      "network/interfaces": renderInterfaces(ctx, addrs),
      "deploy/1-cloud-init.sh": steps.scripts["cloud-init"],
      "deploy/2-certificate.sh": steps.scripts.certificate,
      "deploy/3-postfix.sh": steps.scripts.postfix,
    };
    for (const [n, text] of Object.entries(steps.postfixFiles)) files[`postfix/${n}`] = text;
    for (const [rel, text] of Object.entries(files)) {
      const target = path.join(outDir, name, rel);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, text);
      written.push(target);
    }
  });
  return written;
}

function main(): void {
  const { values } = parseArgs({
    options: { stack: { type: "string" }, out: { type: "string" }, addresses: { type: "string" } },
  });
  if (!values.stack || !values.out) {
    console.error(
      `usage: npm run render -- --stack <${listStacks(ROOT).join("|")}> --out <dir> [--addresses file.json]`,
    );
    process.exit(2);
  }
  const given = values.addresses
    ? (JSON.parse(fs.readFileSync(values.addresses, "utf8")) as Record<string, NodeAddresses>)
    : {};
  const written = renderStack(values.stack, values.out, given);
  console.log(`rendered ${written.length} files for stack ${values.stack} into ${values.out}`);
  if (Object.keys(given).length === 0)
    console.log("addresses are documentation-range PLACEHOLDERS (see ADDRESSES.json in each node directory)");
}

if (require.main === module) {
  try {
    main();
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
