// The baseline edgeproxy replaces: one listening TCP socket per port.
//   bun bench/bind-ports.ts ADDRESS FIRST LAST      (ADDRESS: IPv4 or IPv6)
// Opens socket()+bind()+listen() on ADDRESS:FIRST..LAST until done or the
// first failure (typically EMFILE at the open-file limit), prints one JSON
// line with how far it got, then holds the sockets until SIGTERM (or 120 s)
// so the caller can count them and measure their kernel memory.
// Raw libc calls through bun:ffi keep userspace overhead out of the numbers.
import { dlopen, ptr, read } from "bun:ffi";
import { isIPv6 } from "node:net";
import { constants } from "node:os";
import { parseAddress } from "../src/config/address";

const { symbols: libc } = dlopen("libc.so.6", {
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  listen: { args: ["i32", "i32"], returns: "i32" },
  __errno_location: { args: [], returns: "ptr" },
});

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const BACKLOG = 128;

const [address = "", firstArg = "", lastArg = ""] = process.argv.slice(2);
const first = Number(firstArg);
const last = Number(lastArg);
const addr = parseAddress(address);
if (!addr || !(first >= 1 && last <= 65535 && first <= last)) {
  console.error("usage: bun bench/bind-ports.ts IPV4|IPV6 FIRST LAST");
  process.exit(2);
}
const v6 = isIPv6(address);

const errnoName = (n: number) => Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
const errno = () => {
  const at = libc.__errno_location();
  return at === null ? 0 : read.i32(at, 0);
};

// struct sockaddr_in: family (host order), port (network order), address, padding;
// struct sockaddr_in6: family, port, flowinfo, address (offset 8), scope id.
const sa = new Uint8Array(v6 ? 28 : 16);
const view = new DataView(sa.buffer);
view.setUint16(0, v6 ? AF_INET6 : AF_INET, true);
sa.set(addr, v6 ? 8 : 4);

const t0 = performance.now();
let bound = 0;
let error: string | undefined;
for (let port = first; port <= last; port++) {
  const fd = libc.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = `socket() at port ${port}: ${errnoName(errno())}`;
    break;
  }
  view.setUint16(2, port, false);
  if (libc.bind(fd, ptr(sa), sa.length) < 0 || libc.listen(fd, BACKLOG) < 0) {
    error = `bind/listen at port ${port}: ${errnoName(errno())}`;
    break;
  }
  bound++;
}
const ms = performance.now() - t0;
console.log(JSON.stringify({ first, last, bound, ms, error: error ?? null }));

process.on("SIGTERM", () => process.exit(0));
// Bounded even if the caller forgets us.
setTimeout(() => process.exit(0), 120_000);
