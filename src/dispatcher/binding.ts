import { formatPrefix, type Prefix } from "../config/address";
import { formatPorts, type PortRange } from "../config/ports";

export type Protocol = "tcp" | "udp";

/** What the dispatcher steers: (protocol, prefix, port range) to a service id. */
export interface Binding {
  readonly protocol: Protocol;
  readonly prefix: Prefix;
  readonly ports: PortRange;
  /** Service id, 1..EP_MAX_SERVICES-1; 0 is a hole: let the kernel's own lookup continue. */
  readonly service: number;
  /** Who asked for it, for error messages ("service web", "listener 0.0.0.0:22"). */
  readonly owner: string;
}

export function formatBinding(b: Pick<Binding, "protocol" | "prefix" | "ports">): string {
  return `${b.protocol} ${formatPrefix(b.prefix)} ${formatPorts(b.ports)}`;
}
