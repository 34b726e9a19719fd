// npm run sandbox:down: removes every namespace, process and mount the sandbox made (mounts live in
// the nodes' own mount namespaces and go with their processes), and the sandbox directory.
import { DEFAULT_DIR } from "./topology";
import { down } from "./up";

down(process.env.HEADER_REWRITE_SANDBOX ?? DEFAULT_DIR);
