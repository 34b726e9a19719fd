// The deploy path trusts nothing it has not pinned, and each node is hardened (issue 18), checked on
// the running sandbox nodes with the real tools: ssh / ssh-keyscan from the deployer's and an
// outsider's seat, sshd -T, ss, apt-config, and a reboot with mail in the queue.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { expect, it } from "vitest";
import { firewallRules } from "../../src/cloud/region";
import { METADATA_GUARD, METADATA_SERVICE, renderMetadataGuard } from "../../src/render/node-render";
import { PIN_MILTER } from "../../src/node-layout";
import { shellQuote as q } from "../../src/deploy/shell-text";
import { knownHostsLine } from "../../sandbox/host-keys";
import { waitForMessage } from "../../sandbox/mail";
import { bootContainer, onNode } from "../../sandbox/node-host";
import { deployKeyFile, nodeContext, nodeHostKey, sshOptions } from "../../sandbox/nodes";
import { restartSink, stopSink } from "../../sandbox/services";
import { inNetns, pollUntil } from "../../sandbox/shell";
import type { SandboxNode } from "../../sandbox/topology";
import type { Suite } from "./harness";

const GUARD_UNIT = METADATA_GUARD.name;

/** The public key's type and blob (no comment), as known_hosts and ssh-keyscan print them. */
const blob = (publicKey: string) => publicKey.trim().split(/\s+/).slice(0, 2).join(" ");

