// Which BPF object the pinned programs were loaded from, recorded beside the
// pins, so a start that finds the namespace's dispatcher pinned can tell it is
// its own version's without loading its programs to compare their tags
// (Dispatcher.programTags: the verifier on every program, ~10 ms on a quiet
// 2-core machine, several times that on a busy one). The record only says
// "same" when it is sure: anything else falls back to the tags (pins.ts).
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { BpfMap, pinnedOrCreated, withPinned } from "../ebpf/map";
import { programInfo } from "../ebpf/object";

/*
 * ep_image: one entry (key u32 0), RECORD_SIZE bytes, little endian:
 *   0 u8[32] sha256 of the BPF object (ELF) the pinned programs came from
 *  32 u32    kernel id of the pinned ep_dispatch ("prog")
 *  36 u32    ... of ep_migrate ("migrate")
 *  40 u32    ... of ep_source ("source"), 0 when none is pinned
 *  44 u32    reserved, 0
 * The ids tie the digest to the very programs it describes: a program id is
 * never reused while the program lives, and a pinned one lives. Whoever
 * replaces a program without rewriting the record (an edgeproxy that predates
 * it, upgrading the pins to its own version) leaves ids that no longer match,
 * so the record then says nothing and the tags decide, as before it existed.
 * No program reads this map: the programs' and maps' definitions are unchanged.
 */
export const IMAGE_PIN = "ep_image";
const RECORD_SIZE = 48;
const BPF_MAP_TYPE_ARRAY = 2;
const KEY = new Uint8Array(4);

const digests = new WeakMap<Uint8Array, Uint8Array>();

/** sha256 of the object's bytes (once per image). */
export function imageDigest(image: Uint8Array): Uint8Array {
  let d = digests.get(image);
  if (!d) {
    d = new Uint8Array(createHash("sha256").update(image).digest());
    digests.set(image, d);
  }
  return d;
}

/** The kernel ids of the pinned programs (source 0: none pinned), and ep_dispatch's tag. */
export interface PinnedPrograms {
  readonly dispatch: number;
  readonly migrate: number;
  readonly source: number;
  readonly tag: string;
}

function infoOf(path: string, what: string): { id: number; tag: string } {
  return withPinned(path, `pinned program ${what}`, programInfo);
}

export function pinnedPrograms(dir: string): PinnedPrograms {
  const prog = infoOf(join(dir, "prog"), "ep_dispatch");
  return {
    dispatch: prog.id,
    migrate: infoOf(join(dir, "migrate"), "ep_migrate").id,
    source: existsSync(join(dir, "source")) ? infoOf(join(dir, "source"), "ep_source").id : 0,
    tag: prog.tag,
  };
}

function encode(image: Uint8Array, p: PinnedPrograms): Uint8Array {
  const b = new Uint8Array(RECORD_SIZE);
  b.set(imageDigest(image), 0);
  const v = new DataView(b.buffer);
  v.setUint32(32, p.dispatch, true);
  v.setUint32(36, p.migrate, true);
  v.setUint32(40, p.source, true);
  return b;
}

function isRecordMap(map: BpfMap): boolean {
  const def = map.definition();
  return def.type === BPF_MAP_TYPE_ARRAY && def.keySize === 4 && def.valueSize === RECORD_SIZE && def.maxEntries >= 1;
}

/** Whether the record in dir says that the pinned programs `p` are the ones `image` loads. */
export function recordedImage(dir: string, image: Uint8Array, p: PinnedPrograms): boolean {
  const path = join(dir, IMAGE_PIN);
  if (!existsSync(path)) return false;
  const map = BpfMap.fromPin(path, IMAGE_PIN);
  try {
    if (!isRecordMap(map)) return false;
    const v = map.lookup(KEY, new Uint8Array(RECORD_SIZE));
    // ids of 0 never match: a record zeroed (or never written) says nothing.
    return !!v && p.dispatch !== 0 && Buffer.from(v).equals(Buffer.from(encode(image, p)));
  } finally {
    map.close();
  }
}

/**
 * Record that the programs pinned in dir now are `image`'s (call under the
 * pin lock, right after they were loaded from it or found equal to it by
 * their tags; for a new namespace, in the directory about to be renamed into
 * place). Creates and pins the map when it is not there.
 */
export function recordImage(dir: string, image: Uint8Array, p: PinnedPrograms): void {
  // A pinned map of another shape is not one this code made (the update would copy its value size from our buffer):
  // replaced. A new one is pinned zeroed for a moment: ids of 0 match no programs (recordedImage).
  const map = pinnedOrCreated(join(dir, IMAGE_PIN), IMAGE_PIN, BPF_MAP_TYPE_ARRAY, 4, RECORD_SIZE, 1, isRecordMap);
  try {
    map.update(KEY, encode(image, p));
  } finally {
    map.close();
  }
}
