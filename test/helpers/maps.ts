import * as path from "node:path";
import { type RelayMaps, parseMaps, readMapTexts } from "../../src/maps";
import { ROOT } from "./stack";

/** The committed maps plus one per-address override (bob -> robert): a typical one-line edit. */
export function editedMaps(): RelayMaps {
  const { texts, files } = readMapTexts(path.join(ROOT, "maps"));
  return parseMaps(
    { ...texts, translations: texts.translations + "bob@old.example robert@new.example\n" },
    files,
  );
}
