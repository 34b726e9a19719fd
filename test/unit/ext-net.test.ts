// How a node's gateway and resolvers are chosen from Ext-Net's subnets, and what an operator reads
// when the cloud does not give what the node needs (before any server exists).
import { describe, expect, it } from "vitest";
import { loadStackConfig } from "../../src/config/stack-config";
import { nodeResolvers, subnetHolding } from "../../src/cloud/relay-node";

const SUBNETS = [
  { cidr: "198.51.100.0/24", gatewayIp: "198.51.100.1", dnsNameservers: [] },
  { cidr: "203.0.113.0/24", gatewayIp: "203.0.113.1", dnsNameservers: ["192.0.2.53"] },
];

describe("Ext-Net subnets", () => {
  it("the gateway and resolvers are those of the subnet holding the address, whatever the order", () => {
    expect(subnetHolding("lon1", "203.0.113.10", 4, SUBNETS)).toEqual({
      gateway: "203.0.113.1",
      dns: ["192.0.2.53"],
    });
    expect(subnetHolding("lon1", "198.51.100.9", 4, [...SUBNETS].reverse()).gateway).toBe("198.51.100.1");
    expect(
      subnetHolding("lon1", "2001:db8:ffff::a", 6, [
        { cidr: "2001:db8:ffff::/64", gatewayIp: "2001:db8:ffff:0:0:0:0:1" },
      ]).gateway,
    ).toBe("2001:db8:ffff::1");
  });

  it("an address no subnet holds is an error naming the node, the address and the subnets", () => {
    expect(() => subnetHolding("lon1", "192.0.2.7", 4, SUBNETS)).toThrow(
      "lon1: no IPv4 subnet of Ext-Net holds 192.0.2.7 (subnets: 198.51.100.0/24, 203.0.113.0/24)",
    );
    expect(() => subnetHolding("bhs1", "2001:db8::7", 6, [])).toThrow("(subnets: none)");
  });

  it("resolvers: the stack's own first, else the subnets' (deduplicated); none at all says how to set them", () => {
    const cfg = loadStackConfig("lon");
    expect(
      nodeResolvers("lon1", cfg, ["203.0.113.10"], [["192.0.2.53"], ["192.0.2.53", "2001:db8::53"]]),
    ).toEqual(["192.0.2.53", "2001:db8::53"]);
    const own = { ...cfg, dnsResolvers: ["198.51.100.53"] };
    expect(nodeResolvers("lon1", own, ["203.0.113.10"], [["192.0.2.53"]])).toEqual(["198.51.100.53"]);
    expect(() => nodeResolvers("lon1", cfg, ["203.0.113.10", "2001:db8:ffff::a"], [[], []])).toThrow(
      "lon1: the Ext-Net subnets holding 203.0.113.10 and 2001:db8:ffff::a list no DNS resolvers " +
        "(hint: pulumi config set --path 'header-rewrite:dnsResolvers[0]' <resolver address>)",
    );
  });
});
