// The client pipeline's shared suite (pipeline.case.ts) against a tcp service relaying to an echo origin, on the default engine (auto).
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin } from "./helpers/net";
import { pipelineCases } from "./pipeline.case";

pipelineCases(proxyFixture(), { mode: "tcp", origin: () => echoOrigin("127.0.0.1"), request: "ping", answer: "ping" });
