// The project reviewed offline, as `npm run validate` and `npm run render` show it: the same rules
// and the same renders as `pulumi preview`, without the Pulumi CLI or any cloud access.
import * as fs from "node:fs";
import * as path from "node:path";
import * as ipaddr from "ipaddr.js";
import {
  ConfigError,
  listStacks,
  loadStackConfig,
  needsDnsCredentials,
  readStackFile,
} from "../config/stack-config";
import { sharedCertificateWarning } from "../config/client-certificates";
import { pendingExampleKeys } from "../config/examples";
import { drainScript } from "../deploy/steps";
import { MapValidationError, formatProblem, loadMaps } from "../maps/relay-maps";
import { loadProject, mapsFor, planNode } from "../plan";
import { MAPS_DIR, PROJECT_ROOT } from "../project";
import { firewallRules } from "../cloud/region";
import { parse } from "csv-parse/sync";
import {
  M365Error,
  type M365Options,
  type SourceMailbox,
  m365Files,
  planM365,
  replyRoutes,
} from "../m365/tenant-scripts";
import {
  NETWORK_FILE,
  NETWORK_SWITCH,
  type NodeAddresses,
  renderNetwork,
  renderNetworkSwitch,
  renderUserData,
} from "../render/node-render";

/** Every problem maps/ has against every stack; warnings alone keep it valid unless STRICT. */
export function validateProject(
  strict: boolean,
  mapsDir = MAPS_DIR,
  displayDir = "maps",
): { ok: boolean; lines: string[]; errors: number; warnings: number; files: string[] } {
  const lines = new Set<string>();
  const files = new Set<string>();
  let errors = 0;
  let warnings = 0;
  // The same problem found for both stacks is shown and counted once.
  const add = (line: string, file: string, count: number, error: boolean) => {
    if (lines.has(line)) return;
    lines.add(line);
    if (!error) warnings += count;
    else {
      errors += count;
      files.add(file);
    }
  };
  for (const stack of listStacks()) {
    try {
      const cfg = loadStackConfig(stack);
      const maps = mapsFor(cfg, { strict, displayDir }, mapsDir);
      for (const w of maps.warnings) add(formatProblem(w), w.file, 1, false);
      const { file, all } = readStackFile(PROJECT_ROOT, stack);
      const shared = sharedCertificateWarning(cfg, maps, undefined);
      if (shared) add(`${file}: ${strict ? "error" : "warning"}: ${shared}`, file, 1, strict);
      const examples = pendingExampleKeys(all);
      if (examples.length)
        add(
          `${file}: ${strict ? "error" : "warning"}: example values that pulumi preview refuses until you replace them: ` +
            `${examples.join(", ")} (hint: README, "Running it")`,
          file,
          1,
          strict,
        );
    } catch (e) {
      if (e instanceof MapValidationError)
        for (const p of e.problems) add(formatProblem(p), p.file, 1, p.severity === "error");
      else if (e instanceof ConfigError) add(e.message, e.source, e.problems.length, true);
      else throw e;
    }
  }
  return { ok: errors === 0, lines: [...lines], errors, warnings, files: [...files].sort() };
}

/** Secrets the render cannot read without the Pulumi CLI: stand-ins, marked in every file that holds one. */
const PLACEHOLDER = "PLACEHOLDER";
export const PLACEHOLDER_SECRETS = {
  dnsCredentials: {
    endpoint: "ovh-eu",
    applicationKey: `${PLACEHOLDER}-application-key`,
    applicationSecret: `${PLACEHOLDER}-application-secret`,
    consumerKey: `${PLACEHOLDER}-consumer-key`,
  },
  pinSecret: `${PLACEHOLDER}-pin-secret-set-header-rewrite:pinSecret`,
  hostKey: {
    privateKey: [
      "-----BEGIN OPENSSH PRIVATE KEY-----",
      `${PLACEHOLDER}-host-key-created-by-the-program`,
      "-----END OPENSSH PRIVATE KEY-----",
    ].join("\n"),
    publicKey: `ssh-ed25519 ${PLACEHOLDER}-host-key-created-by-the-program`,
  },
};

const ADDRESSES_INVALID = "invalid --addresses file; nothing was rendered";
const ADDRESS_SHAPE =
  '{"<node>": {"mac": "fa:16:3e:…", "ipv4": {"address": "…", "gateway": "…"}, ' +
  '"ipv6": {"address": "…", "gateway": "…"}, "dns": ["…"]}}';

/**
 * Reads `npm run render -- --addresses FILE`: the addresses OVH gave each node, shaped like the
 * ADDRESSES.json the render writes. Every problem names the file, the node and the field.
 */
