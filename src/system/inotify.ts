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

const AT_FDCWD = -100;
const STATX_INO = 0x100;
// struct statx (include/uapi/linux/stat.h), in 32-bit words: stx_ino at byte 32, stx_dev_major/minor at 136/140 (always filled).
const INO_LO = 8;
const INO_HI = 9;
const DEV_MAJOR = 34;
const DEV_MINOR = 35;

/**
 * One inotify instance watching one path for `mask`, and that path's
 * inode as it was when the watch was added; the owner of its fd. close()
 * is idempotent.
 */
export class PathWatch {
  private readonly fd: Fd;
  private readonly buf = new Uint8Array(4096);
  private readonly cpath: Buffer;
  private readonly stat = new Uint32Array(64);
  /** stx_ino (low, high words) and stx_dev (major, minor) of the watched inode. */
  private readonly inode: readonly number[];

  constructor(
    readonly path: string,
    mask: number,
  ) {
    this.cpath = Buffer.from(`${path}\0`);
    this.fd = Fd.from(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), `inotify_init1 for ${path}`);
    try {
      // The inode before and after the watch is added: the same one, so the watch is on the inode the path named.
      const before = this.identity();
      if (libc.inotify_add_watch(this.fd.raw, this.cpath, mask) < 0) throw new EdgeError(`watch ${path}`, errnoText(errno()), "kernel");
      const after = this.identity();
      if (!before || !after || before.some((w, i) => w !== after[i])) throw new EdgeError(`watch ${path}`, "the path changed while it was being watched", "kernel");
      this.inode = after;
    } catch (e) {
      this.fd.close();
      throw e;
    }
  }

  private identity(): number[] | undefined {
    const s = this.stat;
    if (libc.statx(AT_FDCWD, this.cpath, 0, STATX_INO, s) !== 0) return undefined;
    return [s[INO_LO]!, s[INO_HI]!, s[DEV_MAJOR]!, s[DEV_MINOR]!];
  }

  /**
   * Did anything happen since the last call: an event (or the queue's
   * overflow, or IN_IGNORED: the watch went with the inode), or the path
   * names another inode than the watched one now (what no event on it
   * tells: a filesystem mounted over it, a parent renamed or replaced)?
   * Reads what is queued, so the next call tells only of what comes after
   * this one. Closed: true (nothing can be vouched for).
   */
  changed(): boolean {
    if (this.fd.closed) return true;
    let any = false;
    while (Number(libc.read(this.fd.raw, this.buf, this.buf.length)) > 0) any = true;
    return any || this.moved();
  }

  /**
   * Does the path name another inode than the watched one now, or none (or
   * is the watch closed)? Then no event will tell of what happens at the
   * path: a new watch is needed there. Reads no event.
   */
  moved(): boolean {
    if (this.fd.closed) return true;
    const s = this.stat;
    if (libc.statx(AT_FDCWD, this.cpath, 0, STATX_INO, s) !== 0) return true;
    const w = this.inode;
    return s[INO_LO] !== w[0] || s[INO_HI] !== w[1] || s[DEV_MAJOR] !== w[2] || s[DEV_MINOR] !== w[3];
  }

  close(): void {
    this.fd.close();
  }
}
