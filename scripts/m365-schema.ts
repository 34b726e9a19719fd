// npm run m365:schema -- <office-docs-powershell checkout> [commit]
// Rebuilds m365/cmdlets.json from Microsoft's own cmdlet reference (MicrosoftDocs/office-docs-powershell,
// exchange/exchange-ps/ExchangePowerShell/<Cmdlet>.md): every parameter name, its type, and the
// "Valid values are:" list where the page gives one. The generated scripts are checked against it.
import * as fs from "node:fs";
import * as path from "node:path";
import { EXCHANGE_CMDLETS, type CmdletSchema } from "../src/m365/cmdlet-schema";

const [docs, commit = "unknown"] = process.argv.slice(2);
if (!docs) {
  console.error("usage: npm run m365:schema -- <office-docs-powershell checkout> [commit]");
  process.exit(2);
}

function parse(text: string): CmdletSchema {
  const source = /^online version: (\S+)$/m.exec(text)?.[1];
  if (!source) throw new Error("no online version line");
  const parameters: CmdletSchema["parameters"] = {};
  for (const section of text.split(/^### -/m).slice(1)) {
    const name = section.split("\n")[0].trim();
    const type = /^Type: (.+)$/m.exec(section)?.[1].trim() ?? "unknown";
    // The list's items ("- Value: …"), with blank and indented note lines between them, up to the
    // first line of prose after it.
    const after = /Valid values are:\s*\n([\s\S]*)/.exec(section)?.[1].split("\n");
    const items = after?.slice(
      0,
      after.findIndex((l) => l !== "" && !/^\s/.test(l) && !l.startsWith("- ")),
    );
    const values = items
      ?.map((l) => /^- ([A-Za-z][A-Za-z0-9]*)(?::|$| )/.exec(l)?.[1])
      .filter((v): v is string => !!v && v !== "null");
    // Only an enumeration type has values; for lists and strings the page describes forms (FQDN, CIDR).
    const enumeration = !/MultiValuedProperty|String|\[\]/.test(type);
    parameters[name] = enumeration && values?.length ? { type, values } : { type };
  }
  return { source, parameters };
}

const out: Record<string, CmdletSchema> = {};
for (const cmdlet of EXCHANGE_CMDLETS) {
  const file = path.join(docs, "exchange/exchange-ps/ExchangePowerShell", `${cmdlet}.md`);
  out[cmdlet] = parse(fs.readFileSync(file, "utf8"));
}
const target = path.join(__dirname, "..", "m365", "cmdlets.json");
fs.writeFileSync(
  target,
  JSON.stringify({ from: `MicrosoftDocs/office-docs-powershell@${commit}`, cmdlets: out }, null, 2) + "\n",
);
console.log(`wrote ${Object.keys(out).length} cmdlets to ${target}`);
