// Ad-hoc experiment (not committed): where does pinning cost throughput?
import { up, down } from "../sandbox/up";
import { deployNode, nodeContext } from "../sandbox/nodes";
import { startLoad, waitForArrivals } from "../sandbox/mail";
import { performance } from "node:perf_hooks";
const N = 300;
async function main() {
  const dir = "/var/tmp/header-rewrite-sandbox-bench";
  const { t, stacks, maps } = await up(dir, { install: false, stockNode: true });
  const relay = t.nodes.find((n) => n.kind !== "stock")!;
  const stock = t.nodes.find((n) => n.kind === "stock")!;
  const ctx0 = nodeContext(t, relay, stacks, maps);
  const ctx = { ...ctx0, cfg: { ...ctx0.cfg, clientMessageRateLimit: 1_000_000, clientConnectionRateLimit: 1_000_000 } };
  const variants: Record<string, (f: Record<string, string>) => Record<string, string>> = {
    full: (f) => f,
    noMilter: (f) => ({ ...f, "master.cf": f["master.cf"].replace(/^ +-o smtpd_milters=.*\n/m, "") }),
    onePassNoMilter: (f) => ({ ...f, "master.cf": f["master.cf"].replace(/^ +-o (smtpd_milters|receive_override_options|content_filter)=.*\n/gm, "") }),
  };
  const tp = async (n: typeof relay, label: string) => {
    const prefix = `x-${label}-${Date.now()}`;
    const t0 = performance.now();
    const s = await startLoad(t, n, { count: N, prefix, connections: 4, deadline: 180 });
    const c = await waitForArrivals(t, prefix, N, 180_000);
    return `${label}: ${(N / ((performance.now() - t0) / 1000)).toFixed(1)} msg/s (failed ${s.failed.length}, arrived ${c.size})`;
  };
  try {
    for (let round = 0; round < 2; round++) {
      for (const [name, edit] of Object.entries(variants)) {
        const r = deployNode(t, relay, ctx, { edit });
        if (r.status) throw new Error(r.stderr);
        await new Promise((r) => setTimeout(r, 2000));
        console.log(await tp(relay, name));
      }
      console.log(await tp(stock, "stock"));
    }
  } finally {
    down(dir, { quiet: true });
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
