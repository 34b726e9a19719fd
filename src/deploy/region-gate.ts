// Rolling out a change: node by node inside a stack (the Pulumi graph orders the steps), region by
// region across stacks (a stack with rolloutAfter takes only a release its predecessor has run).
import * as fs from "node:fs";
import * as path from "node:path";
import { bundleHash } from "../render/bundle";
import type { RelayMaps } from "../maps/relay-maps";
import { PROJECT_ROOT } from "../project";
import { renderOperatorMaps } from "../render/node-render";

/** Code and templates that shape what a node runs; with the maps they make a release. */
const RELEASE_SOURCES = ["templates", "node", "src"];

function filesUnder(root: string, dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) Object.assign(out, filesUnder(root, rel));
    else out[rel] = fs.readFileSync(path.join(root, rel), "utf8");
  }
  return out;
}

/**
 * What a region rolls out: the maps as nodes get them (comments do not count) and the code and
 * templates that render and deploy them. Node names, addresses and stack settings are not part of it,
 * so both regions run the same release.
 */
export function releaseId(maps: RelayMaps, root = PROJECT_ROOT): string {
  const files: Record<string, string> = {};
  for (const [name, text] of Object.entries(renderOperatorMaps(maps))) files[`maps/${name}`] = text;
  for (const dir of RELEASE_SOURCES) Object.assign(files, filesUnder(root, dir));
  return bundleHash(files).slice(0, 16);
}

/** The environment variable that lets one named release skip the first region (docs/operations.md, "Rolling out"). */
export const FORCE_RELEASE_ENV = "HEADER_REWRITE_FORCE_RELEASE";

export interface RolloutGate {
  /** This stack, and the stack that must have run the release first. */
  stack: string;
  after: string;
  release: string;
  /** The release the first stack last completed (its nodes deployed and passed the check), if any. */
  ran: string | undefined;
  /** FORCE_RELEASE_ENV's value, if set. */
  forced?: string;
}

/** Why this stack must not take the release yet, or undefined when it may. */
export function rolloutRefusal(g: RolloutGate): string | undefined {
  if (g.ran === g.release) return undefined;
  if (g.forced && g.forced === g.release) return undefined;
  const state = g.ran ? `it last completed release ${g.ran}` : "it has completed no release yet";
  return (
    `release ${g.release} has not run in stack ${g.after} (${state}): roll it out there first ` +
    `(pulumi up -s ${g.after}), or force it here with ${FORCE_RELEASE_ENV}=${g.release}`
  );
}

/**
 * The Postfix step as a refused stack gets it: the whole script stays visible (pulumi preview shows
 * the change under review), but it stops at its first line, before anything on the node changes.
 */
export function refusedScript(script: string, refusal: string | undefined): string {
  if (!refusal) return script;
  const said = refusal.replace(/'/g, "");
  return script.replace(
    /^(#!\/bin\/bash\n)?/,
    (shebang) => `${shebang}echo 'header-rewrite: REFUSED: ${said}' >&2; exit 1\n`,
  );
}

/** A node's deploy steps as a stack that must not take the release yet runs them: Postfix refuses. */
export function gatedSteps<S extends { id: string; script: string }>(
  steps: S[],
  refusal: string | undefined,
): S[] {
  return steps.map((s) => (s.id === "postfix" ? { ...s, script: refusedScript(s.script, refusal) } : s));
}

/** The stacks in rollout order: each after the stack its rolloutAfter names. */
export function rolloutOrder<S extends { stack: string; cfg: { rolloutAfter: string } }>(stacks: S[]): S[] {
  const done: S[] = [];
  const pending = [...stacks];
  while (pending.length) {
    const i = pending.findIndex(
      (s) => !s.cfg.rolloutAfter || done.some((d) => d.stack === s.cfg.rolloutAfter.split("/").pop()),
    );
    if (i < 0) {
      const left = pending.map((s) => `${s.stack} after ${s.cfg.rolloutAfter}`).join(", ");
      throw new Error(`rolloutAfter forms a cycle or names a missing stack: ${left}`);
    }
    done.push(...pending.splice(i, 1));
  }
  return done;
}
