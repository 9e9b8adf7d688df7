import { ptr } from "bun:ffi";
import { errno, errnoText, libc } from "../../src/system/libc";
import { Fd } from "../../src/system/fd";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;

/**
 * A unix datagram socket a test binds as $NOTIFY_SOCKET, standing in for
 * systemd's: what sd_notify sends arrives here. `name` is a path, or "@x"
 * for the abstract namespace (as systemd may hand out).
 */
export class NotifyReceiver {
  private readonly fd: Fd;
  readonly messages: string[] = [];

  constructor(readonly name: string) {
    const bytes = Buffer.from(name);
    const addr = new Uint8Array(110);
    new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
    addr.set(bytes, 2);
    const abstract = name.startsWith("@");
    if (abstract) addr[2] = 0;
    this.fd = Fd.from(libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), "notify socket");
    if (libc.bind(this.fd.raw, ptr(addr), 2 + bytes.length + (abstract ? 0 : 1)) !== 0) {
      const why = errnoText(errno());
      this.fd.close();
      throw new Error(`bind ${name}: ${why}`);
    }
  }

  /** Every datagram received so far (non-blocking), appended to `messages`. */
  drain(): string[] {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = Number(libc.recv(this.fd.raw, ptr(buf), buf.length, MSG_DONTWAIT));
      if (n < 0) break;
      this.messages.push(Buffer.from(buf.subarray(0, n)).toString());
    }
    return this.messages;
  }

  /** Wait (polling, at most `ms`) until a message satisfies `match`. */
  async waitFor(match: (m: string) => boolean, ms = 10_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.drain().find(match);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no notify message matched within ${ms} ms; got ${JSON.stringify(this.messages)}`);
      await Bun.sleep(20);
    }
  }

  close(): void {
    this.fd.close();
  }
}
