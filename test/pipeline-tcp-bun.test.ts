// The client pipeline's shared suite (pipeline.case.ts) against a tcp service
// on Bun's sockets (--engine bun): pipeline-tcp.test.ts runs its plain stages
// on the engine, the default; this keeps Bun's path, which TLS services use,
// covered for them too.
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin } from "./helpers/net";
import { pipelineCases } from "./pipeline.case";

pipelineCases(proxyFixture(), { mode: "tcp", origin: () => echoOrigin("127.0.0.1"), request: "ping", answer: "ping", engine: "bun" });
