// The access log of http services on the engine: the request lines the
// HTTP code makes (reqlog.ts through ServiceLog) are written as bytes into the
// data plane thread's FlowLogSink, whose shared rings the main thread writes
// to the file it owns (src/log/ring.ts), as UDP flows' and the tcp engine's
// lines are.
import type { AccessLogConfig } from "../config/service";
import type { LogLines } from "../log/access";
import type { FlowLogSink } from "../proxy/udp/flowlog";

export function workerLogLines(sink: FlowLogSink, config: AccessLogConfig): LogLines {
  return {
    push: (line) => sink.add(config, line),
    push2: (head, body) => sink.add(config, body, head),
    begin: (head, worst) => sink.begin(config, head, worst),
    finish: () => sink.finish(),
    skipped: () => sink.skipped(config),
  };
}
