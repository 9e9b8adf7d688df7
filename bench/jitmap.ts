// A JSC JITDump (BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=DIR: DIR/jit-*.dump) as a perf map
// (/tmp/perf-PID.map), so `perf report` names JIT-compiled frames: `bun bench/jitmap.ts DUMP PID`,
// PID the process perf sampled. Records per the JITDump specification (Linux,
// tools/perf/Documentation/jitdump-specification.txt): a file header whose third u32 is its size,
// then records of {id u32, total_size u32, timestamp u64}; JIT_CODE_LOAD (id 0) carries pid u32,
// tid u32, vma u64, code_addr u64, code_size u64, code_index u64, then the name (NUL-terminated).
import { readFileSync, writeFileSync } from "node:fs";

const [file, pid] = process.argv.slice(2);
if (!file || !pid || !/^\d+$/.test(pid)) {
  console.error("usage: bun bench/jitmap.ts DUMP PID");
  process.exit(2);
}
const b = readFileSync(file);
const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
if (b.length < 40 || dv.getUint32(0, true) !== 0x4a695444) {
  console.error(`jitmap: ${file} is not a JITDump (magic JiTD)`);
  process.exit(1);
}
const lines: string[] = [];
for (let off = dv.getUint32(8, true); off + 16 <= b.length; ) {
  const id = dv.getUint32(off, true);
  const size = dv.getUint32(off + 4, true);
  if (size < 16 || off + size > b.length) break;
  if (id === 0) {
    const addr = dv.getBigUint64(off + 32, true);
    const codeSize = dv.getBigUint64(off + 40, true);
    const end = b.indexOf(0, off + 56);
    const name = b.toString("utf8", off + 56, end < 0 ? off + size : end).replace(/\s+/g, "_");
    lines.push(`${addr.toString(16)} ${codeSize.toString(16)} ${name}`);
  }
  off += size;
}
writeFileSync(`/tmp/perf-${pid}.map`, `${lines.join("\n")}\n`);
console.log(`jitmap: ${lines.length} symbols → /tmp/perf-${pid}.map`);
