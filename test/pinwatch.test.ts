// The steering watchdog's cheap look (PinWatch, src/dispatcher/verify.ts) on
// a real bpffs with the real program and link pinned: it vouches for the pins
// only while nothing changed, and a pin directory replaced at its path is
// watched afresh at the next full look.
import { expect, test } from "bun:test";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { dispatcherImage } from "../src/dispatcher/image";
import { PinWatch } from "../src/dispatcher/verify";
import { dispatcherFixture } from "./helpers/fixture";

const image = await dispatcherImage();
const fx = dispatcherFixture(image);

/** A full look as the watchdog makes one (begin, the look, verified) that found everything in place. */
function fullLook(w: PinWatch): void {
  w.verified(w.begin());
}

test("PinWatch: cheap looks vouch until a pin changes; a pin directory replaced by one naming the same objects is watched again after a full look", () => {
  const dir = join(fx.ns.bpffs, "pins");
  mkdirSync(dir);
  const link = fx.d.attach();
  const pinBoth = () => {
    fx.d.program!.pinAt(join(dir, "prog"));
    link.pin(join(dir, "link"));
  };
  pinBoth();
  const w = new PinWatch(dir);
  try {
    expect(w.unchanged()).toBe(false); // nothing verified yet
    fullLook(w);
    expect(w.unchanged()).toBe(true);
    expect(w.unchanged()).toBe(true);

    // Another directory at the path, with pins of the same program and link (what a full look verifies).
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    pinBoth();
    expect(w.unchanged()).toBe(false); // the old directory's removal is an event, and the path names another inode
    fullLook(w);
    // Watched afresh: cheap looks vouch again (without it, every look after the swap was a full one).
    expect(w.unchanged()).toBe(true);

    // And the new directory's changes are seen: a pin removed there.
    rmSync(join(dir, "link"));
    expect(w.unchanged()).toBe(false);
  } finally {
    w.close();
    fx.d.detach();
  }
});
