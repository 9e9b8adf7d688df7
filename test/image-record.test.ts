// The record of which BPF object the pinned programs came from (src/dispatcher/identity.ts):
// a start that finds its own version pinned opens it without loading its
// programs (no verifier), and one that finds another version's, or a record
// that no longer names the pinned programs, still compares tags and upgrades.
import { afterAll, afterEach, beforeAll, beforeEach, expect, spyOn, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Dispatcher } from "../src/dispatcher/dispatcher";
import { IMAGE_PIN } from "../src/dispatcher/identity";
import { dispatcherImage } from "../src/dispatcher/image";
import { openPinned, pinDir, upgradeProgram, withPinLock, type Pinned } from "../src/dispatcher/pins";
import { BpfMap } from "../src/ebpf/map";
import { compileDispatcherVariant } from "./helpers/bpf";
import { TestNetns } from "./helpers/netns";

const image = await dispatcherImage();
let variant: Uint8Array;
let dir: string;
let ns: TestNetns;
const loads = spyOn(Dispatcher, "programTags");

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "ep-image-record-"));
  variant = new Uint8Array(readFileSync(compileDispatcherVariant(dir, "EP_TEST_VARIANT")));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeEach(() => {
  ns = TestNetns.enter();
  loads.mockClear();
});
afterEach(() => ns.leave());

/**
 * openPinned as a new process runs it (a serve: create and upgrade; a control command: neither), with its own
 * copy of the image: nothing remembered from an earlier call (tags and digests are kept per image object).
 */
function open(img: Uint8Array, serve = true): Pinned {
  const p = withPinLock(ns.bpffs, () => openPinned(ns.bpffs, Uint8Array.from(img), serve))!;
  p.dispatcher.close();
  return p;
}
const record = () => join(pinDir(ns.bpffs), IMAGE_PIN);
const readRecord = () => {
  const m = BpfMap.fromPin(record(), IMAGE_PIN);
  try {
    return m.lookup(new Uint8Array(4), new Uint8Array(48))!;
  } finally {
    m.close();
  }
};
const writeRecord = (v: Uint8Array) => {
  const m = BpfMap.fromPin(record(), IMAGE_PIN);
  try {
    m.update(new Uint8Array(4), v);
  } finally {
    m.close();
  }
};

test("a start that finds its own version pinned loads no program; one of another version compares tags, upgrades and records", () => {
  const first = open(image);
  expect(first.created).toBe(true);
  expect(existsSync(record())).toBe(true);
  loads.mockClear();

  const again = open(image);
  expect(loads).not.toHaveBeenCalled();
  expect([again.created, again.tag, again.binaryTag, again.upgraded]).toEqual([false, first.tag, first.tag, undefined]);
  // A control command too.
  expect(open(image, false).binaryTag).toBe(first.tag);
  expect(loads).not.toHaveBeenCalled();

  // Another version's object: the record now names it and its programs.
  const up = withPinLock(ns.bpffs, () => upgradeProgram(ns.bpffs, Uint8Array.from(variant)));
  expect(up.to).not.toBe(first.tag);
  expect(open(variant, false).tag).toBe(up.to);
  expect(loads).not.toHaveBeenCalled();

  // This version's serve is not taken in by it: tags, then the upgrade back, recorded.
  const back = open(image);
  expect(loads).toHaveBeenCalledTimes(1);
  expect(back.upgraded).toMatchObject({ from: up.to, to: first.tag, unchanged: false });
  expect([back.tag, back.binaryTag]).toEqual([first.tag, first.tag]);
  loads.mockClear();
  expect(open(image).tag).toBe(first.tag);
  expect(loads).not.toHaveBeenCalled();
});

test("a record that no longer names the pinned programs (replaced by an edgeproxy that predates it) says nothing: the tags decide", () => {
  const first = open(image);
  const stale = readRecord();
  withPinLock(ns.bpffs, () => upgradeProgram(ns.bpffs, Uint8Array.from(variant)));
  // An older edgeproxy upgrades without touching the record: it still has this image's digest, with the old programs' ids.
  writeRecord(stale);
  loads.mockClear();

  const control = open(image, false);
  expect(loads).toHaveBeenCalledTimes(1);
  expect(control.tag).not.toBe(first.tag);
  expect(control.binaryTag).toBe(first.tag);

  const serve = open(image);
  expect(serve.upgraded).toMatchObject({ to: first.tag, unchanged: false });
  expect(serve.tag).toBe(first.tag);
});

test("pins made before the record are opened by their tags, and a serve records them", () => {
  const first = open(image);
  rmSync(record());
  loads.mockClear();

  // A control command changes nothing.
  expect(open(image, false).binaryTag).toBe(first.tag);
  expect(existsSync(record())).toBe(false);
  // A serve of the same version: no upgrade, but the record.
  const serve = open(image);
  expect(loads).toHaveBeenCalledTimes(2);
  expect([serve.upgraded, serve.tag]).toEqual([undefined, first.tag]);
  expect(existsSync(record())).toBe(true);
  loads.mockClear();
  open(image);
  expect(loads).not.toHaveBeenCalled();
});