export function hardeningTests(sb: Suite): void {
  const relays = () => sb.t.nodes.filter((n) => n.kind !== "stock");
  const ctx = (n: SandboxNode) => nodeContext(sb.t, n, sb.sandbox.stacks, sb.sandbox.maps);
  /** ssh from the deployer's seat (the wan namespace) with these options, running COMMAND. */
  const sshFrom = (n: SandboxNode, options: string, command: string, user = "debian") =>
    inNetns(sb.t.wan.netns, `ssh ${options} ${user}@${n.ipv4} ${q(command)} 2>&1`, undefined, 60_000);
  const acceptedLogins = (n: SandboxNode) =>
    onNode(n, "journalctl -q -o cat -u ssh | grep -c 'Accepted publickey' || true").stdout.trim();

  it("each node answers with exactly its pinned host key, delivered by user-data, readable by root only", () => {
    for (const n of relays()) {
      const scan = inNetns(sb.t.wan.netns, `ssh-keyscan -T 5 ${n.ipv4} 2>/dev/null`);
      const offered = scan.stdout
        .split("\n")
        .filter((l) => l.startsWith(n.ipv4))
        .map((l) => l.split(/\s+/).slice(1).join(" "));
      expect(offered, `${n.name}: ${scan.stdout}`).toEqual([blob(nodeHostKey(sb.t, n).publicKey)]);
      const files = onNode(n, "stat -c '%n %a %U' /etc/ssh/ssh_host_*").stdout.trim().split("\n");
      expect(files.map((f) => f.replace(/\.pub \d+ /, ".pub (public) "))).toEqual([
        "/etc/ssh/ssh_host_ed25519_key 600 root",
        "/etc/ssh/ssh_host_ed25519_key.pub (public) root",
      ]);
      console.log(`${n.name}: ${offered[0].slice(0, 40)}… (the only host key it offers)`);
    }
  });

  it("from the attacker's seat: a server answering at a node's address with another key gets no script", () => {
    const lon1 = relays().find((n) => n.name === "lon1")!;
    // An impostor sshd on lon1's address (port 2222), with a key of its own: what answers first on
    // a fresh server's address could be anyone's. The deployer expects lon1's pinned key there.
    const impostor = `/run/hr-impostor`;
    const started = onNode(
      lon1,
      `mkdir -p ${impostor} && ssh-keygen -q -t ed25519 -N '' -f ${impostor}/key && ` +
        `printf 'Port 2222\\nHostKey ${impostor}/key\\nPidFile ${impostor}/pid\\nUsePAM no\\n' > ${impostor}/config && ` +
        `/usr/sbin/sshd -f ${impostor}/config -E ${impostor}/log && sleep 0.5 && cat ${impostor}/pid`,
    );
    expect(started.status, started.stderr).toBe(0);
    try {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-known-"));
      const knownHosts = path.join(dir, "known_hosts");
      fs.writeFileSync(knownHosts, `${knownHostsLine(`[${lon1.ipv4}]:2222`, nodeHostKey(sb.t, lon1))}\n`);
      const marker = "/root/hr-impostor-ran-a-script";
      const r = sshFrom(
        lon1,
        `-i ${q(deployKeyFile(sb.t))} -p 2222 ${sshOptions(sb.t, knownHosts)}`,
        `sudo touch ${marker}`,
      );
      expect(r.status).not.toBe(0);
      expect(r.stdout).toMatch(/Host key verification failed/);
      expect(onNode(lon1, `test -e ${marker} && echo ran || echo clean`).stdout.trim()).toBe("clean");
      // The client stopped at the key exchange: the impostor never saw an authentication attempt.
      expect(onNode(lon1, `cat ${impostor}/log`).stdout).not.toMatch(/Accepted|Failed|publickey/i);
      // The same deployer with the right known_hosts reaches the real sshd (the check is not just broken).
      expect(
        sshFrom(lon1, `-i ${q(deployKeyFile(sb.t))} ${sshOptions(sb.t)}`, "echo reached").stdout.trim(),
      ).toBe("reached");
      fs.rmSync(dir, { recursive: true, force: true });
    } finally {
      onNode(lon1, `kill "$(cat ${impostor}/pid)" 2>/dev/null; rm -rf ${impostor}`);
    }
  });

  it("SSH: public keys of the deploy user only, no root, no passwords, nothing forwarded (sshd -T)", () => {
    for (const n of relays()) {
      const t = onNode(n, `sshd -T -C user=debian,host=${n.fqdn},addr=192.0.2.10`).stdout;
      for (const line of [
        "authenticationmethods publickey",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "permitrootlogin no",
        "allowusers debian",
        "allowagentforwarding no",
        "allowtcpforwarding no",
        "x11forwarding no",
        "permittunnel no",
        "maxauthtries 3",
        "authorizedkeysfile .ssh/authorized_keys",
      ])
        expect(t.split("\n"), `${n.name}: ${line}`).toContain(line);
      expect(t.split("\n").filter((l) => l.startsWith("hostkey "))).toEqual([
        "hostkey /etc/ssh/ssh_host_ed25519_key",
      ]);
      // Exactly the deploy key and the stack's admin keys may log in.
      const cfg = ctx(n).cfg;
      const authorized = onNode(n, "cat /home/debian/.ssh/authorized_keys").stdout;
      const keys = authorized.split("\n").filter((l) => l.trim() && !l.startsWith("#"));
      expect(keys.map(blob).sort()).toEqual([cfg.deploySshPublicKey, ...cfg.adminSshKeys].map(blob).sort());
      expect(
        onNode(n, "test -s /root/.ssh/authorized_keys && cat /root/.ssh/authorized_keys").stdout,
      ).not.toMatch(/^ssh-/m);
    }
  });

  it("from the attacker's seat: a password, root, or a key nobody listed is refused before a shell", () => {
    const n = relays()[0];
    const pinned = sshOptions(sb.t);
    const before = acceptedLogins(n);
    const password = sshFrom(
      n,
      `${pinned} -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive`,
      "true",
    );
    expect(password.stdout).toMatch(/Permission denied \(publickey\)/);
    const root = sshFrom(n, `-i ${q(deployKeyFile(sb.t))} ${pinned}`, "true", "root");
    expect(root.stdout).toMatch(/Permission denied \(publickey\)/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hr-stranger-"));
    inNetns(sb.t.wan.netns, `ssh-keygen -q -t ed25519 -N '' -f ${q(path.join(dir, "key"))}`);
    const stranger = sshFrom(n, `-i ${q(path.join(dir, "key"))} ${pinned}`, "true");
    expect(stranger.stdout).toMatch(/Permission denied \(publickey\)/);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(acceptedLogins(n)).toBe(before);
  });

  it("nothing listens beyond loopback that the security group does not open", () => {
    for (const n of relays()) {
      const c = ctx(n);
      const open = new Set(firewallRules(c.cfg, sb.sandbox.maps).map((r) => r.port));
      const listeners = onNode(n, "ss -H -ltnu").stdout.trim().split("\n");
      const exposed = listeners
        .map((l) => l.trim().split(/\s+/))
        .map((f) => ({ proto: f[0], local: f[4] }))
        .filter(({ local }) => !/^(127\.|\[::1\]|\[::ffff:127\.|%lo)/.test(local) && !local.includes("%lo:"))
        .map(({ proto, local }) => ({ proto, port: Number(local.slice(local.lastIndexOf(":") + 1)) }));
      const unexpected = exposed.filter((e) => e.proto !== "tcp" || !open.has(e.port));
      expect(unexpected, `${n.name} listens on:\n${listeners.join("\n")}`).toEqual([]);
      const ports = [...new Set(exposed.map((e) => e.port))].sort((a, b) => a - b);
      console.log(`${n.name}: listening beyond loopback on tcp ${ports.join(", ")}`);
    }
  });

  it("only root reaches the metadata service, which serves the user-data (and so the host key)", () => {
    for (const n of relays()) {
      expect(onNode(n, `systemctl is-active ${GUARD_UNIT}`).stdout.trim(), n.name).toBe("active");
      expect(onNode(n, "nft list table inet header_rewrite_guard").stdout).toMatch(
        new RegExp(
          `ip daddr ${METADATA_SERVICE.replace(/\./g, "\\.")} meta skuid != 0 counter packets \\d+ bytes \\d+ reject`,
        ),
      );
    }
    // The same rules, for a documentation address on lon1's own loopback (the network rule: no
    // traffic to 169.254.169.254 from a test): root connects, the milter's user and Postfix's do not.
    const lon1 = relays().find((n) => n.name === "lon1")!;
    const stand = "203.0.113.254";
    const connect = (user: string) =>
      onNode(
        lon1,
        `runuser -u ${user} -- python3 -c 'import socket; socket.create_connection(("${stand}", 8080), 3)' ` +
          "2>/dev/null && echo connected || echo refused",
      ).stdout.trim();
    const setup = onNode(
      lon1,
      `ip addr add ${stand}/32 dev lo && nft -f - && ` +
        `{ python3 -m http.server --bind ${stand} 8080 >/dev/null 2>&1 & echo $! > /run/hr-guard-test.pid; } && sleep 0.5`,
      renderMetadataGuard(stand).rules,
    );
    try {
      expect(setup.status, setup.stderr).toBe(0);
      expect(connect("root")).toBe("connected");
      expect(connect(PIN_MILTER.user)).toBe("refused");
      expect(connect("nobody")).toBe("refused");
      expect(connect("postfix")).toBe("refused");
    } finally {
      onNode(
        lon1,
        `kill "$(cat /run/hr-guard-test.pid)"; rm -f /run/hr-guard-test.pid; ip addr del ${stand}/32 dev lo; ` +
          `systemctl restart ${GUARD_UNIT}`,
      );
    }
    expect(onNode(lon1, "nft list table inet header_rewrite_guard").stdout).toContain(
      `ip daddr ${METADATA_SERVICE}`,
    );
  });

  it("unattended security upgrades run daily and reboot at each node's own hour", () => {
    const hours = new Set<string>();
    for (const n of relays()) {
      const dump = onNode(n, "apt-config dump").stdout;
      expect(dump).toContain('APT::Periodic::Unattended-Upgrade "1";');
      expect(dump).toContain('Unattended-Upgrade::Automatic-Reboot "true";');
      const hour = /Unattended-Upgrade::Automatic-Reboot-Time "(\d\d:\d\d)";/.exec(dump)?.[1];
      expect(hour, n.name).toBeDefined();
      hours.add(`${n.stack}:${hour}`);
      const enabled = onNode(n, "systemctl is-enabled unattended-upgrades apt-daily-upgrade.timer").stdout;
      expect(enabled.trim().split("\n")).toEqual(["enabled", "enabled"]);
    }
    // No two nodes of a stack reboot at the same hour.
    expect(hours.size).toBe(relays().length);
  });

  it("secrets on the node: readable by root only (the pin secret: root and the milter's group)", () => {
    for (const n of relays()) {
      const secrets = onNode(
        n,
        "ls -d /etc/ssh/ssh_host_ed25519_key /var/lib/cloud/instance/user-data.txt " +
          "/etc/letsencrypt/archive/*/privkey*.pem /etc/letsencrypt/ovh.ini /etc/header-rewrite/pin-secret " +
          "/etc/header-rewrite/client-certs/*.pem /etc/header-rewrite/lego/ovh.env " +
          "/etc/header-rewrite/lego/certificates/*.key 2>/dev/null",
      )
        .stdout.trim()
        .split("\n");
      expect(secrets.length, n.name).toBeGreaterThanOrEqual(3);
      for (const f of secrets) {
        // The users a compromise would most likely start from: the milter's (only it reads the pin
        // secret; nobody, which other daemons share, does not), Postfix's and the login user.
        for (const user of [PIN_MILTER.user, "nobody", "postfix", "debian"]) {
          const read = onNode(
            n,
            `runuser -u ${user} -- head -c1 ${q(f)} >/dev/null 2>&1 && echo readable || echo denied`,
          );
          const allowed = f.endsWith("pin-secret") && user === PIN_MILTER.user;
          expect(read.stdout.trim(), `${n.name}: ${user} reading ${f}`).toBe(allowed ? "readable" : "denied");
        }
      }
      // No world-readable file holds a private key.
      const world = onNode(
        n,
        "grep -rlI --exclude-dir=proc 'PRIVATE KEY-----' /etc /var/lib /home /root /usr/local 2>/dev/null | " +
          'while read -r f; do [ $(( 0$(stat -c %a "$f") & 4 )) -ne 0 ] && echo "$f"; done; true',
      );
      expect(world.stdout.trim(), n.name).toBe("");
      // Configuration nobody but root may change, and certificate stores nobody but root may enter.
      const writable = onNode(
        n,
        "find /etc/postfix/ /etc/postfix.releases /etc/letsencrypt /etc/header-rewrite /etc/ssh " +
          "/usr/local/lib/header-rewrite /usr/local/sbin \\( ! -user root -o -perm /022 \\) ! -type l 2>/dev/null",
      );
      expect(writable.stdout.trim(), `${n.name}: not root's, or writable by others`).toBe("");
      const stores = onNode(n, "stat -c '%n %a %U' /etc/letsencrypt/live /etc/letsencrypt/archive").stdout;
      expect(stores.trim().split("\n"), n.name).toEqual([
        "/etc/letsencrypt/live 700 root",
        "/etc/letsencrypt/archive 700 root",
      ]);
    }
  });

  it("a reboot (as unattended-upgrades does it) keeps the queued mail, and the node comes back relaying", async () => {
    const lon1 = relays().find((n) => n.name === "lon1")!;
    const sink = sb.t.sinks.find((s) => s.nexthop === "[new-example.mail.protection.outlook.com]")!;
    stopSink(sink);
    try {
      const { r, id } = sb.send(lon1, {
        from: "alice@old.example",
        headers: ["From: Alice <alice@old.example>"],
      });
      expect(r.status, sb.explain(r, lon1)).toBe(0);
      await pollUntil(
        "the message deferred in lon1's queue",
        () => onNode(lon1, "postqueue -j").stdout.includes("a.smith@new.example"),
        30_000,
      );
      onNode(lon1, "systemctl reboot");
      await pollUntil("lon1 down", () => onNode(lon1, "true").status === -1, 60_000);
      bootContainer(lon1, lon1.root);
      await pollUntil(
        "lon1 back with Postfix running",
        () => onNode(lon1, "systemctl is-active --quiet postfix header-rewrite-pin").status === 0,
        120_000,
      );
      expect(onNode(lon1, "postqueue -j").stdout).toContain("a.smith@new.example");
      await restartSink(sb.t, sink);
      const got = await waitForMessage(sb.t, id, 90_000);
      expect(got, `queued before the reboot, delivered after\n${sb.explain(undefined, lon1)}`).toBeTruthy();
      expect(got!.record.node).toBe("lon1");
    } finally {
      await restartSink(sb.t, sink).catch(() => undefined);
    }
  });
}
