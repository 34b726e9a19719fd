// Every temporary file of a test run lives in one directory (TMPDIR for the run and each test
// process), removed when the run ends, whatever failed. The project's own names (hr-*,
// header-rewrite*) left in /tmp outside it fail the run, by name; other new entries are listed
// (another program on the machine may have made them).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const TMP = "/tmp";
const OURS = /^(hr-|header-rewrite)/;

/** Set by the first setup of a run: each vitest project (tier) calls setup again, in the same process. */
const RUN_TMP = "HEADER_REWRITE_TEST_TMPDIR";

export default function setup(): () => void {
  // One directory per run, not one per tier nested in the last (a socket path there outgrows sun_path).
  if (process.env[RUN_TMP]) return () => {};
  const before = new Set(fs.readdirSync(TMP));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "header-rewrite-test-"));
  process.env.TMPDIR = dir;
  process.env[RUN_TMP] = dir;
  return () => {
    delete process.env[RUN_TMP];
    fs.rmSync(dir, { recursive: true, force: true });
    const left = fs.readdirSync(TMP).filter((f) => !before.has(f));
    const others = left.filter((f) => !OURS.test(f));
    if (others.length > 0)
      console.log(`new in ${TMP} during the run (not named by this project): ${others.join(", ")}`);
    const ours = left.filter((f) => OURS.test(f)).map((f) => path.join(TMP, f));
    if (ours.length > 0) throw new Error(`the test run left ${ours.join(", ")} behind`);
  };
}
