// Two nodes, rebuilding lon1 on Debian 13: its server takes the current image and user-data (README,
// "Replacing a node's server"); lon2 keeps its own, and its Postfix waits for lon1's check.
import { describeStack } from "../helpers/stack";

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
    },
  },
});
