// The access log of http services on the engine: the request lines the
// HTTP code makes (reqlog.ts through ServiceLog) are written as bytes into the
// data plane thread's FlowLogSink, whose shared rings the main thread writes
// to the file it owns (src/log/ring.ts), as UDP flows' and the tcp engine's
// lines are.
import type { AccessLogConfig } from "../config/service";
import type { LogLines } from "../log/access";
import type { RingWriter } from "../log/ring";
import type { FlowLogSink } from "../proxy/udp/flowlog";

const EMPTY = new Uint8Array(0);

export function workerLogLines(sink: FlowLogSink, config: AccessLogConfig): LogLines {
  // The file's ring, looked up at the service's first line and kept: none per line.
  let ring: RingWriter | undefined;
  const r = () => (ring ??= sink.ring(config));
  return {
    push: (line) => r().add(line, EMPTY),
    push2: (head, body) => r().add(body, head),
    begin: (head, worst) => r().begin(head, worst),
    finish: () => ring!.finish(),
    skipped: () => r().skipped(),
  };
}
