// The sandbox's network: a router namespace ("wan") with one bridge, the documentation ranges on it,
// and one veth per host. Plain hosts get static addresses; relay nodes configure themselves.
import { NETWORKS, type Topology } from "./topology";
import { must, sh } from "./shell";

/** The relay node's interface name: one no OVH image uses, so only the MAC match can find it. */
export const NODE_IFACE = "pub0";

function networkScript(t: Topology): string {
  const wan = t.wan.netns;
  const lines = [
    "set -euo pipefail",
    `ip netns add ${wan}`,
    `ip -n ${wan} link set lo up`,
    `ip -n ${wan} link add br0 type bridge`,
    `ip -n ${wan} link set br0 up`,
    `ip netns exec ${wan} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`,
  ];
  for (const net of Object.values(NETWORKS)) {
    if ("v4" in net) lines.push(`ip -n ${wan} addr add ${net.v4} dev br0`);
    lines.push(`ip -n ${wan} addr add ${net.v6} dev br0 nodad`);
  }
  lines.push(
    `ip -n ${wan} addr add ${t.dns.ipv4}/32 dev br0`,
    `ip -n ${wan} addr add ${t.dns.ipv6}/128 dev br0 nodad`,
  );
  lines.push(`ip -n ${wan} addr add ${t.acme.ipv4}/32 dev br0`);
  lines.push(`ip -n ${wan} addr add ${t.ovhApi.ipv4}/32 dev br0`);
  // Hosts other than nodes: plain addresses and default routes (nodes configure themselves).
  const plain = (ns: string, veth: string, ipv4: string, ipv6: string, gw4: string, gw6: string) => [
    `ip netns add ${ns}`,
    `ip -n ${wan} link add ${veth} type veth peer name eth0 netns ${ns}`,
    `ip -n ${wan} link set ${veth} master br0 up`,
    `ip -n ${ns} link set lo up`,
    `ip -n ${ns} link set eth0 up`,
    `ip -n ${ns} addr add ${ipv4}/32 dev eth0`,
    `ip -n ${ns} route add ${gw4} dev eth0`,
    `ip -n ${ns} route add default via ${gw4} dev eth0`,
    `ip -n ${ns} addr add ${ipv6}/64 dev eth0 nodad`,
    `ip -n ${ns} -6 route add default via ${gw6} dev eth0`,
  ];
  const { allowed, impostor, outsider } = t.clients;
  // The impostor shares tenant A's network: Exchange Online's addresses are shared by every tenant.
  for (const c of [allowed, impostor])
    lines.push(...plain(c.netns, c.veth, c.ipv4, c.ipv6, "192.0.2.1", "2001:db8:a::1"));
  lines.push(
    ...plain(outsider.netns, outsider.veth, outsider.ipv4, outsider.ipv6, "198.51.100.1", "2001:db8:bad::1"),
  );
  for (const s of t.sinks)
    lines.push(...plain(s.netns, s.veth, s.ipv4, s.ipv6, "198.51.100.1", "2001:db8:5::1"));
  lines.push(...plain(t.trap.netns, t.trap.veth, t.trap.ipv4, t.trap.ipv6, "198.51.100.1", "2001:db8:5::1"));
  for (const n of t.nodes) {
    // The node's interface carries the port's MAC under a name no file mentions: the node's own
    // systemd-networkd finds it by MAC and gives it its addresses (the rendered network file).
    lines.push(
      `ip netns add ${n.netns}`,
      `ip -n ${wan} link add ${n.veth} type veth peer name ${NODE_IFACE} netns ${n.netns}`,
      `ip -n ${n.netns} link set ${NODE_IFACE} address ${n.mac}`,
      `ip -n ${wan} link set ${n.veth} master br0 up`,
    );
  }
  return lines.join("\n") + "\n";
}

export function buildNetwork(t: Topology): void {
  must(sh(networkScript(t)), "building the sandbox network");
}
