/*
 * The chunked transfer coding (RFC 9112 §7.1), incrementally. The decoder
 * finds where the message ends, counts its data bytes, checks the framing
 * strictly, and hands out the data: a request body is re-framed from it
 * (reframe() below: canonical chunks, no extensions, no trailers), so an
 * origin never has to agree with us on anything but "hex CRLF data CRLF"; a
 * response body goes on as it came (its framing checked here), or decoded
 * for an HTTP/1.0 client.
 *
 *   chunked-body   = *chunk last-chunk trailer-section CRLF
 *   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-size     = 1*HEXDIG
 *   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   trailer-section = *( field-line CRLF )
 *
 * Strict where parsers are known to differ: after the size only BWS then
 * ";" or CRLF ("5 5", "5\tX" are refused), CRLF everywhere (no bare LF),
 * trailer lines that are field lines (name ":" value, no obs-fold, no CTL):
 * a trailer section cannot hide a request. Extensions and trailers are
 * bounded, and the caller counts every byte fed against its body limit.
 */

/** A chunk-size line (size and extensions) may be at most this long. */
export const MAX_CHUNK_LINE = 4096;

const enum S {
  Size,
  SizeWs,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerName,
  TrailerValue,
  TrailerLf,
  EndLf,
  Done,
}

// tchar (RFC 9110 §5.6.2), for trailer field names.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;
// field-vchar / SP / HTAB (RFC 9110 §5.5): no CTL but HTAB, no DEL; obs-text allowed. Also what an extension may hold.
const isFieldChar = (c: number) => c === 9 || (c >= 32 && c !== 127);

export class ChunkedDecoder {
  private state = S.Size;
  private digits = 0;
  private size = 0;
  /** Bytes of the current chunk-size line. */
  private lineBytes = 0;
  /** Bytes of the trailer section so far. */
  private trailerBytes = 0;
  /** Data bytes seen so far. */
  dataBytes = 0;
  /** Bytes consumed so far, framing included. */
  bytes = 0;
  /** What was wrong, once feed returned -1. */
  error = "";
  /** The error was the body outgrowing `maxBytes`. */
  tooLarge = false;

  /**
   * `maxTrailer`: the most trailer-section bytes accepted (a head's limit is
   * the natural one); `maxBytes`: the most bytes of the whole chunked body,
   * framing, extensions and trailers included (a body limit that only counted
   * data would let megabytes of extensions through).
   */
  constructor(
    private readonly maxTrailer = 16 * 1024,
    private readonly maxBytes = Number.MAX_SAFE_INTEGER,
  ) {}

  get done(): boolean {
    return this.state === S.Done;
  }

  /**
   * Consume bytes of `buf` from `start`; returns how many belong to this
   * message (it stops at its end), or -1 on a framing error. `onData`, when
   * given, gets each run of chunk data.
   */
  feed(buf: Uint8Array, start: number, onData?: (data: Uint8Array) => void): number {
    const used = this.run(buf, start, Math.min(buf.length, start + (this.maxBytes - this.bytes) + 1), onData);
    if (used < 0) return used;
    this.bytes += used;
    if (this.bytes > this.maxBytes) {
      this.tooLarge = true;
      return this.fail(`chunked body larger than ${this.maxBytes} bytes`);
    }
    return used;
  }

