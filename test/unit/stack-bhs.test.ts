import { describeStack } from "../helpers/stack";

describeStack("bhs", { region: "BHS5", nodes: ["bhs1"] });
