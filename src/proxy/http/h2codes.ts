// HTTP/2 error codes (RFC 9113 §7) the HTTP/2 exchange resets and closes
// streams with: the values of node:http2's NGHTTP2_* constants, written out so
// that a process without an HTTP/2 client never evaluates node:http2 (~7 ms
// of every start, $EDGEPROXY_START_TRACE), which h2.ts loads on the first
// HTTP/2 connection.
export const H2_NO_ERROR = 0x0;
export const H2_PROTOCOL_ERROR = 0x1;
export const H2_INTERNAL_ERROR = 0x2;
export const H2_REFUSED_STREAM = 0x7;
