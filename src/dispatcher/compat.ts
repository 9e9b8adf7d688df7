// Can a program use maps that are already pinned? The check that guards a
// program upgrade over the namespace's pinned maps (pins.ts).
import { type MapDefinition } from "../ebpf/map";
import { BpfObject } from "../ebpf/object";

/*
 * bpf_map__reuse_fd() does not compare anything: libbpf copies the reused
 * map's definition over the object's and loads the program against it. A
 * program compiled for another key or value layout would then pass the
 * verifier (it checks accesses against the reused map's sizes) and read the
 * pinned entries wrongly, so every field that fixes the layout or the
 * semantics must match: type, key_size, value_size and map_flags
 * (include/uapi/linux/bpf.h, struct bpf_map_info). max_entries may differ:
 * the pin keeps its size, as the loader may have grown it on purpose.
 */

// Properties of the fd that created a map, not of the map: the kernel drops
// them from the flags it reports (kernel/bpf/syscall.c, bpf_map_flags_retain_permanent).
const BPF_F_RDONLY = 1 << 3;
const BPF_F_WRONLY = 1 << 4;
const FD_ONLY_FLAGS = BPF_F_RDONLY | BPF_F_WRONLY;

// enum bpf_map_type values of the maps edgeproxy uses, for readable messages.
const TYPE_NAMES: Record<number, string> = { 1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 11: "lpm_trie", 15: "sockmap", 18: "sockhash" };
const typeName = (t: number) => TYPE_NAMES[t] ?? `type ${t}`;

/** What differs between a pinned map and the definition a program wants; empty when it can use the pin. */
export function mapDifferences(pinned: MapDefinition, wanted: MapDefinition, wantedBy: string): string[] {
  const out: string[] = [];
  const differ = (field: string, a: string, b: string) => out.push(`${field} ${a} pinned, ${b} in ${wantedBy}`);
  if (pinned.type !== wanted.type) differ("type", typeName(pinned.type), typeName(wanted.type));
  if (pinned.keySize !== wanted.keySize) differ("key_size", String(pinned.keySize), String(wanted.keySize));
  if (pinned.valueSize !== wanted.valueSize) differ("value_size", String(pinned.valueSize), String(wanted.valueSize));
  const pf = pinned.flags & ~FD_ONLY_FLAGS;
  const wf = wanted.flags & ~FD_ONLY_FLAGS;
  if (pf !== wf) differ("map_flags", `0x${pf.toString(16)}`, `0x${wf.toString(16)}`);
  return out;
}

export interface Compatibility {
  /** One line per map the program cannot have as pinned: which map and what differs. */
  readonly problems: string[];
  /** The program's maps that have no pin (a load creates them). */
  readonly unpinned: string[];
}

/**
 * Compare pinned maps with the maps a program's object declares. `required`
 * are maps edgeproxy's control code reads and writes: the object must have them.
 */
export function compareMaps(
  pinned: ReadonlyMap<string, MapDefinition>,
  wanted: ReadonlyMap<string, MapDefinition>,
  required: readonly string[],
  wantedBy: string,
): Compatibility {
  const problems: string[] = [];
  for (const name of required) if (!wanted.has(name)) problems.push(`map ${name}: missing from ${wantedBy}, and edgeproxy uses it`);
  const unpinned: string[] = [];
  for (const [name, def] of wanted) {
    const have = pinned.get(name);
    if (!have) unpinned.push(name);
    else {
      const diff = mapDifferences(have, def, wantedBy);
      if (diff.length) problems.push(`map ${name}: ${diff.join(", ")}`);
    }
  }
  return { problems, unpinned };
}

/** The definitions of an ELF object's maps, read without loading it. */
export function objectMapDefinitions(image: Uint8Array): Map<string, MapDefinition> {
  const object = BpfObject.open(image);
  try {
    return new Map(object.maps().map((m) => [m.name, m.definition()]));
  } finally {
    object.close();
  }
}
