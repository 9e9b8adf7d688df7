// Active health checks: a TCP connect (tcp and udp pools) or an HTTP/1.1 GET
// (http pools) per endpoint, every interval, with rise/fall hysteresis as in
// HAProxy's `check inter/rise/fall` (configuration.txt, section 5.2).
import type { Socket } from "bun";
import type { HealthConfig } from "../config/pool";
import { localResourceOf, type LocalResource } from "../system/lack";
import type { ConnectTls, OriginTls } from "./tls";

/** What a pool's checks speak. udp origins get a TCP connect to the same port: UDP has no handshake to test. */
export type PoolKind = "tcp" | "udp" | "http";

/** Where one check goes. */
export interface ProbeTarget {
  /** An IP literal. */
  readonly address: string;
  readonly port: number;
  /** The Host header of an HTTP check: the origin's configured name. */
  readonly hostHeader: string;
  /** origin_tls: the check does the handshake, judged as live traffic's (OriginTls.verdict), before it passes or sends its GET. */
  readonly tls?: { readonly options: ConnectTls; readonly verdict: Pick<OriginTls, "verdict"> };
}

/** One check's result: pass or fail, and why it failed. */
export interface ProbeResult {
  readonly pass: boolean;
  readonly detail: string;
  /** No verdict: the check could not be made for want of this host's own resource (localResourceOf), which says nothing of the origin. */
  readonly local?: LocalResource;
}

// The most of a response an HTTP check reads: the status line is all it needs.
const MAX_STATUS_BYTES = 4096;

/** One check: TCP connect (and TLS handshake), or GET `path` expecting a 2xx or 3xx status (RFC 9110 section 15). Bounded by timeoutMs. */
export function probe(kind: PoolKind, t: ProbeTarget, path: string, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let done = false;
    let sock: Socket<undefined> | undefined;
    let head = "";
    const finish = (pass: boolean, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.terminate();
      const local = pass ? undefined : localResourceOf(detail);
      resolve(local ? { pass, detail: `${detail}: this host is out of ${local}, no verdict on the origin`, local } : { pass, detail });
    };
    let connected = false;
    const timer = setTimeout(
      () => finish(false, `no ${kind === "http" ? "response" : t.tls && connected ? "TLS handshake" : "connection"} within ${timeoutMs}ms`),
      timeoutMs,
    );
    const host = t.hostHeader.includes(":") ? `[${t.hostHeader}]` : t.hostHeader;
    const ready = (s: Socket<undefined>) => {
      if (kind !== "http") return finish(true, t.tls ? "TLS handshake done" : "connected");
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${t.port}\r\nUser-Agent: edgeproxy-health-check\r\nConnection: close\r\n\r\n`);
    };
    Bun.connect<undefined>({
      hostname: t.address,
      port: t.port,
      ...(t.tls ? { tls: t.tls.options } : {}),
      socket: {
        open(s) {
          sock = s;
          connected = true;
          // With TLS, `open` is the TCP connect; the check goes on at the handshake.
          if (!t.tls) ready(s);
        },
        handshake(s, success, error) {
          const refused = t.tls?.verdict.verdict(success, error);
          if (refused) return finish(false, refused.message);
          ready(s);
        },
        data(_s, chunk) {
          head += chunk.toString("latin1");
          const eol = head.indexOf("\r\n");
          if (eol < 0 && head.length < MAX_STATUS_BYTES) return;
          const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
          if (!m) return finish(false, "not an HTTP/1.x response");
          const status = Number(m[1]);
          finish(status >= 200 && status < 400, `status ${status}`);
        },
        close() {
          finish(false, "closed before a status line");
        },
        connectError(_s, e) {
          finish(false, (e as { code?: string }).code ?? e.message);
        },
        error(_s, e) {
          finish(false, (e as { code?: string }).code ?? e.message);
        },
      },
    }).catch((e) => finish(false, (e as { code?: string }).code ?? String(e)));
  });
}

/** Rise/fall hysteresis over consecutive results. */
export class HealthState {
  healthy = true;
  private passes = 0;
  private failures = 0;

  constructor(private readonly config: Pick<HealthConfig, "rise" | "fall">) {}

  /** Count one result; true when it changed `healthy`. */
  record(pass: boolean): boolean {
    if (pass) {
      this.failures = 0;
      if (this.healthy || ++this.passes < this.config.rise) return false;
      this.healthy = true;
      this.passes = 0;
      return true;
    }
    this.passes = 0;
    if (!this.healthy || ++this.failures < this.config.fall) return false;
    this.healthy = false;
    this.failures = 0;
    return true;
  }

  /** Out until `rise` passes (passive ejection when active checks also run). */
  markDown(): void {
    this.healthy = false;
    this.passes = 0;
    this.failures = 0;
  }
}

/**
 * Checks one endpoint every interval until stopped. The next check is
 * scheduled only when the last has finished, so checks of one endpoint never
 * overlap, and each interval is jittered by ±10% so the checks of many
 * endpoints (and of many edgeproxies) do not arrive in lockstep.
 */
export class HealthChecker {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(
    private readonly kind: PoolKind,
    private readonly target: ProbeTarget,
    private readonly config: HealthConfig,
    private readonly onResult: (r: ProbeResult) => void,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    // The first check soon, spread over a tenth of the interval.
    this.schedule(this.random() * this.config.intervalMs * 0.1);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.run(), delayMs);
    this.timer.unref?.();
  }

  private async run(): Promise<void> {
    const started = performance.now();
    const r = await probe(this.kind, this.target, this.config.path, this.config.timeoutMs);
    if (this.stopped) return;
    this.onResult(r);
    const jittered = this.config.intervalMs * (0.9 + 0.2 * this.random());
    this.schedule(Math.max(0, jittered - (performance.now() - started)));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
