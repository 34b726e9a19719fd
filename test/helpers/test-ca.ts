// A throwaway CA for tests: root → intermediate → leaf, valid from now for 30 days, so nothing
// here depends on the day the tests run.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** Runs openssl in DIR; throws with its stderr when it fails. */
export function openssl(dir: string, args: string): void {
  const r = spawnSync("bash", ["-c", `cd '${dir}' && openssl ${args}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args}: ${r.stderr}`);
}

export const EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/**
 * Writes root.{key,pem}, int.{key,pem} and leaf.{key,pem} (subject CN=LEAF) into DIR, and ext.cnf
 * with the sections "ca" and "leaf".
 */
export function issueTestChain(dir: string, leaf: string): void {
  fs.writeFileSync(
    path.join(dir, "ext.cnf"),
    "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n[leaf]\nbasicConstraints=CA:FALSE\n",
  );
  openssl(dir, `req -x509 ${EC_KEY} -days 30 -subj /CN=root -keyout root.key -out root.pem`);
  openssl(dir, `req ${EC_KEY} -subj /CN=int -keyout int.key -out int.csr`);
  openssl(
    dir,
    `x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days 30 -extfile ext.cnf -extensions ca -out int.pem`,
  );
  openssl(dir, `req ${EC_KEY} -subj /CN=${leaf} -keyout leaf.key -out leaf.csr`);
  openssl(
    dir,
    `x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -days 30 -extfile ext.cnf -extensions leaf -out leaf.pem`,
  );
}

/** What an operator supplies as a client certificate: key, leaf and intermediate of a fresh chain. */
export function clientBundle(leaf: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-test-ca-"));
  try {
    issueTestChain(dir, leaf);
    return ["leaf.key", "leaf.pem", "int.pem"]
      .map((f) => fs.readFileSync(path.join(dir, f), "utf8"))
      .join("");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
