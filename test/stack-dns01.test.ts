// Stack bhs with the dns-01 challenge: no TCP 80, and the certificate step (which then carries the
// OVH API credentials) stays a Pulumi secret.
import { describeStack } from "./stack.shared";

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
      "header-rewrite:acmeDnsOvhCredentials": JSON.stringify(credentials),
    },
    secretKeys: ["header-rewrite:acmeDnsOvhCredentials"],
  },
});
