import { errnoName } from "./libc";

/*
 * What this host can lack for a connection, as opposed to what an origin or
 * the network did: counted per service in local_resource_resets_total, and
 * never held against an origin (passive ejection, active checks).
 */

/**
 * What a connection (or an http request) can fail for lacking on this host's side, not the origin's:
 * the tcp engine's buffer pool (buffers), an epoll registration the kernel refused (epoll), a
 * descriptor (descriptors: EMFILE, ENFILE), kernel memory (memory: ENOMEM, ENOBUFS), or a free local
 * port towards the origin (ports: EADDRNOTAVAIL). local_resource_resets_total.
 */
export const LOCAL_RESOURCES = ["buffers", "epoll", "descriptors", "memory", "ports"] as const;
export type LocalResource = (typeof LOCAL_RESOURCES)[number];

/**
 * The local resource a socket error's code says this process or host lacked (socket(2), an epoll
 * registration, a connect's port), undefined when the error is the origin's or the network's. Counted
 * as class other and in local_resource_resets_total, but never a failure of the origin toward its
 * ejection: an overloaded proxy must not eject healthy origins. A connect(2) fails with EADDRNOTAVAIL
 * when no ephemeral port is free towards that origin (connect(2): "all port numbers in the ephemeral port range are currently in
 * use"; net.ipv4.ip_local_port_range), which says nothing about the origin: no address of ours is bound.
 */
export function localResourceOf(code: string | undefined): LocalResource | undefined {
  switch (code) {
    case "EMFILE":
    case "ENFILE":
      return "descriptors";
    case "ENOMEM":
    case "ENOBUFS":
      return "memory";
    case "EADDRNOTAVAIL":
      return "ports";
    default:
      return undefined;
  }
}

/**
 * localResourceOf for a thrown error: a Node error's `code`, or the errno a kernel error carries
 * (positive, or negative as Node's `errno`). A look this process could not make for lack of a
 * descriptor or memory says nothing about what it looked at.
 */
export function localResourceOfError(e: unknown): LocalResource | undefined {
  const err = e as { code?: unknown; errno?: unknown } | null;
  if (typeof err?.code === "string") return localResourceOf(err.code);
  return typeof err?.errno === "number" ? localResourceOf(errnoName(err.errno)) : undefined;
}
