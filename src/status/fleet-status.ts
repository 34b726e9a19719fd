// Fleet health (`npm run status`): what to ask a node (node/relay-status.py, sent over SSH like a
// deploy step), and what its answer means for mail. Pure: no SSH, no Pulumi here.
import type { NodeBundle } from "../render/bundle";
import { bundleHash } from "../render/bundle";
import type { StackConfig } from "../config/stack-config";
import { type StatusSpec, statusSpec } from "../deploy/steps";
import { heredoc } from "../deploy/shell-text";

/** How a node answers (node/relay-status.py). */
export interface NodeStatus {
  fqdn: string;
  checkedAt: number;
  postfixRunning: boolean;
  /**
   * The live release; loaded: Postfix loaded it (null: Postfix not running, or an older node);
   * checked: it passed its post-deploy check.
   */
  release: {
    fqdn: string;
    bundle: string;
    release?: string;
    loaded?: boolean | null;
    checked?: boolean | null;
  } | null;
  queue: {
    counts: Record<string, number>;
    deferred: { age: number; reasons: string[]; sender: string }[];
    error: string | null;
  };
  deliveries: Record<string, { sent: number; bounced: { reason: string; count: number }[] }>;
  /** The pinning milter's verdicts in the window, per sender domain and mode (absent on older nodes). */
  pinning?: PinVerdicts[];
  /** The pinning milter: accepts connections on its socket; restarts by systemd (null without systemd). */
  milter?: { answering: boolean; restarts: number | null; socket: string };
  /** The time service (absent on older nodes): offset in seconds, positive when the clock is slow. */
  clock?: { service: string | null; synchronized: boolean; offset: number | null; detail: string };
  certificates: {
    label: string;
    file: string;
    subject?: string;
    daysLeft?: number;
    clientAuth?: boolean;
    usages?: string;
    error?: string;
  }[];
  nexthops: { tenant: string; nexthop: string; ok: boolean; detail: string }[];
}

export interface PinVerdicts {
  domain: string;
  mode: "enforce" | "monitor";
  pass: number;
  fail: number;
  temperror: number;
  /** Why the others failed, numbers written N, most frequent first. */
  reasons: { reason: string; count: number }[];
}

/** Thresholds an operator may tune (`npm run status -- --help`). */
export interface StatusLimits {
  /** A deferred message older than this is a problem (seconds). */
  maxDeferredAge: number;
  /** A certificate closer to expiry than this is a problem (days); certbot renews at 30. */
  minCertificateDays: number;
  /** Log window for deliveries and bounces (hours): Exchange Online's recipient limits are per 24 h. */
  hours: number;
}

/** A clock further off than this (seconds) is a problem: chrony keeps a synchronised one within milliseconds. */
const MAX_CLOCK_OFFSET = 10;

export const DEFAULT_LIMITS: StatusLimits = { maxDeferredAge: 600, minCertificateDays: 14, hours: 24 };

