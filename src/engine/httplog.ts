// The access log of http services on the engine: the request lines the
// HTTP code makes (reqlog.ts through ServiceLog) are written as bytes into the
// data plane thread's FlowLogSink, whose batches (transferred buffers) the main
// thread queues on the file it owns (src/log/access.ts appendBatch), as UDP
// flows' and the tcp engine's lines are.
import type { LogLines } from "../log/access";
import type { FlowLogSink } from "../proxy/udp/flowlog";

export function workerLogLines(sink: FlowLogSink, path: string): LogLines {
  return {
    push: (line) => sink.add(path, line),
    push2: (head, body) => sink.add(path, body, head),
    begin: (head, worst) => sink.begin(path, head, worst),
    finish: () => sink.finish(),
    skipped: () => sink.skipped(),
  };
}
