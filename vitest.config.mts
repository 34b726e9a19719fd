import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // Each file gets its own process: Pulumi mocks and config are global per process.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 180_000,
  },
});
