// A writer thread for ring.test.ts: `lines` lines through a ring, waiting (never dropping) when it is full.
// `pauseEvery`: each nudge is posted, and after that many lines the writer waits for the reader to have read
// them all (so it may fall asleep) before it goes on: "stuck" if that takes 5 s (a lost wake-up).
import { RingReader, RingWriter } from "./ring";

declare const self: Worker;
const head = new TextEncoder().encode('{"n":');

self.onmessage = (e: MessageEvent<{ memory: SharedArrayBuffer; lines: number; pauseEvery?: number }>) => {
  const every = e.data.pauseEvery ?? 0;
  const w = new RingWriter(e.data.memory, every ? () => self.postMessage("nudge") : () => {});
  const full = new Int32Array(new SharedArrayBuffer(4));
  // Only its `unread` is used: whether the test's reader has read everything.
  const seen = new RingReader(e.data.memory);
  for (let n = 0; n < e.data.lines; ) {
    if (every && n > 0 && n % every === 0) {
      const deadline = Date.now() + 5_000;
      while (seen.unread && Date.now() < deadline) Atomics.wait(full, 0, 0, 1);
      if (seen.unread) {
        self.postMessage("stuck");
        return;
      }
    }
    const pad = (n * 7919) % 300;
    const lw = w.begin(head, 40 + pad);
    // A full ring drops the line (null): the test wants every line, so it waits and writes it again.
    if (lw === null) {
      Atomics.wait(full, 0, 0, 1);
      continue;
    }
    lw!.int(n).raw(',"pad":"').raw("x".repeat(pad)).raw('"}');
    w.finish();
    n++;
  }
  self.postMessage("done");
};
