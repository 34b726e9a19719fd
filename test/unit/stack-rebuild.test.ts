// Two nodes, rebuilding lon1 on Debian 13: its server takes the current image and user-data (README,
// "Replacing a node's server"); lon2 keeps its own, and its Postfix waits for lon1's check. Tenant
// other_example takes a certificate the operator supplies; new_example keeps the one the nodes obtain.
import { describeStack } from "../helpers/stack";
import { clientBundle } from "../helpers/test-ca";

const supplied = clientBundle("relay-client.example.net");

describeStack("lon", {
  region: "UK1",
  nodes: ["lon1", "lon2"],
  label: "two nodes, rebuilding lon1 on Debian 13",
  variant: {
    config: {
      "header-rewrite:nodes": JSON.stringify(["lon1", "lon2"]),
      "header-rewrite:protectServers": "false",
      "header-rewrite:rebuildNodes": JSON.stringify(["lon1"]),
      "header-rewrite:image": "Debian 13",
      "header-rewrite:tenantCertificates": JSON.stringify({ new_example: "relay.new.example" }),
      "header-rewrite:clientCertificates": JSON.stringify({ other_example: supplied }),
    },
    secretKeys: ["header-rewrite:clientCertificates"],
  },
});