/** The script `sudo bash -s` runs on the node: the collector on its own stdin, the spec as argument. */
export function statusScript(bundle: NodeBundle, spec: StatusSpec): string {
  const program = bundle.nodeFiles["relay-status.py"];
  const arg = JSON.stringify(spec).replace(/'/g, `'\\''`);
  return `#!/bin/bash\n# header-rewrite: status of ${spec.fqdn} (reads only)\n${heredoc(
    `exec /usr/bin/python3 - '${arg}'`,
    program,
  )}`;
}

/** Where a deferral or bounce came from: the host Postfix names in it. */
function hostOf(reason: string): string {
  return (
    /(?:connect to|host) ([A-Za-z0-9.-]+)\[/.exec(reason)?.[1] ??
    /name=([A-Za-z0-9.-]+) type=/.exec(reason)?.[1] ??
    "(no host named)"
  );
}

/** The same failure, whatever the message: addresses and numbers that differ per attempt removed. */
function normalise(reason: string): string {
  return reason
    .replace(/\[[0-9a-fA-F.:]+\](:\d+)?/g, "[…]")
    .replace(/\b[0-9A-F]{10,}\b/g, "…")
    .slice(0, 200);
}

/** What an operator should look at for a reason Exchange Online or Postfix gives. Sources in docs/microsoft-365.md. */
export function reasonHint(reason: string): string | undefined {
  const hints: [RegExp, string][] = [
    [
      /5\.7\.64|TenantAttribution/i,
      "tenant B does not attribute the relay's mail: the inbound connector's TlsSenderCertificateName must " +
        "match the certificate this node presents, with its full chain (docs/microsoft-365.md, Microsoft 365 setup)",
    ],
    [
      /5\.7\.68|TenantInboundAttribution/i,
      "tenant B rejects Direct Send (RejectDirectSend) and did not attribute this mail to its inbound connector: " +
        "the certificate this node presents must carry an accepted domain of tenant B named in " +
        'TlsSenderCertificateName (docs/microsoft-365.md, "Troubleshooting Exchange Online errors")',
    ],
    [
      /5\.7\.236/,
      "mail from an onmicrosoft.com sender is capped at 100 external recipients per tenant per 24 h: rewrite to " +
        "a domain of tenant B's own (maps/translate_domains)",
    ],
    [/5\.7\.70[58]/, "tenant B is blocked for suspicious sending (Microsoft support case)"],
    [
      /5\.4\.14|hop count/i,
      "a mail loop: tenant A's transport rule must skip mail carrying the loop-guard header",
    ],
    [
      /certificate verification failed|Server certificate not verified|untrusted issuer|certificate (name )?mismatch|not trusted/i,
      "the tenant MX certificate does not verify against the node's CA file and the next hop's name (tls_policy secure)",
    ],
    [/TLS is required, but was not offered/i, "the tenant next hop offers no STARTTLS"],
    [
      /Host or domain name not found|Name service error/i,
      "the next hop does not resolve: check its spelling in maps/per_sender_relayhosts and the node's resolvers",
    ],
    [
      /Connection refused|Connection timed out|Network is unreachable|No route to host|lost connection/i,
      "the tenant next hop does not answer from this node (outage, or port 25 blocked on the way)",
    ],
    [
      /4\.7\.500|server busy|throttl/i,
      "Exchange Online is throttling: mail is retried; check the recipient limits",
    ],
    [
      /5\.7\.23[0-9]|recipient rate limit|external recipient/i,
      "tenant B's external recipient rate limit (TERRL)",
    ],
  ];
  return hints.find(([re]) => re.test(reason))?.[1];
}

export interface ReasonGroup {
  host: string;
  reason: string;
  count: number;
  hint?: string;
}

/** Deferred recipients grouped by next hop and reason, most frequent first. */
export function deferralGroups(s: NodeStatus): ReasonGroup[] {
  const groups = new Map<string, ReasonGroup>();
  for (const m of s.queue.deferred) {
    for (const r of m.reasons) {
      const key = `${hostOf(r)}\0${normalise(r)}`;
      const g = groups.get(key) ?? { host: hostOf(r), reason: normalise(r), count: 0, hint: reasonHint(r) };
      g.count++;
      groups.set(key, g);
    }
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

export interface NodeVerdict {
  node: string;
  /** Reachable and answered. */
  answered: boolean;
  status?: NodeStatus;
  expectedBundle: string;
  problems: string[];
  warnings: string[];
}

/** What a node's answer means, against the bundle the repository renders for it. */
export function assessNode(
  node: string,
  s: NodeStatus | undefined,
  expected: NodeBundle,
  limits: StatusLimits,
  unreachable?: string,
): NodeVerdict {
  const expectedBundle = bundleHash(expected.files);
  const v: NodeVerdict = { node, answered: !!s, status: s, expectedBundle, problems: [], warnings: [] };
  if (!s) {
    v.problems.push(`no answer: ${unreachable ?? "unknown error"}`);
    return v;
  }
  if (!s.postfixRunning) v.problems.push("Postfix is not running");
  if (s.milter && !s.milter.answering)
    v.problems.push(
      `the tenant-pinning milter does not answer on ${s.milter.socket}: every message gets a 4xx until it ` +
        "does (journalctl -u header-rewrite-pin; systemctl restart header-rewrite-pin)",
    );
  if (s.milter?.restarts)
    v.warnings.push(
      `the tenant-pinning milter was restarted ${s.milter.restarts} time(s) by systemd since it was started ` +
        "(journalctl -u header-rewrite-pin: a crash loop if this grows)",
    );
  if (s.clock && !s.clock.synchronized)
    v.problems.push(
      `the clock is not synchronised (${s.clock.detail}): the pinning milter defers (4xx) mail whose age it ` +
        "cannot decide, and nothing corrects a drift (chronyc sources -v)",
    );
  else if (s.clock?.offset && Math.abs(s.clock.offset) > MAX_CLOCK_OFFSET)
    v.problems.push(
      `the clock is ${Math.abs(s.clock.offset).toFixed(1)} s ${s.clock.offset > 0 ? "slow" : "fast"} (${s.clock.detail}): ` +
        "the Date window defers mail near its limits; chrony slews it back slowly (chronyc makestep steps it now)",
    );
  const runs = s.release?.bundle;
  if (runs !== expectedBundle) {
    v.problems.push(
      `drift: runs bundle ${runs ? runs.slice(0, 12) : "none"}, the repository renders ${expectedBundle.slice(0, 12)} ` +
        '(roll it out: pulumi up, docs/operations.md "Rolling out")',
    );
  }
  if (s.release?.loaded === false)
    v.problems.push(
      `${s.release.release} is live but Postfix still runs the release it loaded before (a deploy was cut ` +
        "between switch and reload): run the deploy again (pulumi up), or postfix reload on the node",
    );
  else if (s.release && s.release.checked === false && runs === expectedBundle)
    v.warnings.push(
      `bundle ${s.release.bundle.slice(0, 12)} is live without passing its post-deploy check (a deploy was ` +
        "interrupted): run the deploy again (pulumi up)",
    );
  if (s.queue.error) v.problems.push(`postqueue: ${s.queue.error}`);
  const deferred = s.queue.deferred;
  const oldest = Math.max(0, ...deferred.map((m) => m.age));
  if (deferred.length && oldest > limits.maxDeferredAge) {
    const top = deferralGroups(s)[0];
    const why = top
      ? `; top reason at ${top.host}: ${top.reason}${top.hint ? ` (hint: ${top.hint})` : ""}`
      : "";
    v.problems.push(`${deferred.length} deferred message(s), the oldest ${age(oldest)} old${why}`);
  } else if (deferred.length) {
    v.warnings.push(`${deferred.length} deferred message(s), the oldest ${age(oldest)} old`);
  }
  const hold = s.queue.counts.hold ?? 0;
  if (hold)
    v.problems.push(`${hold} message(s) on hold: an admin must release (postsuper -H) or delete them`);
  for (const c of s.certificates) {
    if (c.error) v.problems.push(`${c.label} (${c.file}): ${c.error}`);
    else if ((c.daysLeft ?? 0) < limits.minCertificateDays)
      v.problems.push(
        `${c.label} expires in ${c.daysLeft} days (renewal is failing: certbot renew --dry-run)`,
      );
    if (!c.error && c.clientAuth === false)
      v.warnings.push(
        `${c.label} carries no TLS client authentication usage (${c.usages}); whether Exchange Online insists ` +
          "is unpublished: docs/microsoft-365.md, Certificates",
      );
  }
  for (const h of s.nexthops) {
    if (!h.ok) {
      const hint = reasonHint(h.detail);
      v.problems.push(
        `tenant ${h.tenant} next hop ${h.nexthop}: no verified TLS handshake: ${h.detail}${hint ? ` (hint: ${hint})` : ""}`,
      );
    }
  }
  for (const p of s.pinning ?? []) {
    const unsigned = p.reasons.find((r) => r.reason.startsWith("no DKIM signature by"));
    if (p.mode === "monitor" && p.fail)
      v.warnings.push(
        `${p.domain} (monitor): ${p.fail} of ${p.pass + p.fail + p.temperror} message(s) would be refused: ` +
          p.reasons.map((r) => `${r.count} × ${r.reason}`).join("; ") +
          (unsigned
            ? " (hint: Exchange Online did not DKIM-sign them: do not enforce dkim= for this domain yet; " +
              'docs/tenant-pinning.md, "Which connector type tenant A sends through")'
            : ""),
      );
    if (p.temperror)
      v.warnings.push(
        `${p.domain} (${p.mode}): ${p.temperror} message(s) deferred because a check could not decide (DNS)`,
      );
  }
  for (const [tenant, d] of Object.entries(s.deliveries)) {
    for (const b of d.bounced) {
      const hint = reasonHint(b.reason);
      v.warnings.push(
        `${b.count} recipient(s) of tenant ${tenant} bounced: ${b.reason}${hint ? ` (hint: ${hint})` : ""}`,
      );
    }
  }
  return v;
}

/** A tenant's recipient limit as configured: a number, or tenant B's licence count. */
export type RecipientLimitSetting = StackConfig["tenantRecipientLimits"][string];

/**
 * Tenant B's external recipients per 24 h (the Tenant External Recipient Rate Limit, enforced from
 * April-May 2025): 500 × licences^0.7 + 9,500 (MC1023294), rounded down; or the number configured.
 */
export function recipientLimit(setting: RecipientLimitSetting): { limit: number; how: string } {
  if (typeof setting === "number") return { limit: setting, how: "configured" };
  const n = setting.licensedUsers;
  const limit = Math.floor(500 * n ** 0.7 + 9500);
  return { limit, how: `500 × ${n}^0.7 + 9,500 for ${n} licensed users (TERRL, MC1023294)` };
}

/** Recipients relayed per tenant by the nodes asked, against tenant B's daily external recipient limit. */
export function recipientBudget(
  verdicts: NodeVerdict[],
  limits: Record<string, RecipientLimitSetting>,
): {
  tenant: string;
  sent: number;
  limit?: number;
  limitHow?: string;
  share?: number;
  problem?: string;
  warning?: string;
}[] {
  const sent = new Map<string, number>();
  for (const v of verdicts)
    for (const [tenant, d] of Object.entries(v.status?.deliveries ?? {}))
      sent.set(tenant, (sent.get(tenant) ?? 0) + d.sent);
  return [...sent.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([tenant, n]) => {
      if (limits[tenant] === undefined) return { tenant, sent: n };
      const { limit, how } = recipientLimit(limits[tenant]);
      const share = n / limit;
      const line = `tenant ${tenant}: ${n} of ${limit} recipients in 24 h (${Math.round(share * 100)} %)`;
      return {
        tenant,
        sent: n,
        limit,
        limitHow: how,
        share,
        ...(share >= 1
          ? { problem: `${line}: the limit is reached` }
          : share >= 0.8
            ? { warning: line }
            : {}),
      };
    });
}

function age(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The report an operator reads: one block per node, then the fleet-wide recipient budget. */
export function formatReport(verdicts: NodeVerdict[], budget: ReturnType<typeof recipientBudget>): string {
  const out: string[] = [];
  for (const v of verdicts) {
    const s = v.status;
    out.push(`== ${v.node} ${v.problems.length ? "UNHEALTHY" : "ok"}`);
    if (s) {
      const q = s.queue.counts;
      const oldest = Math.max(0, ...s.queue.deferred.map((m) => m.age));
      if (s.milter)
        out.push(
          `  pinning milter ${s.milter.answering ? "answers" : "DOES NOT ANSWER"}` +
            (s.milter.restarts !== null ? `, restarted ${s.milter.restarts} time(s)` : ""),
        );
      out.push(
        `  postfix ${s.postfixRunning ? "running" : "STOPPED"}, bundle ${s.release?.bundle.slice(0, 12) ?? "none"}` +
          ` (repository: ${v.expectedBundle.slice(0, 12)})`,
        `  queue: active ${q.active ?? 0}, deferred ${q.deferred ?? 0}, hold ${q.hold ?? 0}, incoming ${q.incoming ?? 0}` +
          (s.queue.deferred.length ? `; oldest deferred ${age(oldest)}` : ""),
      );
      for (const g of deferralGroups(s).slice(0, 5))
        out.push(`    ${g.count} × ${g.host}: ${g.reason}${g.hint ? `\n      hint: ${g.hint}` : ""}`);
      for (const c of s.certificates)
        out.push(
          c.error
            ? `  ${c.label}: ${c.error}`
            : `  ${c.label}: ${c.daysLeft} days left, client auth ${c.clientAuth ? "yes" : "NO"} (${c.subject})`,
        );
      for (const h of s.nexthops)
        out.push(`  ${h.ok ? "ok  " : "FAIL"} ${h.tenant} ${h.nexthop}: ${h.detail}`);
      for (const [tenant, d] of Object.entries(s.deliveries))
        out.push(`  relayed to ${tenant} (24 h): ${d.sent}`);
      for (const p of s.pinning ?? [])
        out.push(
          `  pinning ${p.domain} (${p.mode}, 24 h): ${p.pass} pass, ${p.fail} ${p.mode === "monitor" ? "fail" : "refused"}` +
            (p.temperror ? `, ${p.temperror} deferred` : "") +
            p.reasons.map((r) => `\n    ${r.count} × ${r.reason}`).join(""),
        );
    }
    for (const p of v.problems) out.push(`  problem: ${p}`);
    for (const w of v.warnings) out.push(`  warning: ${w}`);
  }
  for (const b of budget) {
    out.push(
      b.limit
        ? `recipients to ${b.tenant} in 24 h: ${b.sent} of ${b.limit} (${Math.round((b.share ?? 0) * 100)} %)` +
            (b.problem ? " LIMIT REACHED" : b.warning ? " over 80 %" : "") +
            (b.limitHow && b.limitHow !== "configured" ? `; limit = ${b.limitHow}` : "")
        : `recipients to ${b.tenant} in 24 h: ${b.sent} (no limit configured: header-rewrite:tenantRecipientLimits)`,
    );
  }
  return out.join("\n");
}

/** One node to ask: the bundle the repository renders for it, and how to run a script there as root. */
export interface StatusTarget {
  node: string;
  cfg: StackConfig;
  bundle: NodeBundle;
  run(script: string): { status: number | null; stdout: string; stderr: string };
}

export interface FleetStatus {
  healthy: boolean;
  nodes: NodeVerdict[];
  recipients: ReturnType<typeof recipientBudget>;
  problems: string[];
}

/** Asks every node (one after the other: a status run must not load a busy fleet) and judges the answers. */
export function fleetStatus(targets: StatusTarget[], limits: StatusLimits = DEFAULT_LIMITS): FleetStatus {
  const nodes = targets.map((t) => {
    const r = t.run(statusScript(t.bundle, statusSpec(t.cfg, t.bundle, limits.hours)));
    let s: NodeStatus | undefined;
    let why = "";
    try {
      s = r.status === 0 ? (JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as NodeStatus) : undefined;
    } catch {
      why = `unreadable answer: ${r.stdout.slice(0, 200)}`;
    }
    if (r.status !== 0)
      why = `exit ${r.status}: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" ")}`;
    return assessNode(t.node, s, t.bundle, limits, why);
  });
  // Exchange Online counts tenant B's recipients across the fleet; each stack file may set the limits.
  const recipientLimits = Object.assign({}, ...targets.map((t) => t.cfg.tenantRecipientLimits));
  const recipients = recipientBudget(nodes, recipientLimits);
  const problems = [
    ...nodes.flatMap((v) => v.problems.map((p) => `${v.node}: ${p}`)),
    ...recipients.flatMap((b) => (b.problem ? [b.problem] : [])),
  ];
  return { healthy: problems.length === 0, nodes, recipients, problems };
}

/** The limits an operator may set on the command line, over the defaults. */
export function limitsFromArgs(args: {
  "max-deferred-age"?: string;
  "min-certificate-days"?: string;
}): StatusLimits {
  return {
    ...DEFAULT_LIMITS,
    ...(args["max-deferred-age"] ? { maxDeferredAge: Number(args["max-deferred-age"]) } : {}),
    ...(args["min-certificate-days"] ? { minCertificateDays: Number(args["min-certificate-days"]) } : {}),
  };
}

/** Asks the fleet, prints the report (or its JSON) and returns the exit code: 0 only when healthy. */
export function reportStatus(targets: StatusTarget[], limits: StatusLimits, json: boolean): number {
  const status = fleetStatus(targets, limits);
  console.log(json ? JSON.stringify(status, null, 2) : formatReport(status.nodes, status.recipients));
  if (!json && !status.healthy)
    console.log(`\nUNHEALTHY:\n${status.problems.map((p) => `  ${p}`).join("\n")}`);
  return status.healthy ? 0 : 1;
}
