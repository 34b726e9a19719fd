// Rolling out across the fleet as `pulumi up -s lon` then `-s bhs` does (sandbox/rollout.ts): node by
// node, each after its post-deploy check, and bhs only with a release lon has run.
import { expect, it } from "vitest";
import { POSTFIX_LIVE, RELEASE_MARKER } from "../../src/node-layout";
import { parseMaps, readMapTexts } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { onNode } from "../../sandbox/node-host";
import { deployNode, nodeContext } from "../../sandbox/nodes";
import { restartSink, stopSink } from "../../sandbox/services";
import { ranReleases, rollout } from "../../sandbox/rollout";
import type { SandboxNode } from "../../sandbox/topology";
import { liveRelease } from "../helpers/deploys";
import { editedMaps } from "../helpers/maps";
import type { Suite } from "./harness";

/** A typo in a tenant's next hop: the maps validate, Postfix accepts it, no mail would arrive. */
function typoInNexthop() {
  const texts = readMapTexts(MAPS_DIR);
  texts.per_sender_relayhosts = texts.per_sender_relayhosts.replace(
    "[new-example.mail.protection.outlook.com]",
    "[new-example.mail.protection.outlok.com]",
  );
  return parseMaps(texts);
}

export function rolloutTests(sb: Suite): void {
  const node = (name: string): SandboxNode => sb.t.nodes.find((n) => n.name === name)!;
  const marker = (n: SandboxNode) => onNode(n, `cat ${POSTFIX_LIVE}/${RELEASE_MARKER}`).stdout.trim();
  const restore = () => {
    const r = rollout(sb.t, sb.sandbox.stacks, sb.sandbox.maps);
    expect(r.ok, r.deployed.map((d) => d.result.stderr).join("\n")).toBe(true);
  };

  const stops =
    "a change Postfix accepts but that breaks delivery stops at lon1, which returns to its release";
  it(`${stops}; bhs1 never gets it`, async () => {
    const [lon1, bhs1] = [node("lon1"), node("bhs1")];
    const before = { lon1: liveRelease(lon1), bhs1: liveRelease(bhs1), bhs1Marker: marker(bhs1) };
    const ranBefore = ranReleases(sb.t);
    const out = rollout(sb.t, sb.sandbox.stacks, typoInNexthop());
    try {
      expect(out.ok).toBe(false);
      expect(
        out.deployed.map((d) => d.node),
        "lon rolls out first and the rollout stops there",
      ).toEqual(["lon1"]);
      const { stderr } = out.deployed[0].result;
      expect(stderr).toMatch(
        /post-deploy check on lon1\.example\.net: tenant \S+ next hop \[new-example\.mail\.protection\.outlok\.com\]/,
      );
      expect(stderr).toContain(
        `FAILED its post-deploy check on lon1.example.net; switched back to ${before.lon1}`,
      );
      expect(liveRelease(lon1), "lon1 is back on its previous release").toBe(before.lon1);
      expect(liveRelease(bhs1), "bhs1 was never touched").toBe(before.bhs1);
      expect(marker(bhs1)).toBe(before.bhs1Marker);
      expect(ranReleases(sb.t), "no stack records the broken release as run").toEqual(ranBefore);
      // Both nodes keep relaying to the tenant the typo would have lost.
      for (const n of [lon1, bhs1]) {
        const got = await sb.relayed(n, { from: "alice@old.example", to: "board@partner.example" });
        expect(got.sink).toBe("[new-example.mail.protection.outlook.com]");
      }
      console.log(`rollout stopped at lon1: ${stderr.trim().split("\n").pop()}`);
    } finally {
      restore();
    }
  });

  it("bhs refuses a release lon has not run, takes it when forced by name, and a rollout goes lon then bhs", () => {
    const bhs1 = node("bhs1");
    const before = liveRelease(bhs1);
    const edited = editedMaps();
    try {
      const refused = rollout(sb.t, sb.sandbox.stacks, edited, { only: ["bhs"], forced: "" });
      expect(refused.ok).toBe(false);
      const { stderr } = refused.deployed[0].result;
      expect(stderr).toContain(`REFUSED: release ${refused.release} has not run in stack lon`);
      expect(liveRelease(bhs1), "nothing on bhs1 changed").toBe(before);
      const translate = () =>
        onNode(bhs1, "postmap -q bob@old.example cdb:/etc/postfix/translate_domains").stdout.trim();
      expect(translate()).toBe("");

      const forced = rollout(sb.t, sb.sandbox.stacks, edited, { only: ["bhs"], forced: refused.release });
      expect(forced.ok, forced.deployed[0].result.stderr).toBe(true);
      expect(translate()).toBe("robert@new.example");
      console.log(`bhs refused, then forced: ${stderr.trim()}`);
    } finally {
      const back = rollout(sb.t, sb.sandbox.stacks, sb.sandbox.maps);
      expect(back.ok, back.deployed.map((d) => `${d.node}: ${d.result.stderr}`).join("\n")).toBe(true);
      expect(back.deployed.map((d) => d.node)).toEqual(["lon1", "bhs1"]);
      expect(back.completed).toEqual(["lon", "bhs"]);
    }
  });

  it("a change to a tenant's path that fails the check returns lon1 to its release; retried later, it goes live", async () => {
    const lon1 = node("lon1");
    const sink = sb.t.sinks.find((x) => x.tenantId === "new_example")!;
    const before = liveRelease(lon1);
    // A change of how tenants are reached (IPv6 allowed): the check must prove the new path.
    const base = nodeContext(sb.t, lon1, sb.sandbox.stacks, sb.sandbox.maps);
    const dualStack = { ...base, cfg: { ...base.cfg, forceIPv4ToTenants: false } };
    try {
      stopSink(sink);
      const failed = deployNode(sb.t, lon1, dualStack);
      expect(failed.status).not.toBe(0);
      expect(failed.stderr).toMatch(
        /next hop \[new-example\.mail\.protection\.outlook\.com\]: .*Connection refused/,
      );
      expect(failed.stderr).toContain(`switched back to ${before}`);
      expect(liveRelease(lon1)).toBe(before);
      await restartSink(sb.t, sink);
      // The next `pulumi up` retries the failed step; the Postfix step before it is unchanged and not re-run.
      const retry = deployNode(sb.t, lon1, dualStack, { only: ["verify"] });
      expect(retry.status, retry.stderr).toBe(0);
      expect(retry.stdout).toMatch(/is live again on lon1\.example\.net for its check/);
      expect(liveRelease(lon1)).not.toBe(before);
      expect(onNode(lon1, "postconf -P tenant_new_example/unix/inet_protocols").stdout.trim()).toBe("");
    } finally {
      await restartSink(sb.t, sink);
      restore();
    }
  }, 180_000);
}
