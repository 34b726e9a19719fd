// Stack bhs with the dns-01 challenge: no TCP 80, and the certificate step (which then carries the
// OVH API credentials) stays a Pulumi secret.
import { describeStack } from "../helpers/stack";

const credentials = {
  endpoint: "ovh-ca",
  applicationKey: "fake-dns01-application-key",
  applicationSecret: "fake-dns01-application-secret",
  consumerKey: "fake-dns01-consumer-key",
};

describeStack("bhs", {
  region: "BHS5",
  nodes: ["bhs1"],
  variant: {
    config: {
      "header-rewrite:acmeChallenge": "dns-01",
      // bhs runs Debian 13, which does not package certbot's OVH plugin (src/config/images.ts).
      "header-rewrite:image": "Debian 12",
      "header-rewrite:acmeDnsOvhCredentials": JSON.stringify(credentials),
      // Resolvers of the stack's own choosing instead of the subnet's.
      "header-rewrite:dnsResolvers": JSON.stringify(["198.51.100.53", "2001:db8:5::53"]),
      // A monitoring host in each family may scrape the exporters.
      "header-rewrite:monitoringCidrs": JSON.stringify(["198.51.100.9/32", "2001:db8:ad::9/128"]),
      // A region whose /ip API files Public Cloud IPv6 under a wider block.
      "header-rewrite:reverseBlockV6": "56",
    },
    secretKeys: ["header-rewrite:acmeDnsOvhCredentials"],
  },
});
