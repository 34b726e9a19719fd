import { describeStack } from "./stack.shared";

describeStack("bhs", { region: "BHS5", nodes: ["bhs1"] });
