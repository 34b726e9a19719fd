import { defineConfig } from "vitest/config";

// Three tiers, each runnable alone (npm run test:unit / test:node / test:sandbox); npm test runs all.
//   unit:    pure code, Pulumi's mocks, and the tools that read what render writes (postconf, bash);
//            no namespaces, seconds to a few minutes.
//   node:    one real Postfix node in a network namespace of its own (test/helpers/node.ts), or
//            steps run in a private mount namespace (root).
//   sandbox: the whole local sandbox (nodes booted with systemd, DNS, ACME, tenants), one file.
const tier = (name: string) => ({
  extends: true as const,
  test: { name, include: [`test/${name}/**/*.test.ts`] },
});

export default defineConfig({
  test: {
    globalSetup: ["test/global-setup.ts"],
    // Each file gets its own process: Pulumi mocks and config are global per process.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 180_000,
    projects: [tier("unit"), tier("node"), tier("sandbox")],
  },
});
