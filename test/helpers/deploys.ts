// Deploys that must fail: the mistakes the tests make on purpose, and what "failed safely" means.
import { expect } from "vitest";
import { POSTFIX_LIVE } from "../../src/node-layout";
import { type NodeHost, onNode } from "../../sandbox/node-host";
import type { Result } from "../../sandbox/shell";

type Files = Record<string, string>;

/** A typo an operator could make in templates/main.cf.hbs; `postconf -n` warns about it. */
export const mainCfTypo = (f: Files): Files => ({
  ...f,
  "main.cf": f["main.cf"] + "smtpd_tls_security_levle = encrypt\n",
});
export const MAIN_CF_TYPO_WARNING = "unused parameter: smtpd_tls_security_levle=encrypt";

/** The release /etc/postfix points at. */
export function liveRelease(h: NodeHost): string {
  return onNode(h, `readlink ${POSTFIX_LIVE}`).stdout.trim();
}

/** The deploy failed with WHY, said the live configuration is unchanged, and it is. */
export function expectFailedSafely(r: Result, why: string | RegExp, h: NodeHost, liveBefore: string): void {
  expect(r.status, r.stdout).not.toBe(0);
  if (typeof why === "string") expect(r.stderr).toContain(why);
  else expect(r.stderr).toMatch(why);
  expect(r.stderr).toContain("the live configuration was not changed");
  expect(liveRelease(h)).toBe(liveBefore);
}
