import * as fs from "node:fs";
import * as path from "node:path";
import { MAP_FILES, type RelayMaps, parseMaps } from "../../src/maps";
import { ROOT } from "./stack";

/** The committed maps plus one per-address override (bob -> robert): a typical one-line edit. */
export function editedMaps(): RelayMaps {
  const texts = {} as Record<keyof typeof MAP_FILES, string>;
  const files = {} as Record<keyof typeof MAP_FILES, string>;
  for (const [k, name] of Object.entries(MAP_FILES) as [keyof typeof MAP_FILES, string][]) {
    texts[k] = fs.readFileSync(path.join(ROOT, "maps", name), "utf8");
    files[k] = `maps/${name}`;
  }
  texts.translations += "bob@old.example robert@new.example\n";
  return parseMaps(texts, files);
}
