import { describeStack } from "./stack.shared";

describeStack("lon", { region: "UK1", nodes: ["lon1"] });
