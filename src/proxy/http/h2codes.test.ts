import { expect, test } from "bun:test";
import { constants } from "node:http2";
import { H2_INTERNAL_ERROR, H2_NO_ERROR, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM } from "./h2codes";

test("the HTTP/2 error codes written out are node:http2's (RFC 9113 §7)", () => {
  expect(H2_NO_ERROR).toBe(constants.NGHTTP2_NO_ERROR);
  expect(H2_PROTOCOL_ERROR).toBe(constants.NGHTTP2_PROTOCOL_ERROR);
  expect(H2_INTERNAL_ERROR).toBe(constants.NGHTTP2_INTERNAL_ERROR);
  expect(H2_REFUSED_STREAM).toBe(constants.NGHTTP2_REFUSED_STREAM);
});
