// The resource graph one `pulumi up -s <stack>` would create, checked under Pulumi's mocks.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import * as YAML from "yaml";
import { PROJECT_ROOT as ROOT } from "../../src/project";
import {
  type StackRun,
  type StackVariant,
  fixture,
  mockPortMac,
  runStack,
  stackConfig,
  value,
} from "./pulumi-mocks";
import { tenantCertsViaLego } from "../../src/config/images";
import { tenantCertChainFiles } from "../../src/node-layout";
import {
  CONFIG_KEYS,
  OPTIONAL_SECRET_KEYS,
  PROJECT,
  PROVIDER_KEYS,
  SECRET_KEYS,
} from "../../src/config/stack-config";
import { loadMaps } from "../../src/maps/relay-maps";
import { NETWORK_FILE, NETWORK_SWITCH } from "../../src/render/node-render";
import { releaseId } from "../../src/deploy/region-gate";

const T = {
  keypair: "openstack:compute/keypair:Keypair",
  secgroup: "openstack:networking/secGroup:SecGroup",
  rule: "openstack:networking/secGroupRule:SecGroupRule",
  port: "openstack:networking/port:Port",
  instance: "openstack:compute/instance:Instance",
  record: "ovh:Domain/zoneRecord:ZoneRecord",
  reverse: "ovh:Ip/reverse:Reverse",
  command: "command:remote:Command",
  hostKey: "tls:index/privateKey:PrivateKey",
};

interface CloudConfig {
  write_files: { path: string; content: string }[];
  ssh_keys: { ed25519_private: string; ed25519_public: string };
  [key: string]: unknown;
}

/** The public half ssh-keygen derives from a private key (proves a pair belongs together). */
function publicOf(privateKey: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-key-"));
  fs.writeFileSync(path.join(dir, "k"), privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, {
    mode: 0o600,
  });
  const r = spawnSync("ssh-keygen", ["-y", "-f", path.join(dir, "k")], { encoding: "utf8" });
  fs.rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`ssh-keygen -y: ${r.stderr}`);
  return r.stdout.trim().split(/\s+/).slice(0, 2).join(" ");
}

// How the engine protocol marks a secret value (Pulumi's rpc "specialSigKey" / "specialSecretSig").
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270";
/** Every node gets its deploy steps and the drain (each a remote command). */
const STEP_COUNT_AT_LEAST = 5;
function unsecret(v: any): any {
  return v && v[SECRET_SIG] === SECRET_VALUE ? v.value : v;
}

export interface StackExpectation {
  region: string;
  nodes: string[];
  /** Config on top of the stack's fixture (e.g. the dns-01 challenge with its credentials). */
  variant?: StackVariant;
  /** What the variant is, in the test names (default: its ACME challenge). */
  label?: string;
}