export function readNodeAddresses(file: string, text: string, stack: string): Record<string, NodeAddresses> {
  const cfg = loadStackConfig(stack);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(
      file,
      [`not JSON (${(e as Error).message}); write ${ADDRESS_SHAPE}`],
      ADDRESSES_INVALID,
    );
  }
  const problems: string[] = [];
  if (typeof data !== "object" || data === null || Array.isArray(data))
    throw new ConfigError(
      file,
      [`must be an object keyed by node name: ${ADDRESS_SHAPE}`],
      ADDRESSES_INVALID,
    );
  const v4 = (x: unknown) => typeof x === "string" && ipaddr.IPv4.isValidFourPartDecimal(x);
  const v6 = (x: unknown) => typeof x === "string" && !x.includes("/") && ipaddr.IPv6.isValid(x);
  for (const [name, value] of Object.entries(data)) {
    if (!cfg.nodes.includes(name)) {
      problems.push(`"${name}" is not a node of stack ${stack} (its nodes: ${cfg.nodes.join(", ")})`);
      continue;
    }
    const a = (value ?? {}) as Partial<Record<string, unknown>> & {
      ipv4?: Record<string, unknown>;
      ipv6?: Record<string, unknown>;
    };
    const known = new Set(["mac", "ipv4", "ipv6", "dns", "placeholder", "note"]);
    for (const k of Object.keys(a)) if (!known.has(k)) problems.push(`${name}.${k} is not a known field`);
    if (typeof a.mac !== "string" || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(a.mac))
      problems.push(`${name}.mac must be the port's MAC address, e.g. fa:16:3e:12:34:56`);
    for (const [family, ok] of [
      ["ipv4", v4],
      ["ipv6", v6],
    ] as const) {
      for (const field of ["address", "gateway"])
        if (!ok(a[family]?.[field]))
          problems.push(`${name}.${family}.${field} must be an ${family.toUpperCase()} address`);
    }
    if (!Array.isArray(a.dns) || a.dns.length === 0 || !a.dns.every((d) => v4(d) || v6(d)))
      problems.push(`${name}.dns must be a non-empty list of resolver addresses`);
    if (a.placeholder === true)
      problems.push(
        `${name} is marked "placeholder": true; give the addresses OVH assigned (pulumi stack output)`,
      );
  }
  if (problems.length) throw new ConfigError(file, problems, ADDRESSES_INVALID);
  return data as Record<string, NodeAddresses>;
}

/** A comment on top of FILE's TEXT (after a #! or #cloud-config line) saying what in it is a stand-in. */
function markPlaceholders(text: string, what: string[]): string {
  if (what.length === 0) return text;
  const note = `# ${PLACEHOLDER}: ${what.join("; ")}. Not deployable as written (npm run render).\n`;
  const first = /^(#!|#cloud-config)[^\n]*\n/.exec(text);
  return first ? first[0] + note + text.slice(first[0].length) : note + text;
}

/** Documentation-range stand-ins for addresses the cloud assigns; marked in the output. */
function placeholderAddresses(index: number): NodeAddresses {
  return {
    mac: `fa:16:3e:00:00:${(10 + index).toString(16).padStart(2, "0")}`,
    ipv4: { address: `203.0.113.${10 + index}`, gateway: "203.0.113.1" },
    ipv6: { address: `2001:db8:ffff::${(10 + index).toString(16)}`, gateway: "2001:db8:ffff::1" },
    dns: ["192.0.2.53"],
  };
}

/**
 * Writes, per node of STACK, exactly the files that node receives: user-data, network configuration,
 * every deploy step in the order it runs, and the Postfix bundle. Returns the paths written.
 */
export function renderStack(
  stack: string,
  outDir: string,
  given: Record<string, NodeAddresses> = {},
  root = PROJECT_ROOT,
): string[] {
  const project = loadProject(stack, root);
  const { cfg, maps } = project;
  const written: string[] = [];
  const secrets = {
    ...(needsDnsCredentials(cfg) ? { dnsCredentials: PLACEHOLDER_SECRETS.dnsCredentials } : {}),
    ...(maps.pins.some((p) => p.secretHeader) ? { pinSecret: PLACEHOLDER_SECRETS.pinSecret } : {}),
  };
  cfg.nodes.forEach((name, i) => {
    const plan = planNode(project, name, { clientCertTenants: [], secrets });
    const { context: ctx, bundle } = plan;
    // A server that exists already has its network and host key: its user-data carries neither.
    const existing = cfg.servers[name];
    const addrs = existing ? undefined : (given[name] ?? placeholderAddresses(i));
    const note = given[name]
      ? "given with --addresses"
      : "PLACEHOLDER documentation-range addresses: the real ones come from the OVH port";
    const files: Record<string, string> = addrs
      ? {
          "ADDRESSES.json": JSON.stringify({ ...addrs, placeholder: !given[name], note }, null, 2) + "\n",
          "cloud-init/user-data": renderUserData(ctx, addrs, PLACEHOLDER_SECRETS.hostKey),
          [`network/${path.basename(NETWORK_FILE)}`]: renderNetwork(ctx, addrs),
          [`network/${path.basename(NETWORK_SWITCH)}`]: renderNetworkSwitch(ctx, addrs),
        }
      : {
          "cloud-init/user-data": renderUserData(ctx),
          // What the OVH security group would open: the firewall of such a server is the operator's.
          "FIREWALL.txt":
            '# Inbound rules a header-rewrite node needs (docs/configuration.md, "Servers that exist already"); nothing else.\n' +
            firewallRules(cfg, maps)
              .map((r) => `tcp/${r.port} from ${r.cidr} (${r.why})`)
              .join("\n") +
            "\n",
        };
    plan.steps().forEach((s, k) => (files[`deploy/${k + 1}-${s.id}.sh`] = s.script));
    // Runs only when the node is removed from the stack (docs/operations.md, "Removing a node").
    files["deploy/on-removal-drain.sh"] = drainScript(cfg, ctx.node);
    for (const [n, text] of Object.entries(bundle.files)) files[`postfix/${n}`] = text;
    const standIns =
      given[name] || !addrs
        ? []
        : Object.values(addrs).flatMap((v) =>
            typeof v === "string" ? [v] : Array.isArray(v) ? v : Object.values(v),
          );
    for (const [rel, text] of Object.entries(files)) {
      const what = [
        ...(rel !== "ADDRESSES.json" &&
        standIns.some((a) => new RegExp(`(?<![\\w.:])${a.replace(/\./g, "\\.")}(?![\\w.:])`).test(text))
          ? [`documentation-range addresses stand in for ${name}'s (npm run render -- --addresses FILE)`]
          : []),
        ...(text.includes(PLACEHOLDER_SECRETS.dnsCredentials.applicationKey)
          ? ["OVH API credentials stand in for the secret header-rewrite:acmeDnsOvhCredentials"]
          : []),
        ...(text.includes(PLACEHOLDER_SECRETS.pinSecret)
          ? ["the pin secret stands in for header-rewrite:pinSecret"]
          : []),
        ...(text.includes(PLACEHOLDER_SECRETS.hostKey.publicKey)
          ? ["the SSH host key stands in for the one the program creates (a secret in the stack's state)"]
          : []),
      ];
      const target = path.join(outDir, name, rel);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, markPlaceholders(text, what));
      written.push(target);
    }
  });
  return written;
}

