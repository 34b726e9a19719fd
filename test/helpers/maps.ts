import type { RelayMaps } from "../../src/maps/relay-maps";
import { committedMapsWith } from "../../sandbox/topology";

/** The committed maps plus one per-address override (bob -> robert): a typical one-line edit. */
export function editedMaps(): RelayMaps {
  return committedMapsWith({ translate_domains: ["bob@old.example robert@new.example"] });
}
