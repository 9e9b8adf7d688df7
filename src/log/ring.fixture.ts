// A writer thread for ring.test.ts: `lines` lines through a ring, waiting (never dropping) when it is full.
import { RingWriter } from "./ring";

declare const self: Worker;
const head = new TextEncoder().encode('{"n":');

self.onmessage = (e: MessageEvent<{ memory: SharedArrayBuffer; lines: number }>) => {
  const w = new RingWriter(e.data.memory, () => {});
  const full = new Int32Array(new SharedArrayBuffer(4));
  for (let n = 0; n < e.data.lines; ) {
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
