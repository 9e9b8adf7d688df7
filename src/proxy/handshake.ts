import type { Socket } from "bun";
import type { Admission } from "./admission";
import { PendingStage, type Pending } from "./inbound";
import type { ServiceStats } from "./stats";

/*
 * The first stage of a connection to a TLS-terminating service: Bun's TLS
 * listener calls `open` at accept, before the handshake. The origin is
 * dialled only once the handshake is done, so scanners and failed
 * handshakes cost no origin connection (and send no PROXY header), and a
 * client that never finishes is reset after the timeout.
 */
export class TlsHandshake extends PendingStage {
  constructor(
    socket: Socket<any>,
    protected override readonly options: { readonly timeoutMs: number; readonly admission: Admission; readonly pending: Set<Pending>; readonly stats: ServiceStats },
    now: number,
    /** Next stage, once the handshake succeeded. */
    private readonly start: () => void,
  ) {
    super(socket, options, now);
  }

  /**
   * Bun's `handshake` handler. On a server `success` is whether the
   * handshake completed (a plaintext client gets false, EPROTO); its
   * authorization error concerns client certificates, which we do not ask for.
   */
  handshaken(success: boolean): void {
    if (this.done) return;
    if (!success) return this.fail("failed");
    this.leave();
    this.start();
  }

  // No application bytes arrive before the handshake completes.
  fromClient(_chunk: Uint8Array): void {}
  drained(): void {}

  ended(): void {
    this.abort();
  }

  closed(_side: "client", _error?: Error): void {
    if (!this.done) this.giveUp();
  }

  protected expired(): void {
    this.fail("timeout");
  }

  private fail(reason: "failed" | "timeout"): void {
    if (this.done) return;
    this.options.stats.tlsHandshakeError(reason);
    this.abort();
  }
}
