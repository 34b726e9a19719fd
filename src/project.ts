// The project on disk: its root, the committed maps and stack files.
import * as path from "node:path";

export const PROJECT_ROOT = path.join(__dirname, "..");
export const MAPS_DIR = path.join(PROJECT_ROOT, "maps");
