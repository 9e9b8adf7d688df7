import type { Socket, TCPSocketListener } from "bun";

export type Outcome = { kind: "data"; bytes: Uint8Array } | { kind: "refused" } | { kind: "reset"; bytes: Uint8Array } | { kind: "timeout" };

/**
 * Connect (from `localAddress` when given), send `payload`, half-close, and
 * collect everything until the peer closes. Bounded by `timeoutMs`.
 */
export function exchange(host: string, port: number, payload: Uint8Array | string = "", timeoutMs = 5000, localAddress?: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let settled = false;
    let sock: Socket | undefined;
    const settle = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const timer = setTimeout(() => {
      sock?.terminate();
      settle({ kind: "timeout" });
    }, timeoutMs);
    const bytes = () => Buffer.concat(chunks);
    Bun.connect({
      hostname: host,
      port,
      allowHalfOpen: true,
      ...(localAddress ? { localAddress } : {}),
      socket: {
        open(s) {
          sock = s;
          const p = typeof payload === "string" ? Buffer.from(payload) : payload;
          let off = 0;
          const pump = () => {
            while (off < p.length) {
              const n = s.write(p.subarray(off));
              if (n <= 0) return;
              off += n;
            }
            s.shutdown();
          };
          (s as any).pump = pump;
          pump();
        },
        drain(s) {
          (s as any).pump?.();
        },
        data(_s, d) {
          chunks.push(new Uint8Array(d));
        },
        end(s) {
          s.end();
        },
        close(_s, err) {
          settle(err ? { kind: "reset", bytes: bytes() } : { kind: "data", bytes: bytes() });
        },
        connectError(_s, err) {
          settle((err as { code?: string }).code === "ECONNREFUSED" ? { kind: "refused" } : { kind: "reset", bytes: bytes() });
        },
      },
    }).catch((err) => settle(err?.code === "ECONNREFUSED" ? { kind: "refused" } : { kind: "reset", bytes: new Uint8Array() }));
  });
}

export function text(o: Outcome): string {
  return o.kind === "data" || o.kind === "reset" ? Buffer.from(o.bytes).toString() : `<${o.kind}>`;
}

/** A listener that greets every connection with `name`, then closes. */
export function greeter(host: string, port: number, name: string): TCPSocketListener<undefined> {
  return Bun.listen({ hostname: host, port, socket: { open: (s) => void s.end(name), data() {} } });
}

/** An echo origin: everything received goes back; FIN is answered with FIN. */
export function echoOrigin(host: string, port = 0): TCPSocketListener<{ pending: Uint8Array[] }> {
  return Bun.listen<{ pending: Uint8Array[] }>({
    hostname: host,
    port,
    allowHalfOpen: true,
    socket: {
      open(s) {
        s.data = { pending: [] };
      },
      data(s, d) {
        if (s.data.pending.length) return void s.data.pending.push(d);
        const n = s.write(d);
        if (n < d.length) {
          s.data.pending.push(d.subarray(Math.max(n, 0)));
          s.pause();
        }
      },
      drain(s) {
        while (s.data.pending.length) {
          const c = s.data.pending[0]!;
          const n = s.write(c);
          if (n < c.length) return void (s.data.pending[0] = c.subarray(Math.max(n, 0)));
          s.data.pending.shift();
        }
        s.resume();
      },
      end(s) {
        s.end();
      },
    },
  });
}

/** Run tasks with at most `width` in flight. */
export async function pool<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** n distinct random ports in 1-65535 (deterministic for a seed), plus 1 and 65535. */
export function randomPorts(n: number, seed = 1): number[] {
  const set = new Set<number>([1, 65535]);
  let x = seed;
  while (set.size < n + 2) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    set.add(1 + (x % 65535));
  }
  return [...set];
}
