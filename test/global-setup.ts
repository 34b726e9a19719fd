// Every temporary file of a test run lives in one directory (TMPDIR for the run and each test
// process), removed when the run ends, whatever failed. The project's own names (hr-*,
// header-rewrite*) left in /tmp outside it fail the run, by name; other new entries are listed
// (another program on the machine may have made them).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const TMP = "/tmp";
const OURS = /^(hr-|header-rewrite)/;

export default function setup(): () => void {
  const before = new Set(fs.readdirSync(TMP));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "header-rewrite-test-"));
  process.env.TMPDIR = dir;
  return () => {
    fs.rmSync(dir, { recursive: true, force: true });
    const left = fs.readdirSync(TMP).filter((f) => !before.has(f));
    const others = left.filter((f) => !OURS.test(f));
    if (others.length > 0)
      console.log(`new in ${TMP} during the run (not named by this project): ${others.join(", ")}`);
    const ours = left.filter((f) => OURS.test(f)).map((f) => path.join(TMP, f));
    if (ours.length > 0) throw new Error(`the test run left ${ours.join(", ")} behind`);
  };
}
