// iperf3's JSON report (`iperf3 -c … -J`), reduced to what bench/bulk.ts quotes.
// iperf3(1): with -J the client prints one JSON object; a failed test has an
// "error" member. end.sum_received is what the receiving side counted (the
// server for a normal test, the client with -R), which is the figure to quote.

export interface IperfResult {
  /** Bits per second the receiver counted. */
  bitsPerSecond: number;
  bytes: number;
  seconds: number;
  /** TCP retransmits the sender saw (0 when the kernel does not report them). */
  retransmits: number;
}

/** Parse `iperf3 -J` output; throws a one-line error naming what is missing or what iperf3 said. */
export function parseIperf3(text: string): IperfResult {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${text.trim().slice(0, 200) || "(nothing)"}`);
  }
  const o = j as { error?: string; end?: { sum_received?: { bits_per_second?: number; bytes?: number; seconds?: number }; sum_sent?: { retransmits?: number } } };
  if (typeof o.error === "string") throw new Error(`iperf3: ${o.error}`);
  const r = o.end?.sum_received;
  if (typeof r?.bits_per_second !== "number" || typeof r.bytes !== "number") throw new Error("iperf3 JSON has no end.sum_received.bits_per_second");
  return { bitsPerSecond: r.bits_per_second, bytes: r.bytes, seconds: r.seconds ?? NaN, retransmits: o.end?.sum_sent?.retransmits ?? 0 };
}
