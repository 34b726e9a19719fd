// The one way in. A stack's project: its configuration and the maps, validated as `pulumi up`
// validates them. A node's plan: the bundle render makes for it and the deploy steps built from that
// bundle. index.ts, the scripts, the sandbox and the bench all go through here.
import { sharedCertificateWarning } from "./config/client-certificates";
import { checkExampleValues } from "./config/examples";
import { checkSecrets } from "./config/secrets";
import { type StackConfig, loadStackConfig, nodeIdentity } from "./config/stack-config";
import { type DeployStep, type NodeSecrets, deploySteps } from "./deploy/steps";
import { type RelayMaps, type ValidationOptions, loadMaps } from "./maps/relay-maps";
import { MAPS_DIR, PROJECT_ROOT } from "./project";
import type { NodeBundle } from "./render/bundle";
import { type RenderContext, renderNode } from "./render/node-render";

/** One stack, ready to render: its configuration and the maps validated against its limits. */
export interface Project {
  stack: string;
  cfg: StackConfig;
  maps: RelayMaps;
  /** What is allowed but likely wrong, for the operator to read (pulumi preview shows them). */
  warnings?: string[];
}

/** The committed maps, validated against CFG's limits (the widest client ranges it accepts). */
export function mapsFor(cfg: StackConfig, opts: ValidationOptions = {}, dir = MAPS_DIR): RelayMaps {
  return loadMaps(dir, { widestV4: cfg.widestClientRangeV4, widestV6: cfg.widestClientRangeV6, ...opts });
}

/**
 * Everything `pulumi up` checks before a single resource is registered: the maps against the
 * configuration, the secrets' shapes, no example value left. ALLCONFIG: the stack's whole
 * configuration as Pulumi holds it; FILE names it in messages.
 */
export function validatedProject(
  stack: string,
  cfg: StackConfig,
  allConfig: Record<string, string>,
  file: string,
): Project {
  const maps = mapsFor(cfg);
  const supplied = checkSecrets(cfg, maps, allConfig, file);
  checkExampleValues(allConfig, file);
  const shared = sharedCertificateWarning(cfg, maps, supplied);
  return { stack, cfg, maps, warnings: shared ? [`${file}: ${shared}`] : [] };
}

/** A stack read from its file (Pulumi.<stack>.yaml, no Pulumi CLI) with the committed maps. */
export function loadProject(stack: string, root = PROJECT_ROOT): Project {
  const cfg = loadStackConfig(stack, root);
  return { stack, cfg, maps: mapsFor(cfg) };
}

/** What a node's plan depends on besides its project. */
export interface NodeFacts {
  /** Tenants with an operator-supplied client certificate (default: those in secrets). */
  clientCertTenants?: string[];
  secrets?: NodeSecrets;
}

export interface NodePlan {
  context: RenderContext;
  bundle: NodeBundle;
  /** The deploy steps, in order (built when asked: they need the node's secrets). */
  steps(): DeployStep[];
}

/** Node NAME of PROJECT: rendered, and its deploy steps built from that bundle. */
export function planNode(project: Project, name: string, facts: NodeFacts = {}): NodePlan {
  const context: RenderContext = {
    ...project,
    node: nodeIdentity(project.cfg, name),
    clientCertTenants: facts.clientCertTenants ?? Object.keys(facts.secrets?.clientCertificates ?? {}).sort(),
  };
  const bundle = renderNode(context);
  return { context, bundle, steps: () => deploySteps(project.cfg, bundle, facts.secrets ?? {}) };
}
