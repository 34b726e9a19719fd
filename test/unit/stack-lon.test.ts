import { describeStack } from "../helpers/stack";

describeStack("lon", { region: "UK1", nodes: ["lon1"] });
