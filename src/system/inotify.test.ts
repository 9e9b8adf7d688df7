import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_MOVED_FROM, IN_MOVED_TO, PathWatch } from "./inotify";

const MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;

test("PathWatch tells each change of a directory's entries once, and the directory's own removal", () => {
  const dir = mkdtempSync(join(tmpdir(), "ep-inotify-"));
  const w = new PathWatch(dir, MASK);
  try {
    expect(w.changed()).toBe(false);
    writeFileSync(join(dir, "a"), "x");
    expect(w.changed()).toBe(true);
    expect(w.changed()).toBe(false); // read: only what comes after
    renameSync(join(dir, "a"), join(dir, "b"));
    expect(w.changed()).toBe(true);
    writeFileSync(join(dir, "b"), "y"); // a write into an entry is no change of the entries (IN_MODIFY is not asked for)
    expect(w.changed()).toBe(false);
    rmSync(dir, { recursive: true });
    expect(w.changed()).toBe(true);
  } finally {
    w.close();
    w.close();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(w.changed()).toBe(true); // closed: nothing can be vouched for
});

test("PathWatch: a parent renamed (no event on the watched directory) is a change too, and so is a new directory at the path", () => {
  const root = mkdtempSync(join(tmpdir(), "ep-inotify-"));
  const dir = join(root, "a", "b");
  mkdirSync(dir, { recursive: true });
  const w = new PathWatch(dir, MASK);
  try {
    expect(w.changed()).toBe(false);
    renameSync(join(root, "a"), join(root, "c"));
    expect(w.changed()).toBe(true); // the path names nothing
    expect(w.moved()).toBe(true);
    mkdirSync(dir, { recursive: true });
    expect(w.changed()).toBe(true); // the path names another directory than the one watched
    expect(w.changed()).toBe(true); // for as long as it does
    expect(w.moved()).toBe(true); // a new watch is needed: no event of the new directory comes to this one
  } finally {
    w.close();
    rmSync(root, { recursive: true, force: true });
  }
});

test("PathWatch.moved: false while the path names the watched inode, whatever happens inside it; reads no event", () => {
  const dir = mkdtempSync(join(tmpdir(), "ep-inotify-"));
  const w = new PathWatch(dir, MASK);
  try {
    expect(w.moved()).toBe(false);
    writeFileSync(join(dir, "a"), "x");
    expect(w.moved()).toBe(false);
    expect(w.changed()).toBe(true); // the event is still there for changed()
  } finally {
    w.close();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(w.moved()).toBe(true); // closed
});

test("PathWatch of a path that does not exist: one clear error", () => {
  expect(() => new PathWatch("/nonexistent/ep-inotify", MASK)).toThrow(/watch \/nonexistent\/ep-inotify/);
});
