// The client pipeline's shared suite (pipeline.case.ts) against an http service.
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { pipelineCases } from "./pipeline.case";

pipelineCases(proxyFixture(), {
  mode: "http",
  origin: () => httpOrigin("127.0.0.1", "origin").listener,
  request: "GET / HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
  answer: "HTTP/1.1 200",
});
