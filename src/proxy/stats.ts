/** Per-service data-plane counters, read by status and metrics. */
export class ServiceStats {
  connectionsActive = 0;
  connectionsTotal = 0;
  bytesFromClients = 0;
  bytesFromOrigins = 0;
  /** Origin failures by class: refused, timeout, reset, unreachable, other. */
  readonly originErrors = new Map<string, number>();
  clientResets = 0;
  idleTimeouts = 0;

  originError(kind: string): void {
    this.originErrors.set(kind, (this.originErrors.get(kind) ?? 0) + 1);
  }
}

/** Map a socket error code to a coarse class for metrics. */
export function errorClass(code: string | undefined): string {
  switch (code) {
    case "ECONNREFUSED":
      return "refused";
    case "ECONNRESET":
    case "EPIPE":
      return "reset";
    case "ETIMEDOUT":
      return "timeout";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
      return "unreachable";
    default:
      return "other";
  }
}
