// Prometheus on the sandbox nodes, scraped from outside as a monitoring host would: the shipped alert
// rules load, every metric they use is exported, and the numbers move with the mail.
import * as fs from "node:fs";
import * as path from "node:path";
import * as YAML from "yaml";
import { expect, it } from "vitest";
import { EXPORTERS, METRICS_COLLECTOR } from "../../src/node-layout";
import { PROJECT_ROOT } from "../../src/project";
import { onNode, queue } from "../../sandbox/node-host";
import { restartSink, stopSink } from "../../sandbox/services";
import { inNetns, pollUntil, sh } from "../../sandbox/shell";
import type { SandboxNode } from "../../sandbox/topology";
import type { Suite } from "./harness";

const RULES = path.join(PROJECT_ROOT, "monitoring", "header-rewrite.rules.yml");

/** Every sample of an exporter on the node, as the monitoring host sees it: "name{labels}" -> value. */
function scrape(sb: Suite, n: SandboxNode, port: number): Map<string, number> {
  const r = inNetns(sb.t.wan.netns, `curl -sf --max-time 10 http://${n.ipv4}:${port}/metrics`);
  expect(r.status, `scrape ${n.name}:${port}: ${r.stderr}`).toBe(0);
  const samples = new Map<string, number>();
  for (const line of r.stdout.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{.*\})?) (\S+)$/.exec(line);
    if (m) samples.set(m[1], Number(m[2]));
  }
  return samples;
}

/**
 * header-rewrite's own metrics of node N, collected now: the timer collects every 5 minutes, a test
 * asks it for a fresh sample instead of waiting.
 */
export function collectMetrics(sb: Suite, n: SandboxNode): Map<string, number> {
  const r = onNode(n, `systemctl start ${METRICS_COLLECTOR.service}.service`);
  expect(r.status, r.stderr).toBe(0);
  return scrape(sb, n, EXPORTERS.node.port);
}

/** The sum of every sample of METRIC whose labels include all of LABELS. */
export function value(
  samples: Map<string, number>,
  metric: string,
  labels: Record<string, string> = {},
): number {
  let sum = 0;
  let seen = false;
  for (const [k, v] of samples) {
    const [name, rest = ""] = k.split("{");
    if (name !== metric) continue;
    if (Object.entries(labels).every(([l, want]) => rest.includes(`${l}="${want}"`))) {
      sum += v;
      seen = true;
    }
  }
  expect(seen, `${metric}${JSON.stringify(labels)} is exported`).toBe(true);
  return sum;
}

export function metricsTests(sb: Suite): void {
  it("the alert rules load in promtool and every metric they use is exported by every node", () => {
    const check = sh(`promtool check rules ${RULES}`);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const rules = (
      YAML.parse(fs.readFileSync(RULES, "utf8")) as { groups: { rules: { expr: string }[] }[] }
    ).groups
      .flatMap((g) => g.rules)
      .map((r) => String(r.expr));
    const used = new Set(
      rules.flatMap((e) => [...e.matchAll(/\b([a-z_][a-z0-9_]*)\s*(?=[{\s)<>=!*+-]|$)/g)].map((m) => m[1])),
    );
    // Functions, operators and Prometheus's own `up` (set by the scraper, not by an exporter).
    const notMetrics = new Set(["up", "time", "delta", "increase", "and", "or", "unless", "by"]);
    const metrics = [...used].filter((m) => !notMetrics.has(m) && /_/.test(m));
    expect(metrics.length).toBeGreaterThanOrEqual(8);
    for (const n of sb.t.nodes.filter((x) => x.kind !== "stock")) {
      const exported = new Set(
        [...scrape(sb, n, EXPORTERS.node.port).keys(), ...scrape(sb, n, EXPORTERS.postfix.port).keys()].map(
          (k) => k.split("{")[0],
        ),
      );
      for (const m of metrics) expect(exported.has(m), `${n.name} exports ${m}`).toBe(true);
    }
    console.log(`alert rules: ${rules.length} rules over ${metrics.join(", ")}; all exported by every node`);
  });

  it("the numbers move: deferred while tenant B is down, delivered when it is back, a pinning refusal counted", async () => {
    const n = sb.t.nodes.find((x) => x.name === "lon1")!;
    const sink = sb.t.sinks.find((s) => s.tenantId === "new_example")!;
    const collect = () => collectMetrics(sb, n);
    const postfix = () => scrape(sb, n, EXPORTERS.postfix.port);
    // The daily rotation first: the exporter must keep counting in the rotated file (it stopped once,
    // at midnight, when rotation replaced the file with a root-only one).
    const rotated = onNode(
      n,
      "systemctl start header-rewrite-postfix-logrotate.service && stat -c '%a %U:%G' /var/log/postfix.log",
    );
    expect(rotated.status, rotated.stderr).toBe(0);
    expect(rotated.stdout.trim()).toBe("640 root:adm");
    expect(onNode(n, "ls /var/log | grep -c '^postfix.log.*gz$'").stdout.trim()).not.toBe("0");
    const before = { own: collect(), exporter: postfix() };
    const refused0 = value(before.own, "header_rewrite_refusals_total", { reason: "tenant_pinning" });
    const delivered0 = value(before.own, "header_rewrite_relayed_recipients", { tenant: "new_example" });
    const deferredLines0 = value(before.exporter, "postfix_smtp_status_deferred");

    stopSink(sink);
    try {
      const { r } = sb.send(n, { from: "alice@old.example", to: "metrics@partner.example" });
      expect(r.status, sb.explain(r, n)).toBe(0);
      await pollUntil("deferred on lon1", () => queue(n).some((e) => e.queue_name === "deferred"), 60_000);
      const down = collect();
      expect(value(down, "header_rewrite_queue_messages", { queue: "deferred" })).toBeGreaterThanOrEqual(1);
      expect(value(down, "header_rewrite_queue_oldest_deferred_seconds")).toBeGreaterThanOrEqual(0);
      expect(value(down, "header_rewrite_nexthop_tls_ok", { tenant: "new_example" })).toBe(0);
      expect(value(down, "header_rewrite_nexthop_tls_ok", { tenant: "other_example" })).toBe(1);
      await pollUntil(
        "the Postfix exporter counts the deferral",
        () => value(postfix(), "postfix_smtp_status_deferred") > deferredLines0,
        30_000,
      );
    } finally {
      await restartSink(sb.t, sink);
    }
    await pollUntil("lon1's queue empty", () => queue(n).length === 0, 60_000);
    const up = collect();
    expect(value(up, "header_rewrite_queue_messages", { queue: "deferred" })).toBe(0);
    expect(value(up, "header_rewrite_nexthop_tls_ok", { tenant: "new_example" })).toBe(1);
    expect(value(up, "header_rewrite_relayed_recipients", { tenant: "new_example" })).toBeGreaterThan(
      delivered0,
    );

    const impostor = sb.t.clients.impostor;
    const refused = sb.send(n, { from: "alice@old.example", netns: impostor.netns, dkim: impostor.dkim });
    expect(refused.r.stdout).toMatch(/550 5\.7\.\d+ /);
    expect(value(collect(), "header_rewrite_refusals_total", { reason: "tenant_pinning" })).toBe(
      refused0 + 1,
    );
    console.log(
      `metrics moved: deferred >= 1 then 0, next hop 0 then 1, relayed ${delivered0} -> ` +
        `${value(up, "header_rewrite_relayed_recipients", { tenant: "new_example" })}, pinning refusals +1`,
    );
  }, 240_000);
}
