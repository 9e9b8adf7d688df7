// CPU time from /proc/stat: per core and machine-wide. Process accounting
// (utime+stime) misses work the kernel does for a proxy outside its process
// context, such as softirq processing and kworkers (kernel splicing runs
// there); a core's non-idle time catches it. See proc(5), /proc/stat: the
// cpuN lines count USER_HZ ticks in the order user nice system idle iowait
// irq softirq steal guest guest_nice, and guest time is already inside user.
import { readFileSync } from "node:fs";
import { CLK_TCK } from "./sys";

/** Busy and idle ticks of one cpu line. */
export interface CpuTicks {
  busy: number;
  idle: number;
}

/** `cpu` (all cores) and `cpuN` lines of /proc/stat text, keyed "all" and N. */
export function parseProcStat(text: string): Map<"all" | number, CpuTicks> {
  const out = new Map<"all" | number, CpuTicks>();
  for (const line of text.split("\n")) {
    const m = line.match(/^cpu(\d*)\s+(.*)$/);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    if (v.length < 4 || v.some((x) => !Number.isFinite(x))) throw new Error(`/proc/stat: cannot read the line ${JSON.stringify(line)}`);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    out.set(m[1] === "" ? "all" : Number(m[1]), { busy: user + nice + system + irq + softirq + steal, idle: idle + iowait });
  }
  if (!out.has("all")) throw new Error("/proc/stat: no aggregate cpu line");
  return out;
}

/** A /proc/stat reading; `since` gives busy microseconds per core (and for all) from an earlier one. */
export class CpuSnapshot {
  constructor(readonly ticks: Map<"all" | number, CpuTicks>) {}

  static now(): CpuSnapshot {
    return new CpuSnapshot(parseProcStat(readFileSync("/proc/stat", "utf8")));
  }

  /** Busy µs of `cpu` ("all": summed over every core) between `before` and this reading. */
  busyMicrosSince(before: CpuSnapshot, cpu: "all" | number): number {
    const a = before.ticks.get(cpu);
    const b = this.ticks.get(cpu);
    if (!a || !b) throw new Error(`/proc/stat: no line for cpu ${cpu}`);
    return ((b.busy - a.busy) * 1e6) / CLK_TCK;
  }
}
