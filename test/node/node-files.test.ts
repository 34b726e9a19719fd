// What a node runs is files under node/, each checked by its own language's tools: the systemd
// units by systemd-analyze (here), the shell by shellcheck and the Python by pyflakes3 and pytest
// (npm run lint, test/unit/python.test.ts). And the paths the units name are the ones the steps use.
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadStackConfig, nodeIdentity } from "../../src/config/stack-config";
import { deploySteps, drainScript, pinMilterArgs } from "../../src/deploy/steps";
import {
  LEGO_RENEW,
  LEGO_SETTINGS,
  METRICS_COLLECTOR,
  METRICS_TEXTFILE,
  PIN_MILTER,
  POSTFIX_LOG,
  POSTFIX_LOG_ROTATE,
} from "../../src/node-layout";
import { loadMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR, PROJECT_ROOT as ROOT } from "../../src/project";
import { readNodeFiles, renderNode } from "../../src/render/node-render";
import { PLACEHOLDER_SECRETS } from "../../src/review/offline-review";
import { shellQuote as q } from "../../src/deploy/shell-text";

const files = readNodeFiles();
const units = Object.keys(files).filter((f) => f.startsWith("systemd/"));

/** KEY=value of UNIT's section lines (the last one wins, as for systemd's single-valued keys). */
function unitValue(unit: string, key: string): string | undefined {
  return [...files[`systemd/${unit}`].matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].pop()?.[1];
}

describe("node/systemd", () => {
  it("has the units the steps install", () => {
    expect(units.map((u) => path.basename(u)).sort()).toEqual(
      [
        "header-rewrite-lego-renew.service",
        "header-rewrite-lego-renew.timer",
        "header-rewrite-metrics.service",
        "header-rewrite-metrics.timer",
        "header-rewrite-pin.service",
        "header-rewrite-postfix-logrotate.service",
        "header-rewrite-postfix-logrotate.timer",
      ].sort(),
    );
  });

  it("every unit passes systemd-analyze verify without a word, its programs where the steps install them", () => {
    // A private mount namespace: the programs go to /usr/local (tmpfs there) only for this check.
    const install =
      `install -m 755 ${q(path.join(ROOT, "node", "sbin"))}/* /usr/local/sbin/ && ` +
      "mkdir -p /usr/local/lib/header-rewrite && " +
      `install -m 755 ${q(path.join(ROOT, "node"))}/*.py /usr/local/lib/header-rewrite/`;
    const r = spawnSync(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        `set -e; mount -t tmpfs tmpfs /usr/local/sbin; mount -t tmpfs tmpfs /usr/local/lib; ${install}
         systemd-analyze verify ${units.map((u) => q(path.join(ROOT, "node", u))).join(" ")}`,
      ],
      { encoding: "utf8" },
    );
    expect(r.error, "systemd-analyze (package systemd) and unshare are needed").toBeUndefined();
    expect(`${r.stdout}${r.stderr}`).toBe("");
    expect(r.status).toBe(0);
  });

  it("the units run what the steps install, where the rest of the program expects it", () => {
    const m = PIN_MILTER;
    expect(unitValue(`${m.service}.service`, "ExecStart")).toBe(
      `/usr/bin/python3 ${m.program} ${pinMilterArgs().join(" ")}`,
    );
    expect(unitValue(`${m.service}.service`, "User")).toBe(m.user);
    expect(unitValue(`${METRICS_COLLECTOR.service}.service`, "ExecStart")).toBe(
      `/usr/bin/python3 ${METRICS_COLLECTOR.program} --prometheus ${METRICS_COLLECTOR.spec} ${METRICS_TEXTFILE}`,
    );
    expect(unitValue("header-rewrite-postfix-logrotate.service", "ExecStart")).toBe(
      `${POSTFIX_LOG_ROTATE} ${POSTFIX_LOG}`,
    );
    expect(unitValue("header-rewrite-lego-renew.service", "ExecStart")).toBe(
      `${LEGO_RENEW} ${LEGO_SETTINGS} renew`,
    );
    // An admin runs it without arguments: the same settings, renew.
    expect(files["sbin/header-rewrite-lego-renew"]).toContain(
      `settings=\${1:-${LEGO_SETTINGS}} mode=\${2:-renew}`,
    );
  });
});

describe("node/", () => {
  it("every file a node receives is carried by a step (none is dead weight)", () => {
    // Debian 13 with a tenant certificate: the lego renewal is shipped too.
    const cfg = loadStackConfig("bhs");
    const withTenantCert = {
      ...cfg,
      image: "Debian 13",
      tenantCertificates: { new_example: "relay.new.example" },
    };
    const ctx = {
      stack: "bhs",
      cfg: withTenantCert,
      maps: loadMaps(MAPS_DIR),
      node: nodeIdentity(cfg, "bhs1"),
    };
    const shipped = [
      ...deploySteps(withTenantCert, renderNode(ctx), {
        dnsCredentials: PLACEHOLDER_SECRETS.dnsCredentials,
      }).map((s) => s.script),
      drainScript(cfg, ctx.node),
    ].join("\n");
    const strip = (t: string) => t.replace(/^#!.*\n/, "");
    const dead = Object.keys(files).filter((f) => !shipped.includes(strip(files[f])));
    expect(dead).toEqual([]);
  });
});