export function describeStack(stack: string, expected: StackExpectation): void {
  const effective = stackConfig(stack, expected.variant).config;
  const challenge = effective[`${PROJECT}:acmeChallenge`] ?? "http-01";
  const image = effective[`${PROJECT}:image`] ?? "Debian 12";
  const reverseBlockV6 = Number(effective[`${PROJECT}:reverseBlockV6`] ?? 128);
  const protect = effective[`${PROJECT}:protectServers`] !== "false";
  const rebuild = JSON.parse(effective[`${PROJECT}:rebuildNodes`] ?? "[]") as string[];
  // The resolvers: the stack's own, else those of the Ext-Net subnet holding the address (mocks).
  const resolvers = JSON.parse(effective[`${PROJECT}:dnsResolvers`] ?? '["192.0.2.53"]') as string[];
  const variant = expected.label ?? challenge;
  const rolloutAfter = effective[`${PROJECT}:rolloutAfter`];
  const release = releaseId(loadMaps(path.join(ROOT, "maps")));
  describe(`stack ${stack}${expected.variant ? ` (${variant})` : ""} under Pulumi mocks`, () => {
    let run: StackRun;
    const maps = loadMaps(path.join(ROOT, "maps"));
    beforeAll(async () => {
      run = await runStack(stack, {
        // A stack that rolls out after another finds this release run there (test/unit/stack-gate.test.ts: not).
        stackOutputs: rolloutAfter ? { [`organization/header-rewrite/${rolloutAfter}`]: { release } } : {},
        ...expected.variant,
      });
    }, 60_000);

    it("fixture holds every value of the stack file and a fake for every secret", () => {
      const f = fixture(stack);
      const file = YAML.parse(fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8"))
        .config as Record<string, unknown>;
      for (const [k, v] of Object.entries(file)) {
        expect(f.config[k], `fixture value for ${k}`).toBe(typeof v === "string" ? v : JSON.stringify(v));
      }
      for (const k of [...SECRET_KEYS, ...PROVIDER_KEYS.secret]) {
        if ((OPTIONAL_SECRET_KEYS as readonly string[]).includes(k) && !(k in f.config)) continue;
        expect(f.secretKeys, `${k} listed as secret`).toContain(k);
        expect(f.config[k], `fake value for ${k}`).toBeTruthy();
      }
      for (const k of PROVIDER_KEYS.required) expect(Object.keys(f.config), `provider key ${k}`).toContain(k);
      for (const k of Object.keys(f.config).filter((k) => k.startsWith(`${PROJECT}:`))) {
        expect(
          [...CONFIG_KEYS.map((c) => `${PROJECT}:${c}`), ...SECRET_KEYS],
          `${k} is a key the program reads`,
        ).toContain(k);
      }
    });

    it(`puts every OpenStack resource in region ${expected.region}`, () => {
      const os = run.resources.filter((r) => r.type.startsWith("openstack:"));
      expect(os.length).toBeGreaterThan(5);
      for (const r of os) expect(r.inputs.region, `${r.type} ${r.name}`).toBe(expected.region);
      expect(run.byType(T.keypair)).toHaveLength(1);
      expect(run.byType(T.secgroup)).toHaveLength(1);
    });

    it("opens TCP 25 only to allow-listed clients, 22 to admins, 80 for http-01, exporters to monitoring, ICMP", () => {
      const rules = run.byType(T.rule).map((r) => r.inputs);
      const tcp = (port: number) =>
        rules
          .filter((r) => r.protocol === "tcp" && r.portRangeMin === port && r.portRangeMax === port)
          .map((r) => `${r.ethertype} ${r.remoteIpPrefix}`)
          .sort();
      expect(tcp(25)).toEqual(maps.clientRanges.map((c) => `IPv${c.family} ${c.cidr}`).sort());
      const admin = JSON.parse(fixture(stack).config[`${PROJECT}:adminCidrs`]) as string[];
      expect(tcp(22)).toEqual(admin.map((c) => `${c.includes(":") ? "IPv6" : "IPv4"} ${c}`).sort());
      expect(tcp(80)).toEqual(challenge === "http-01" ? ["IPv4 0.0.0.0/0", "IPv6 ::/0"] : []);
      // The exporters: only to the monitoring networks, none unless configured.
      const monitoring = JSON.parse(effective[`${PROJECT}:monitoringCidrs`] ?? "[]") as string[];
      const scrapers = monitoring.map((c) => `${c.includes(":") ? "IPv6" : "IPv4"} ${c}`).sort();
      expect(tcp(9100)).toEqual(scrapers);
      expect(tcp(9154)).toEqual(scrapers);
      expect(rules.filter((r) => r.protocol === "icmp").map((r) => r.ethertype)).toEqual(["IPv4"]);
      expect(rules.filter((r) => r.protocol === "ipv6-icmp").map((r) => r.ethertype)).toEqual(["IPv6"]);
      for (const r of rules) expect(r.direction).toBe("ingress");
      // Replacing a rule (any field) or the keypair (its key) must delete first: Neutron and Nova
      // refuse a duplicate (409).
      for (const r of run.byType(T.rule)) expect(r.opts.deleteBeforeReplace, r.name).toBe(true);
      for (const k of run.byType(T.keypair)) expect(k.opts.deleteBeforeReplace, k.name).toBe(true);
      // A server owns its pre-created port: the replacement can only attach it once the old is gone.
      for (const s of run.byType(T.instance)) expect(s.opts.deleteBeforeReplace, s.name).toBe(true);
      expect(rules.every((r) => r.securityGroupId === `relay-${stack}-id`)).toBe(true);
    });

    for (const [i, name] of expected.nodes.entries()) {
      const ipv4 = `203.0.113.${10 + i}`;
      const ipv6 = `2001:db8:ffff::${(10 + i).toString(16)}`;
      const fqdn = `${name}.example.net`;

      it(`${name}: the Ext-Net port exists before the server, which runs on it, protected`, () => {
        const port = run.one(T.port, `${name}-port`);
        const server = run.one(T.instance, name);
        expect(port.inputs.networkId).toBe("ext-net-id");
        expect(port.inputs.securityGroupIds).toEqual([`relay-${stack}-id`]);
        expect(port.order).toBeLessThan(server.order);
        expect(server.inputs.networks).toEqual([{ port: `${name}-port-id` }]);
        expect(server.inputs.imageName).toBe(image);
        expect(server.inputs.keyPair).toBe(`header-rewrite-${stack}`);
        expect(server.inputs.securityGroups ?? []).toEqual([]);
        expect(server.opts.protect).toBe(protect);
        expect(port.opts.protect).toBe(protect);
        // Image and user-data changes never replace a server, unless the node is being rebuilt.
        if (rebuild.includes(name)) expect(server.opts.ignoreChanges ?? []).toEqual([]);
        else expect(server.opts.ignoreChanges).toEqual(expect.arrayContaining(["userData", "imageName"]));
      });

      it(`${name}: its SSH host key: created by the program, delivered by user-data, verified by every command`, async () => {
        const key = run.one(T.hostKey, `${name}-host-key`);
        expect(key.inputs.algorithm).toBe("ED25519");
        expect(key.opts.protect, "protected with the server: rotating it is a rebuild").toBe(protect);
        const server = run.one(T.instance, name);
        // user-data holds the private half: it reaches the engine as a secret.
        expect(server.inputs.userData[SECRET_SIG]).toBe(SECRET_VALUE);
        const ud = YAML.parse(unsecret(server.inputs.userData) as string) as CloudConfig;
        const pinned = ud.ssh_keys.ed25519_public.split(/\s+/).slice(0, 2).join(" ");
        expect(pinned).toMatch(/^ssh-ed25519 AAAA/);
        expect(publicOf(ud.ssh_keys.ed25519_private)).toBe(pinned);
        // The image's keys go, and with ssh_keys given cloud-init generates none (cc_ssh).
        expect(ud.ssh_deletekeys).toBe(true);
        expect(Object.keys(ud.ssh_keys).sort()).toEqual(["ed25519_private", "ed25519_public"]);
        expect(ud.ssh_pwauth).toBe(false);
        const commands = run.byType(T.command).filter((c) => c.name.startsWith(`${name}-`));
        expect(commands.length).toBeGreaterThan(STEP_COUNT_AT_LEAST);
        for (const c of commands) {
          const hostKey = unsecret(c.inputs.connection).hostKey as string;
          expect(hostKey?.trim(), `${c.name} verifies the server`).toBe(ud.ssh_keys.ed25519_public.trim());
        }
        expect((await value(pulumi.output(run.program.sshHostKeys)))[name]).toBe(
          ud.ssh_keys.ed25519_public.trim(),
        );
      });

      it(`${name}: user-data: networkd file on the port's MAC, addresses, gateways, resolvers; image check`, () => {
        const ud = unsecret(run.one(T.instance, name).inputs.userData) as string;
        expect(ud.startsWith("#cloud-config\n")).toBe(true);
        const files = (YAML.parse(ud) as { write_files: { path: string; content: string }[] }).write_files;
        const network = files.find((f) => f.path === NETWORK_FILE)!.content;
        // The interface is the one with the port's MAC, whatever the image calls it.
        expect(network).toContain(`[Match]\nMACAddress=${mockPortMac(10 + i)}\n`);
        expect(network).toContain(`Address=${ipv4}/32\nAddress=${ipv6}/128\n`);
        expect(network).toContain("[Route]\nGateway=203.0.113.1\nGatewayOnLink=yes\n");
        expect(network).toContain("[Route]\nGateway=2001:db8:ffff::1\nGatewayOnLink=yes\n");
        expect(network.match(/^DNS=.*$/gm)).toEqual(resolvers.map((r) => `DNS=${r}`));
        const firstBoot = files.find((f) => f.path === NETWORK_SWITCH)!.content;
        const versionId = image.split(" ")[1];
        expect(firstBoot).toContain(`[ "\${VERSION_ID:-}" = ${versionId} ]`);
        expect(firstBoot).toContain(`-v mac="${mockPortMac(10 + i)}"`);
        expect(YAML.parse(ud).runcmd[0]).toBe(`${NETWORK_SWITCH} || exit 1`);
        expect(YAML.parse(ud).packages).not.toContain("ifupdown");
        expect(ud).not.toContain("[2001:");
        expect(ud).toContain("network: {config: disabled}");
        // Ext-Net lists two IPv4 subnets in the mocks: the gateway comes from the one holding the port's
        // address (203.0.113.1), never from the other (198.51.100.1).
        expect(ud).not.toContain("198.51.100.1");
        const listCalls = run.calls.filter((c) => c.token.endsWith("getSubnetIdsV2"));
        expect(listCalls.map((c) => c.args.ipVersion).sort()).toEqual(expect.arrayContaining([4, 6]));
        for (const c of listCalls) expect(c.args.networkId).toBe("ext-net-id");
      });

      it(`${name}: removing it drains it between its DNS records and its server`, () => {
        const drain = run.one(T.command, `${name}-drain`);
        // Nothing runs when it is created; its delete runs the drain script on the node.
        expect(drain.inputs.create).toBeUndefined();
        expect(drain.inputs.delete).toMatch(/^sudo bash -s # drain [0-9a-f]{16}$/);
        expect(drain.inputs.stdin).toContain(
          `# header-rewrite: drain ${fqdn} before its server is deleted\n`,
        );
        expect(drain.inputs.stdin).toContain("BOUND='900'");
        // Deletion runs in reverse dependency order: records, then the drain, then the server.
        expect(drain.opts.dependsOn).toEqual([name]);
        for (const r of run.byType(T.record).filter((x) => x.name.startsWith(`${name}-`)))
          expect(r.opts.dependsOn, r.name).toEqual([`${name}-drain`]);
        expect(unsecret(drain.inputs.connection)).toMatchObject({ host: ipv4, user: "debian" });
      });

      it(`${name}: A and AAAA for the node and the shared name; PTRs with a trailing dot after them`, () => {
        const records = run
          .byType(T.record)
          .filter((r) => r.name.startsWith(`${name}-`))
          .map((r) => r.inputs);
        const seen = records.map((r) => `${r.subdomain} ${r.fieldtype} ${r.target}`).sort();
        expect(seen).toEqual(
          [`${name} A ${ipv4}`, `${name} AAAA ${ipv6}`, `relay A ${ipv4}`, `relay AAAA ${ipv6}`].sort(),
        );
        for (const r of records) {
          expect(r.zone).toBe("example.net");
          expect(r.ttl).toBe(300);
        }
        const ptr4 = run.one(T.reverse, `${name}-ptr4`);
        const ptr6 = run.one(T.reverse, `${name}-ptr6`);
        expect(ptr4.inputs).toMatchObject({
          ip: `${ipv4}/32`,
          ReverseIp: ipv4,
          ReverseValue: `${fqdn}.`,
          readinessTimeoutDuration: "5m",
        });
        // The block OVH files the IPv6 address under: the address itself (/128) unless the stack says wider.
        const block6 = reverseBlockV6 === 128 ? `${ipv6}/128` : `2001:db8:ffff::/${reverseBlockV6}`;
        expect(ptr6.inputs).toMatchObject({ ip: block6, ReverseIp: ipv6, ReverseValue: `${fqdn}.` });
        // The reverse's ID is the address: a create-first replacement would delete the new PTR.
        expect(ptr4.opts.deleteBeforeReplace && ptr6.opts.deleteBeforeReplace).toBe(true);
        expect(ptr4.opts.dependsOn).toEqual([`${name}-a`, name]);
        expect(ptr6.opts.dependsOn).toEqual([`${name}-aaaa`, name]);
        expect(ptr4.order).toBeGreaterThan(run.one(T.record, `${name}-a`).order);
      });

      it(`${name}: config push: cloud-init wait -> certificates -> pin secret -> Postfix -> verify -> metrics`, () => {
        const cmd = (id: string) => run.one(T.command, `${name}-${id}`);
        const [wait, cert, client, pinSecret, postfix, verify, metrics] = [
          cmd("cloud-init"),
          cmd("certificate"),
          cmd("client-certificates"),
          cmd("pin-secret"),
          cmd("postfix"),
          cmd("verify"),
          cmd("metrics"),
        ];
        expect(wait.opts.dependsOn).toEqual([name]);
        expect(cert.opts.dependsOn).toEqual([`${name}-cloud-init`, `${name}-a`, `${name}-aaaa`]);
        expect(client.opts.dependsOn).toEqual([`${name}-certificate`]);
        expect(pinSecret.opts.dependsOn).toEqual([`${name}-client-certificates`]);
        // Rolling: a node's Postfix changes only after the node before it passed its check.
        const before = expected.nodes[i - 1];
        expect(postfix.opts.dependsOn).toEqual([
          `${name}-pin-secret`,
          ...(before ? [`${before}-verify`] : []),
        ]);
        expect(verify.opts.dependsOn).toEqual([`${name}-postfix`]);
        expect(metrics.opts.dependsOn).toEqual([`${name}-verify`]);
        const order = [wait, cert, client, pinSecret, postfix, verify, metrics].map((c) => c.order);
        expect(order).toEqual([...order].sort((x, y) => x - y));
        expect(postfix.inputs.stdin, "the release has run where it must first").not.toContain("REFUSED");
        expect(verify.inputs.stdin).toContain(`passed its post-deploy check`);
        for (const c of [wait, cert, client, pinSecret, postfix, verify, metrics]) {
          expect(unsecret(c.inputs.connection)).toMatchObject({ host: ipv4, user: "debian" });
          expect(c.inputs.triggers).toEqual([`${name}-id`]);
          expect(c.inputs.create).toMatch(/^sudo bash -s # [a-z-]+ [0-9a-f]{16}$/);
          expect(c.inputs.update).toBe(c.inputs.create);
          // Debian's sshd refuses the Setenv of the previous output (a warning on every update).
          expect(c.inputs.addPreviousOutputInEnv).toBe(false);
        }
        // The Postfix bundle carries no secret and stays reviewable in `pulumi preview`.
        expect(typeof postfix.inputs.stdin).toBe("string");
        expect(postfix.inputs.stdin).toContain(`myhostname = ${fqdn}`);
        expect(postfix.inputs.stdin).toContain('postmap -c "$STAGE"');
        expect(postfix.inputs.stdin).toContain('mv -T "$RELEASES/.live.tmp" "$LIVE"');
        expect(unsecret(cert.inputs.stdin)).toContain(`NODE='${fqdn}'\n`);
        // Steps built from secrets are secrets whatever they hold today.
        expect(cert.inputs.stdin[SECRET_SIG], "certificate script is a secret").toBe(SECRET_VALUE);
        expect(client.inputs.stdin[SECRET_SIG], "client certificate script is a secret").toBe(SECRET_VALUE);
        expect(pinSecret.inputs.stdin[SECRET_SIG], "pin secret script is a secret").toBe(SECRET_VALUE);
        const secret = effective[`${PROJECT}:pinSecret`];
        if (secret)
          expect(unsecret(pinSecret.inputs.stdin)).toContain(
            `pin_secret() {\n  cat <<'HEADER_REWRITE_EOF'\n${secret}\n`,
          );
        else expect(unsecret(pinSecret.inputs.stdin)).not.toContain("pin_secret() {");
        if (challenge === "dns-01") {
          const dns = JSON.parse(effective[`${PROJECT}:acmeDnsOvhCredentials`]);
          expect(unsecret(cert.inputs.stdin)).toContain(
            `dns_ovh_application_secret = ${dns.applicationSecret}`,
          );
          expect(unsecret(cert.inputs.stdin)).toContain(`NODE_NAMES=('${fqdn}' 'relay.example.net')`);
        }
        // Certificates the nodes obtain per tenant: named in the certificate step (a secret, as it
        // holds the OVH API key) and presented to that tenant's next hop only.
        const obtained = Object.entries(
          JSON.parse(effective[`${PROJECT}:tenantCertificates`] ?? "{}") as Record<string, string>,
        );
        const viaLego = tenantCertsViaLego(image);
        if (obtained.length) {
          const dns = JSON.parse(effective[`${PROJECT}:acmeDnsOvhCredentials`]);
          expect(unsecret(cert.inputs.stdin)).toContain(
            `TENANT_NAMES=(${obtained.map(([, n]) => `'${n}'`).join(" ")})`,
          );
          expect(unsecret(cert.inputs.stdin)).toContain(dns.applicationSecret);
        }
        for (const [id, name] of obtained)
          expect(postfix.inputs.stdin).toContain(
            `-o smtp_tls_chain_files=${tenantCertChainFiles(id, name, viaLego)}`,
          );
        const certs = effective[`${PROJECT}:clientCertificates`];
        const tenants = certs ? Object.keys(JSON.parse(certs)) : [];
        for (const id of tenants) {
          expect(postfix.inputs.stdin).toContain(
            `-o smtp_tls_chain_files=/etc/header-rewrite/client-certs/${id}.pem`,
          );
          expect(client.inputs.stdin[SECRET_SIG], "client certificate script is a secret").toBe(SECRET_VALUE);
          expect(unsecret(client.inputs.stdin)).toContain(
            `ship '/etc/header-rewrite/client-certs/${id}.pem' 600`,
          );
        }
        const own = [
          ...obtained.map(([id, n]) => `${id}: obtains ${n}${viaLego ? " (lego)" : " (certbot)"}`),
          ...tenants.map((id) => `${id}: operator client certificate`),
        ];
        console.log(`${name}: ${own.length ? own.join("; ") : "node certificate for every tenant"}`);
      });
    }

    it("exports addresses per node, the shared service name and the smart hosts for the connector", async () => {
      const p = run.program;
      const nodes = await value(p.nodeAddresses as Record<string, any>);
      for (const [i, name] of expected.nodes.entries()) {
        expect(await value(nodes[name].fqdn)).toBe(`${name}.example.net`);
        expect(await value(nodes[name].ipv4)).toBe(`203.0.113.${10 + i}`);
        expect(await value(nodes[name].ipv6)).toBe(`2001:db8:ffff::${(10 + i).toString(16)}`);
      }
      expect(p.serviceName).toBe("relay.example.net");
      expect(p.smartHosts).toEqual(expected.nodes.map((n) => `${n}.example.net`));
      // What a stack with rolloutAfter reads; the mocks' commands succeed, so every node "passed".
      expect(await value(p.release)).toBe(release);
      const refs = run.byType("pulumi:pulumi:StackReference").map((r) => r.inputs.name);
      expect(refs).toEqual(rolloutAfter ? [`organization/header-rewrite/${rolloutAfter}`] : []);
    });

    it("keeps secrets secret: no secret, nor any line or field of one, in a non-secret input or an output", async () => {
      const { config, secretKeys } = stackConfig(stack, expected.variant);
      const needles = secretKeys.flatMap((k) => secretNeedles(config[k]).map((n) => ({ key: k, n })));
      expect(needles.length).toBeGreaterThanOrEqual(secretKeys.length);
      // And each server's host key, which the program creates itself.
      for (const r of run.byType(T.instance)) {
        const ud = YAML.parse(unsecret(r.inputs.userData) as string) as CloudConfig;
        for (const n of secretNeedles(ud.ssh_keys.ed25519_private))
          needles.push({ key: `${r.name} host key`, n });
      }
      const leaks: string[] = [];
      const search = (where: string, texts: string[]) => {
        for (const { key, n } of needles) {
          if (texts.some((t) => t.includes(n))) leaks.push(`${where} holds ${key} (${n.slice(0, 24)}…)`);
        }
      };
      for (const r of run.resources) {
        search(`${r.type} ${r.name} input`, plainStrings(r.inputs));
        if (r.type === T.command) {
          // The whole connection reaches the engine wrapped as a secret.
          expect(r.inputs.connection[SECRET_SIG]).toBe(SECRET_VALUE);
          expect(unsecret(r.inputs.connection).privateKey).toBe(config[`${PROJECT}:deploySshPrivateKey`]);
          const out = (r.resource as unknown as { connection: pulumi.Output<unknown> }).connection;
          expect(await pulumi.isSecret(out), `${r.name} connection is a Pulumi secret`).toBe(true);
        }
      }
      for (const [name, out] of Object.entries(run.program)) {
        if (pulumi.Output.isInstance(out) && (await pulumi.isSecret(out))) continue;
        search(`output ${name}`, plainStrings(await value(pulumi.output(out))));
      }
      expect(leaks).toEqual([]);
    });
  });
}

/**
 * What must never appear outside a secret: the value, each of its lines and (for JSON) each of its
 * string fields, decoded. Short or public framing lines (PEM armour) are not secret on their own.
 */
export function secretNeedles(value: string): string[] {
  const out = new Set<string>();
  const add = (v: string) => {
    for (const part of [v, ...v.split(/\r?\n/)]) {
      const t = part.trim();
      if (t.length >= 12 && !/^-----(BEGIN|END) [A-Z ]+-----$/.test(t)) out.add(t);
    }
  };
  add(value);
  try {
    for (const s of plainStrings(JSON.parse(value))) add(s);
  } catch {
    // not JSON: the value and its lines are the needles
  }
  return [...out];
}

/** Every string inside V, decoded, skipping values the engine protocol marks as secret. */
function plainStrings(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (!v || typeof v !== "object") return [];
  if ((v as Record<string, unknown>)[SECRET_SIG] === SECRET_VALUE) return [];
  return Object.values(v as Record<string, unknown>).flatMap(plainStrings);
}
