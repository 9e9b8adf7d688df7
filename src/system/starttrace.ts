// $EDGEPROXY_START_TRACE=1: one stderr line per startup phase, with the
// milliseconds since the runtime started (performance.now() counts from the
// process's time origin), so where a start's time goes can be read off one
// run: `edgeproxy: start +12.3 ms: modules evaluated`. Off (one boolean test
// per phase) unless set; the bench's start scenario and bench/profiles read it.
const on = !!process.env.EDGEPROXY_START_TRACE;

/** Say that startup reached `phase` (when tracing). */
export function startPhase(phase: string): void {
  if (on) process.stderr.write(`edgeproxy: start +${performance.now().toFixed(1)} ms: ${phase}\n`);
}
