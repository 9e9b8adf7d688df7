import { expect, test } from "bun:test";
import { compareMaps, mapDifferences, objectMapDefinitions } from "./compat";
import { MAPS } from "./dispatcher";
import { dispatcherImage } from "./image";

const hash = { type: 1, keySize: 4, valueSize: 8, maxEntries: 4096, flags: 0 };

test("a map is compatible when type, key, value and flags agree; max_entries may differ", () => {
  expect(mapDifferences(hash, { ...hash, maxEntries: 1 }, "the new program")).toEqual([]);
  // BPF_F_RDONLY/WRONLY belong to the creating fd; the kernel does not report them.
  expect(mapDifferences(hash, { ...hash, flags: 1 << 3 }, "the new program")).toEqual([]);
  expect(mapDifferences(hash, { type: 2, keySize: 8, valueSize: 16, maxEntries: 1, flags: 1 }, "the new program")).toEqual([
    "type hash pinned, array in the new program",
    "key_size 4 pinned, 8 in the new program",
    "value_size 8 pinned, 16 in the new program",
    "map_flags 0x0 pinned, 0x1 in the new program",
  ]);
});

test("compareMaps: one line per incompatible map, maps without a pin listed, maps edgeproxy needs required", () => {
  const pinned = new Map([
    ["a", hash],
    ["b", hash],
  ]);
  const wanted = new Map([
    ["a", hash],
    ["b", { ...hash, valueSize: 12 }],
    ["c", hash],
  ]);
  expect(compareMaps(pinned, wanted, ["a", "d"], "the new program")).toEqual({
    problems: ["map d: missing from the new program, and edgeproxy uses it", "map b: value_size 8 pinned, 12 in the new program"],
    unpinned: ["c"],
  });
});

test("the built object's maps are read without loading it", async () => {
  const defs = objectMapDefinitions(await dispatcherImage());
  expect([...defs.keys()].sort()).toEqual([...MAPS].sort());
  expect(defs.get("ep_groups")).toEqual({ type: 1, keySize: 4, valueSize: 8, maxEntries: 4096, flags: 0 });
  expect(defs.get("ep_sockets")!.type).toBe(15); // BPF_MAP_TYPE_SOCKMAP
});
