/*
 * A parsed HTTP/1.1 message head (RFC 9112), as parse.ts makes it: its
 * fields in arrival order with the framing ones interpreted (fields.ts),
 * its start line; or the error of a head that cannot be proxied.
 */

/** A head that cannot be proxied: the status to answer with and one line saying why. */
export class HeadError {
  constructor(
    readonly status: number,
    readonly reason: string,
    /** The HTTP/2 connection preface (RFC 9113 §3.4): answered in HTTP/2, not with an HTTP/1.1 status. */
    readonly h2Preface = false,
  ) {}
}

/** Header fields in arrival order; names lower-cased. */
export interface Message {
  readonly names: string[];
  readonly values: string[];
  /** -1: no Content-Length. */
  contentLength: number;
  /** Transfer-Encoding ends in chunked (RFC 9112 §6.3 rule 4). */
  chunked: boolean;
  /** Transfer-Encoding present but not ending in chunked: a response framed by close. */
  otherCoding: boolean;
  /** Connection's tokens, lower case, comma-joined ("" when absent). */
  connection: string;
  /** The Upgrade field's value ("" when absent). */
  upgrade: string;
  /**
   * Where the Connection field's line starts in the head as received: -1
   * without one, -2 with more than one. With `connectionEnd` (where the next
   * line starts) it lets a head go on with that line cut out or replaced
   * (headers.ts, response.ts), the rest copied as it came.
   */
  connectionAt: number;
  connectionEnd: number;
}

export interface RequestHead extends Message {
  readonly method: string;
  /** origin-form (absolute-form is rewritten to it, its authority becoming `host`). */
  readonly target: string;
  /** 0 or 1: HTTP/1.0 or HTTP/1.1. */
  readonly minor: number;
  /** The Host field's value, or the absolute-form authority; undefined when absent. */
  host: string | undefined;
  /** The request line is not sent as it came (absolute-form, a normalised path, leading empty lines). */
  readonly rewritten: boolean;
}

export interface ResponseHead extends Message {
  readonly status: number;
  readonly reason: string;
  readonly minor: number;
}
