// The access log of http services on the engine: the request lines the
// HTTP code makes (reqlog.ts through ServiceLog) go into the data plane
// thread's FlowLogSink, whose bounded batches the main thread writes to the
// file it owns (src/log/access.ts appendBatch), as UDP flows' and the tcp
// engine's lines do.
import type { LogLines } from "../log/access";
import type { FlowLogSink } from "../proxy/udp/flowlog";

const text = new TextDecoder();

export function workerLogLines(sink: FlowLogSink, path: string): LogLines {
  return {
    push: (line) => sink.add(path, line),
    push2: (head, body) => sink.add(path, text.decode(head) + body),
    // No in-place writer here: the caller makes the line a string (ServiceLog.begin's contract).
    begin: () => undefined,
    finish: () => {},
    skipped: () => sink.skipped(),
  };
}
