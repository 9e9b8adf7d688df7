// A writer thread for ring.test.ts: `lines` lines through a ring, waiting (never dropping) when it is full.
import { RingWriter } from "./ring";

declare const self: Worker;
const head = new TextEncoder().encode('{"n":');

self.onmessage = (e: MessageEvent<{ memory: SharedArrayBuffer; lines: number }>) => {
  const w = new RingWriter(e.data.memory, () => {});
  const full = new Int32Array(new SharedArrayBuffer(4));
  for (let n = 0; n < e.data.lines; ) {
    const pad = (n * 7919) % 300;
    const lw = w.begin(head, 40 + pad)!;
    lw.int(n).raw(',"pad":"').raw("x".repeat(pad)).raw('"}');
    // A full ring drops the line: the test wants every line, so it waits and writes it again.
    const dropped = w.overflowing;
    w.finish();
    if (dropped) Atomics.wait(full, 0, 0, 1);
    else n++;
  }
  self.postMessage("done");
};