  /** feed() over buf[start..n): one byte past the budget is read, only to tell "too large". */
  private run(buf: Uint8Array, start: number, n: number, onData?: (data: Uint8Array) => void): number {
    let i = start;
    while (i < n) {
      const c = buf[i]!;
      switch (this.state) {
        case S.Size: {
          const h = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (h >= 0) {
            // 13 hex digits keep the size within 2^52, exact in a double (leading zeros too: bounded the same).
            if (++this.digits > 13) return this.fail("chunk size too large");
            this.size = this.size * 16 + h;
          } else if (this.digits === 0) {
            return this.fail("missing chunk size");
          } else if (c === 59 /* ; */) {
            this.state = S.Ext;
          } else if (c === 32 || c === 9) {
            this.state = S.SizeWs; // BWS, which only ";" may follow
          } else if (c === 13) {
            this.state = S.SizeLf;
          } else {
            return this.fail("invalid chunk size");
          }
          this.lineBytes++;
          i++;
          break;
        }
        case S.SizeWs:
          if (c === 59) this.state = S.Ext;
          else if (c !== 32 && c !== 9) return this.fail("invalid chunk size");
          if (++this.lineBytes > MAX_CHUNK_LINE) return this.fail("chunk extension too long");
          i++;
          break;
        case S.Ext:
          // Extensions are dropped when re-framing: checked only for what could end or split the line.
          if (c === 13) this.state = S.SizeLf;
          else if (!isFieldChar(c)) return this.fail("invalid chunk extension");
          if (++this.lineBytes > MAX_CHUNK_LINE) return this.fail("chunk extension too long");
          i++;
          break;
        case S.SizeLf:
          if (c !== 10) return this.fail("chunk size line not ended by CRLF");
          i++;
          this.digits = 0;
          this.lineBytes = 0;
          if (this.size === 0) this.state = S.TrailerStart;
          else this.state = S.Data;
          break;
        case S.Data: {
          const take = Math.min(this.size, n - i);
          if (onData) onData(buf.subarray(i, i + take));
          this.size -= take;
          this.dataBytes += take;
          i += take;
          if (this.size === 0) this.state = S.DataCr;
          break;
        }
        case S.DataCr:
          if (c !== 13) return this.fail("chunk data not followed by CRLF");
          this.state = S.DataLf;
          i++;
          break;
        case S.DataLf:
          if (c !== 10) return this.fail("chunk data not followed by CRLF");
          this.state = S.Size;
          i++;
          break;
        case S.TrailerStart:
          // An empty line ends the trailer section; anything else must be a field line (RFC 9112 §7.1.2).
          if (c === 13) this.state = S.EndLf;
          else if (TCHAR[c] === 1) this.state = S.TrailerName;
          else return this.fail(c === 32 || c === 9 ? "obs-fold in trailer section" : "invalid trailer line");
          if (++this.trailerBytes > this.maxTrailer) return this.fail("trailer section too large");
          i++;
          break;
        case S.TrailerName:
          if (c === 58 /* : */) this.state = S.TrailerValue;
          else if (TCHAR[c] !== 1) return this.fail("invalid trailer field name");
          if (++this.trailerBytes > this.maxTrailer) return this.fail("trailer section too large");
          i++;
          break;
        case S.TrailerValue:
          if (c === 13) this.state = S.TrailerLf;
          else if (!isFieldChar(c)) return this.fail("invalid character in trailer field");
          if (++this.trailerBytes > this.maxTrailer) return this.fail("trailer section too large");
          i++;
          break;
        case S.TrailerLf:
          if (c !== 10) return this.fail("trailer line not ended by CRLF");
          this.state = S.TrailerStart;
          i++;
          break;
        case S.EndLf:
          if (c !== 10) return this.fail("chunked body not ended by CRLF");
          this.state = S.Done;
          return i + 1 - start;
        case S.Done:
          return i - start;
      }
    }
    return i - start;
  }

  private fail(why: string): number {
    this.error = why;
    return -1;
  }
}

const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/**
 * The data runs one feed() handed out as one canonical chunk
 * ("hex CRLF data CRLF"), followed by the last chunk and an empty trailer
 * section when `last`. Trailers are dropped: RFC 9112 §7.1.2 lets a
 * recipient that removes the chunked coding discard them, and RFC 9110
 * §6.5.1 lets any recipient ignore them; the Trailer field announcing them
 * is dropped as hop-by-hop (headers.ts). One buffer, one write.
 */
export function reframe(runs: readonly Uint8Array[], last: boolean): Uint8Array {
  let total = 0;
  for (const r of runs) total += r.length;
  if (total === 0) return last ? LAST_CHUNK : EMPTY_CHUNK;
  const hex = total.toString(16);
  const out = Buffer.allocUnsafe(hex.length + 2 + total + 2 + (last ? LAST_CHUNK.length : 0));
  let at = out.write(hex, 0, "latin1");
  out[at++] = 13;
  out[at++] = 10;
  for (const r of runs) {
    out.set(r, at);
    at += r.length;
  }
  out[at++] = 13;
  out[at++] = 10;
  if (last) out.set(LAST_CHUNK, at);
  return out;
}

const EMPTY_CHUNK = new Uint8Array(0);
