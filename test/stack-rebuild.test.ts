// Rebuilding lon1 on Debian 13: its server takes the current image and user-data (README,
// "Replacing a node's server"); everything else of the stack is as always.
import { describeStack } from "./stack.shared";

describeStack("lon", {
  region: "UK1",
  nodes: ["lon1"],
  label: "rebuilding lon1 on Debian 13",
  variant: {
    config: {
      "header-rewrite:protectServers": "false",
      "header-rewrite:rebuildNodes": JSON.stringify(["lon1"]),
      "header-rewrite:image": "Debian 13",
    },
  },
});
