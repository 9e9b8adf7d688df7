/** Any socket whose write() returns what the kernel took (Bun's, or the engine's: src/proxy/http/socket.ts). */
type Writable = { write(bytes: Uint8Array): number; writeLast?(bytes: Uint8Array): number };

/**
 * Bytes a socket has not taken yet. Bun's write() returns how much the kernel
 * accepted; the rest waits here until `drain`, while the caller pauses the
 * source, so at most about one read per direction is ever held.
 */
export class Outbox {
  private chunks: Uint8Array[] = [];
  queued = 0;
  /**
   * A write returned < 0: the peer is gone (it reset the connection). Bun's sockets then report an end
   * and a close without error, as for a FIN; this tells the two apart.
   */
  failed = false;

  /** Write now if nothing is waiting, else queue. True when everything went out. `last`: the socket's writeLast, if it has one. */
  write(to: Writable | undefined, chunk: Uint8Array, last = false): boolean {
    if (to && this.queued === 0) {
      const n = last && to.writeLast ? to.writeLast(chunk) : to.write(chunk);
      // n < 0: the socket is closing; its close handler ends the connection.
      if (n < 0) this.failed = true;
      if (n === chunk.length || n < 0) return true;
      chunk = chunk.subarray(n);
    }
    this.chunks.push(chunk);
    this.queued += chunk.length;
    return false;
  }

  /** Write what is queued, in order. True when the queue is empty. */
  flush(to: Writable): boolean {
    while (this.chunks.length) {
      const chunk = this.chunks[0]!;
      const n = to.write(chunk);
      if (n < 0) {
        this.failed = true;
        return false;
      }
      if (n < chunk.length) {
        this.chunks[0] = chunk.subarray(n);
        this.queued -= n;
        return false;
      }
      this.chunks.shift();
      this.queued -= n;
    }
    return true;
  }

  /** Everything queued, as one buffer (for a last write before close). */
  take(): Uint8Array {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.clear();
    return all;
  }

  /** Nothing queued: for a new socket too (an exchange's next origin connection), so `failed` is cleared. */
  clear(): void {
    this.chunks = [];
    this.queued = 0;
    this.failed = false;
  }
}
