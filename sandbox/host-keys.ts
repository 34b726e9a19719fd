// SSH host keys as the program creates them (@pulumi/tls, ED25519, OpenSSH formats), made here with
// ssh-keygen for the sandbox nodes and the mocks; and the known_hosts the deployer verifies them by.
import * as fs from "node:fs";
import * as path from "node:path";
import type { HostKey } from "../src/render/node-render";
import { shellQuote as q } from "../src/deploy/shell-text";
import { must, sh } from "./shell";

/** NAME's host key pair in DIR (host-NAME, host-NAME.pub), created unless it exists. */
export function hostKeyIn(dir: string, name: string): HostKey {
  const file = path.join(dir, `host-${name}`);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    must(sh(`ssh-keygen -q -t ed25519 -N '' -C ${q(name)} -f ${q(file)}`), `host key for ${name}`);
  }
  return { privateKey: fs.readFileSync(file, "utf8"), publicKey: fs.readFileSync(`${file}.pub`, "utf8") };
}

/** A known_hosts line: ADDRESS answers with this key, and only this one. */
export function knownHostsLine(address: string, key: HostKey): string {
  const [type, blob] = key.publicKey.trim().split(/\s+/);
  return `${address} ${type} ${blob}`;
}
