// A writer thread for ring.test.ts's race test: each line is written the moment the reader has read the last one
// (a spin, no pause), so lines land inside the reader's window between its look and its sleep. A nudge raises a
// shared flag the reader waits on. "stuck@N": the reader never read line N-1 (2 s).
import { RingReader, RingWriter } from "./ring";

declare const self: Worker;

self.onmessage = (e: MessageEvent<{ memory: SharedArrayBuffer; flag: SharedArrayBuffer; lines: number }>) => {
  const flag = new Int32Array(e.data.flag);
  const w = new RingWriter(e.data.memory, () => {
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  });
  // Only its `unread` is used.
  const seen = new RingReader(e.data.memory);
  const head = new TextEncoder().encode("x");
  for (let n = 0; n < e.data.lines; n++) {
    const until = Date.now() + 2_000;
    while (seen.unread) {
      if (Date.now() > until) {
        self.postMessage(`stuck@${n}`);
        return;
      }
    }
    w.begin(head, 4)!;
    w.finish();
  }
  self.postMessage("done");
};
