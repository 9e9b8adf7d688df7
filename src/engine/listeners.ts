// A service's listeners on the engine: made here with socket/bind/listen
// through bun:ffi, in the service's SO_REUSEPORT group, so their descriptors
// go straight into the SOCKMAP (no lookup in /proc); the caller hands them
// to the data plane's thread. tcp (service.ts) and http (httpservice.ts)
// services open theirs alike.
import { fstatSync } from "node:fs";
import { parseAddress, type Family } from "../config/address";
import { serviceFamilies, type ServiceConfig } from "../config/service";
import { attachMigrate, joinGroup, type GroupPlan } from "../proxy/group";
import { LISTEN_ADDRESS, type ServiceSocket } from "../proxy/service";
import type { Fd } from "../system/fd";
import { socketCookie } from "../system/sockets";
import { noDelay, openTcpListener } from "../system/tcp";
import { localEndpoint } from "../system/udp";

/**
 * One listener per family the service's prefixes use, pushed to `opened` as
 * each is made (the caller closes them if a later step fails).
 */
export function openEngineListeners(config: ServiceConfig, plan: GroupPlan, opened: { fd: Fd; family: Family }[]): ServiceSocket[] {
  const where = `service ${config.name}: listener`;
  return serviceFamilies(config).map((family) => {
    const addr = parseAddress(LISTEN_ADDRESS[family])!;
    const own = joinGroup(family, plan, (port) => openTcpListener({ family, addr, port }, where));
    opened.push({ fd: own, family });
    const fd = own.raw;
    // No Nagle wait on the clients' side (TCP_NODELAY, as Bun's accepts, nginx's tcp_nodelay and HAProxy):
    // a relay's or an HTTP answer's second small write, sent before the first is acknowledged, would wait
    // for the peer's delayed ACK (~40 ms). Set on the listener, once: an accepted socket is a clone of it
    // and keeps it (inet_csk_clone_lock copies the listener's tcp_sock), where a setsockopt per accept
    // cost 1.3% of an http one-connection-per-request run (bench/pair.sh).
    noDelay(fd);
    attachMigrate(fd, plan);
    const port = localEndpoint(fd, where).port;
    const host = family === 6 ? `[${LISTEN_ADDRESS[family]}]` : LISTEN_ADDRESS[family];
    return { family, fd, inode: fstatSync(fd).ino, cookie: socketCookie(fd, "listener"), port, address: `${host}:${port}` };
  });
}
