import { expect, test } from "bun:test";
import { parseArgs } from "../cli/args";
import { parsePrefix } from "./address";
import type { ServiceConfig } from "./service";
import { checkService } from "./validate";

const base = (): ServiceConfig => {
  const c = parseArgs(["--origin", "127.0.0.1:9000", "--prefix", "192.0.2.0/24"]);
  if (c.kind !== "serve") throw new Error(c.kind);
  return c.config.services[0]!;
};
const tls = { certFile: "c.pem", keyFile: "k.pem", cert: "", key: "" };

test("tcp: accept_proxy with TLS termination is refused (the PROXY header would precede the handshake); either alone is fine", () => {
  const at = (k: string) => k;
  const lb = [parsePrefix("10.0.0.0/8")];
  expect(() => checkService({ ...base(), tls, acceptProxy: lb }, at)).toThrow("accept_proxy: cannot be combined with TLS termination on a tcp service yet");
  expect(() => checkService({ ...base(), tls }, at)).not.toThrow();
  expect(() => checkService({ ...base(), acceptProxy: lb }, at)).not.toThrow();
  expect(() => checkService({ ...base(), mode: "http", tls, acceptProxy: lb }, at)).toThrow("accept_proxy: cannot be combined with TLS termination on a http service yet");
});
