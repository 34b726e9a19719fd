import { type RelayMaps, parseMaps } from "../../src/maps";

/** The committed maps with one added per-address override (bob -> robert): a typical one-line edit. */
export function editedMaps(): RelayMaps {
  return parseMaps({
    translations: "@old.example @new.example\n@legacy.example @other.example\nbob@old.example robert@new.example\n",
    allowedSenders: "old.example OK\nlegacy.example OK\n",
    relayhosts: "@new.example [new-example.mail.protection.outlook.com]\n@other.example [other-example.mail.protection.outlook.com]\n",
    clientRanges: "192.0.2.0/24 OK\n",
  }, { translations: "t", allowedSenders: "a", relayhosts: "r", clientRanges: "c" });
}
