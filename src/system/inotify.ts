// inotify(7) through bun:ffi: whether a directory's entries changed, without
// looking at them (the steering watchdog's pins: src/dispatcher/verify.ts).
// The events are only counted, never read for their names: any one means
// "look again".
import { EdgeError } from "../errors";
import { Fd } from "./fd";
import { errno, errnoText, libc } from "./libc";

const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
// include/uapi/linux/inotify.h
export const IN_ATTRIB = 0x4;
export const IN_MOVED_FROM = 0x40;
export const IN_MOVED_TO = 0x80;
export const IN_CREATE = 0x100;
export const IN_DELETE = 0x200;
export const IN_DELETE_SELF = 0x400;
export const IN_MOVE_SELF = 0x800;

/** One inotify instance watching one path for `mask`; the owner of its fd. close() is idempotent. */
export class PathWatch {
  private readonly fd: Fd;
  private readonly buf = new Uint8Array(4096);

  constructor(path: string, mask: number) {
    this.fd = Fd.from(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), `inotify_init1 for ${path}`);
    if (libc.inotify_add_watch(this.fd.raw, Buffer.from(`${path}\0`), mask) < 0) {
      const why = errnoText(errno());
      this.fd.close();
      throw new EdgeError(`watch ${path}`, why, "kernel");
    }
  }

  /**
   * Did anything happen since the last call (an event, the queue's overflow,
   * IN_IGNORED: the watch removed with the path)? Reads what is queued, so
   * the next call tells only of what comes after this one.
   */
  changed(): boolean {
    if (this.fd.closed) return true;
    let any = false;
    while (Number(libc.read(this.fd.raw, this.buf, this.buf.length)) > 0) any = true;
    return any;
  }

  close(): void {
    this.fd.close();
  }
}