/** `pulumi stack output --json` of a stack, as far as `npm run m365` reads it. */
interface StackOutputs {
  nodeAddresses?: Record<string, { fqdn?: string; ipv4?: string }>;
}

/**
 * Writes the Microsoft 365 scripts for every committed stack into OUT_DIR. OUTPUTS are the
 * contents of `pulumi stack output --json` files (node addresses, known only after `pulumi up`).
 */
/** The export command docs/microsoft-365.md gives; its columns are the ones read here. */
const MAILBOX_EXPORT =
  "Get-Mailbox -ResultSize Unlimited | Select-Object PrimarySmtpAddress,DisplayName | Export-Csv users.csv -NoTypeInformation";

/** Tenant A's mailboxes from `Get-Mailbox | Export-Csv`; a bad row names its line and the fix. */
export function readMailboxes(file: string, text: string): SourceMailbox[] {
  let rows: { record: Record<string, string>; info: { lines: number } }[];
  try {
    rows = parse(text, { columns: true, skip_empty_lines: true, bom: true, info: true, trim: true });
  } catch (e) {
    throw new M365Error(`${file}: not CSV (${(e as Error).message}); export it with: ${MAILBOX_EXPORT}`);
  }
  return rows.map(({ record, info }) => {
    const origin = `${file}:${info.lines}`;
    const address = record.PrimarySmtpAddress;
    if (address === undefined || record.DisplayName === undefined)
      throw new M365Error(
        `${origin}: needs the columns PrimarySmtpAddress and DisplayName; export with: ${MAILBOX_EXPORT}`,
      );
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(address))
      throw new M365Error(`${origin}: "${address}" is not an e-mail address (PrimarySmtpAddress)`);
    return { address: address.toLowerCase(), displayName: record.DisplayName || address, origin };
  });
}

export function renderM365(
  outDir: string,
  opts: M365Options,
  outputs: { file: string; text: string }[] = [],
  users?: { file: string; text: string },
): string[] {
  const ipv4: Record<string, string> = {};
  for (const o of outputs) {
    let parsed: StackOutputs;
    try {
      parsed = JSON.parse(o.text) as StackOutputs;
    } catch (e) {
      throw new M365Error(
        `${o.file}: not JSON (${(e as Error).message}); expected pulumi stack output --json`,
      );
    }
    if (!parsed.nodeAddresses)
      throw new M365Error(`${o.file}: no nodeAddresses; expected the output of pulumi stack output --json`);
    for (const [node, a] of Object.entries(parsed.nodeAddresses)) if (a.ipv4) ipv4[node] = a.ipv4;
  }
  const fleet = listStacks().map((stack) => ({ stack, cfg: loadStackConfig(stack), ipv4 }));
  const maps = loadMaps(MAPS_DIR);
  const plan = planM365(maps, fleet, opts);
  for (const w of plan.warnings) console.error(`warning: ${w}`);
  const routes = users ? replyRoutes(maps, readMailboxes(users.file, users.text)) : undefined;
  const written: string[] = [];
  fs.mkdirSync(outDir, { recursive: true });
  for (const [name, text] of Object.entries(m365Files(plan, opts, routes))) {
    const target = path.join(outDir, name);
    fs.writeFileSync(target, text);
    written.push(target);
  }
  return written;
}
