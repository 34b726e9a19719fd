// End to end through real Postfix on both sandbox nodes: the production deploy scripts over SSH,
// certbot against Pebble, tenant A's client and an outsider in their own namespaces, tenant sinks
// standing in for Microsoft. One sandbox for all suites (its namespaces have fixed names, so this
// replaces a running `npm start` sandbox).
//
// Each suite needs only what up() builds (none relies on an earlier one), so one runs alone:
// npm run test:sandbox -- -t "sandbox: tenant pinning". The order below matters for two suites
// only, because they use something up; they run last, and say so.
import { afterAll, beforeAll, describe } from "vitest";
import { type Sandbox, down, up } from "../../sandbox/up";
import { suite } from "./harness";
import { relayTests } from "./relay";
import { tlsTests } from "./tls";
import { noLossTests } from "./noloss";
import { securityTests } from "./security";
import { pinningTests } from "./pinning";
import { corpusTests } from "./corpus";
import { hardeningTests } from "./hardening";
import { rolloutTests } from "./rollout";
import { statusTests } from "./status";
import { drainTests } from "./drain";
import { metricsTests } from "./metrics";
import { faultTests } from "./faults";

const DIR = "/var/tmp/header-rewrite-sandbox-test";
let sandbox: Sandbox;
const sb = suite(() => sandbox);

beforeAll(async () => {
  sandbox = await up(DIR, { install: false });
}, 900_000); // a fresh machine builds both node images first (about a minute each)
afterAll(() => down(DIR, { quiet: true }));

describe("sandbox: relaying through two real nodes", () => relayTests(sb));
describe("sandbox: TLS in and out", () => tlsTests(sb));
describe("sandbox: tenant pinning", () => pinningTests(sb));
describe("sandbox: real mail through both nodes", () => corpusTests(sb));
describe("sandbox: pinned host keys and node hardening", () => hardeningTests(sb));
describe("sandbox: rolling out across the fleet", () => rolloutTests(sb));
describe("sandbox: fleet status", () => statusTests(sb));
describe("sandbox: metrics", () => metricsTests(sb));
describe("sandbox: faults that must not stay silent", () => faultTests(sb));
describe("sandbox: no message lost", () => noLossTests(sb));
// Last: its rate-limit burst uses up tenant A's connection budget on one node for a minute.
describe("sandbox: security battery", () => securityTests(sb));
// After everything else: it removes both nodes.
describe("sandbox: removing nodes without losing mail", () => drainTests(sb));
