// What decides a rollout: the release a change makes, the order of the stacks, and when a stack
// that rolls out after another may take a release.
import { describe, expect, it } from "vitest";
import { readMapTexts, parseMaps } from "../../src/maps/relay-maps";
import { MAPS_DIR } from "../../src/project";
import { releaseId, rolloutOrder, rolloutRefusal } from "../../src/deploy/region-gate";

describe("rollout", () => {
  const texts = readMapTexts(MAPS_DIR);
  const release = releaseId(parseMaps(texts));

  it("a release changes with a map line, not with a comment", () => {
    const commented = {
      ...texts,
      translate_domains: `# a note for the next admin\n${texts.translate_domains}`,
    };
    expect(releaseId(parseMaps(commented))).toBe(release);
    const edited = {
      ...texts,
      translate_domains: `${texts.translate_domains}bob@old.example robert@new.example\n`,
    };
    expect(releaseId(parseMaps(edited))).not.toBe(release);
  });

  it("a stack after another takes only what that stack ran, or what is forced by its name", () => {
    const gate = { stack: "bhs", after: "lon", release };
    expect(rolloutRefusal({ ...gate, ran: release })).toBeUndefined();
    expect(rolloutRefusal({ ...gate, ran: undefined })).toMatch(/has completed no release yet/);
    expect(rolloutRefusal({ ...gate, ran: "0123456789abcdef" })).toMatch(
      /last completed release 0123456789abcdef/,
    );
    expect(rolloutRefusal({ ...gate, ran: "0123456789abcdef", forced: release })).toBeUndefined();
    // Forcing names one release: a force left in the environment does not wave the next one through.
    expect(rolloutRefusal({ ...gate, ran: "0123456789abcdef", forced: "fedcba9876543210" })).toBeDefined();
  });

  it("orders stacks after the stack they roll out after, and names a cycle", () => {
    const s = (stack: string, rolloutAfter = "") => ({ stack, cfg: { rolloutAfter } });
    const order = rolloutOrder([s("bhs", "lon"), s("lon"), s("gra", "organization/header-rewrite/bhs")]);
    expect(order.map((x) => x.stack)).toEqual(["lon", "bhs", "gra"]);
    expect(() => rolloutOrder([s("a", "b"), s("b", "a")])).toThrow(/a after b, b after a/);
  });
});
