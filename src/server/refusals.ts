import { startKernelRefusals } from "../log/kernel";
import { every } from "./housekeeping";
import type { Server } from "./server";

/** Aggregated access log lines of the clients the kernel refused for `server`'s services (src/log/kernel.ts). */
export function kernelRefusals(server: Server): () => void {
  const d = server.dispatcher;
  return startKernelRefusals(
    () => [...server.running.values()].map((r) => ({ id: r.id, config: r.svc.config })),
    (id) => {
      const c = d.counters(id);
      const l = d.limitCounters(id);
      return { denied: c.denied, missingSocket: c.missingSocket, full: d.selection.counters(id).full, limitedConnections: l.connections, limitedRate: l.rate };
    },
    every,
  );
}
