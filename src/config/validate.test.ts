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
test("tcp and http: accept_proxy with TLS termination is accepted (the PROXY header, then the handshake)", () => {
  const at = (k: string) => k;
  const lb = [parsePrefix("10.0.0.0/8")];
  const tls = { certificates: [], minVersion: "1.2" as const, ciphers: "" };
  expect(() => checkService({ ...base(), tls, acceptProxy: lb }, at)).not.toThrow();
  expect(() => checkService({ ...base(), mode: "http", tls, acceptProxy: lb }, at)).not.toThrow();
});
