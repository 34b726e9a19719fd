// npm run m365 -- --out <dir> [--outputs <stack>.json ...] [--ip-based] [--wave-group <group>]
//   [--activation-date <ISO 8601>] [--client-certificate <tenant id>=<certificate name> ...]
//   [--users <tenant A's mailboxes, Get-Mailbox | Export-Csv>]
// Writes the Microsoft 365 side (tenant A's connector and rules, each target tenant's inbound
// connector and checks, read-only drift checks) from maps/ and the stack files. Offline.
import { parseArgs } from "node:util";
import * as fs from "node:fs";
import { renderM365 } from "../src/review/offline-review";

try {
  const { values } = parseArgs({
    options: {
      out: { type: "string" },
      outputs: { type: "string", multiple: true },
      "ip-based": { type: "boolean", default: false },
      "wave-group": { type: "string" },
      "activation-date": { type: "string" },
      "client-certificate": { type: "string", multiple: true },
      users: { type: "string" },
    },
  });
  const clientCertificateNames: Record<string, string> = {};
  for (const pair of values["client-certificate"] ?? []) {
    const m = /^([a-z0-9_]+)=([a-z0-9*][a-z0-9.-]*)$/i.exec(pair);
    if (!m)
      throw new Error(
        `--client-certificate ${pair}: expected <tenant id>=<certificate name>, e.g. new_example=relay.new.example`,
      );
    clientCertificateNames[m[1]] = m[2].toLowerCase();
  }
  if (!values.out) {
    console.error(
      "usage: npm run m365 -- --out <dir> [--outputs <stack>.json ...] [--ip-based] " +
        "[--wave-group <group>] [--activation-date <ISO 8601>] [--client-certificate <tenant id>=<name> ...] " +
        "[--users users.csv]",
    );
    process.exit(2);
  }
  const outputs = (values.outputs ?? []).map((file) => ({ file, text: fs.readFileSync(file, "utf8") }));
  const written = renderM365(
    values.out,
    {
      ipBased: values["ip-based"],
      waveGroup: values["wave-group"],
      activationDate: values["activation-date"],
      clientCertificateNames,
    },
    outputs,
    values.users ? { file: values.users, text: fs.readFileSync(values.users, "utf8") } : undefined,
  );
  console.log(
    `wrote ${written.length} scripts into ${values.out}: ${written.map((w) => w.split("/").pop()).join(", ")}`,
  );
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}
