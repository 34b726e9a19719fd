// One evaluation of the Pulumi program under Pulumi's mocks (a fresh process each time): prints the
// evaluation time and the inputs of every remote command, which decide whether `pulumi up` runs it.
import * as crypto from "node:crypto";
import { performance } from "node:perf_hooks";
import { runStack } from "../test/helpers/pulumi-mocks";
import { runMain } from "../sandbox/shell";

async function main(): Promise<void> {
  const [stack, projectDir] = process.argv.slice(2);
  const t0 = performance.now();
  const run = await runStack(stack, {}, projectDir);
  const ms = run.lastRegistrationAt - t0;
  const digest = (v: unknown) =>
    crypto.createHash("sha256").update(JSON.stringify(v)).digest("hex").slice(0, 16);
  const commands = Object.fromEntries(
    // The deploy steps (a drain command runs only when its node is removed).
    run
      .byType("command:remote:Command")
      .filter((c) => c.inputs.create !== undefined)
      .map((c) => {
        const { connection: _c, ...inputs } = c.inputs;
        return [c.name, digest(inputs)];
      }),
  );
  process.stdout.write(JSON.stringify({ stack, ms, resources: run.resources.length, commands }) + "\n");
  process.exit(0);
}

runMain(main);
