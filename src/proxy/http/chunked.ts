/*
 * The chunked transfer coding (RFC 9112 §7.1), incrementally. The proxy
 * passes chunked bodies on as they came (no re-encoding, no copy): this
 * decoder only finds where the message ends, counts its data bytes, checks
 * the framing strictly, and can hand out the data (for an HTTP/1.0 client,
 * which cannot take chunked).
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 */

const enum S {
  Size,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  Trailer,
  TrailerLf,
  EndLf,
  Done,
}

export class ChunkedDecoder {
  private state = S.Size;
  private digits = 0;
  private size = 0;
  /** Data bytes seen so far (for the body size limit). */
  dataBytes = 0;
  /** What was wrong, once feed returned -1. */
  error = "";

  get done(): boolean {
    return this.state === S.Done;
  }

  /**
   * Consume bytes of `buf` from `start`; returns how many belong to this
   * message (it stops at its end), or -1 on a framing error. `onData`, when
   * given, gets each run of chunk data.
   */
  feed(buf: Uint8Array, start: number, onData?: (data: Uint8Array) => void): number {
    let i = start;
    const n = buf.length;
    while (i < n) {
      const c = buf[i]!;
      switch (this.state) {
        case S.Size: {
          const h = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (h >= 0) {
            // 13 hex digits keep the size within 2^52, exact in a double.
            if (++this.digits > 13) return this.fail("chunk size too large");
            this.size = this.size * 16 + h;
          } else if (this.digits === 0) {
            return this.fail("missing chunk size");
          } else if (c === 59 /* ; */ || c === 32 || c === 9) {
            this.state = S.Ext; // chunk-ext, with BWS before ";"
          } else if (c === 13) {
            this.state = S.SizeLf;
          } else {
            return this.fail("invalid chunk size");
          }
          i++;
          break;
        }
        case S.Ext:
          if (c === 13) this.state = S.SizeLf;
          else if (c === 10 || c === 0 || c === 127) return this.fail("invalid chunk extension");
          i++;
          break;
        case S.SizeLf:
          if (c !== 10) return this.fail("chunk size line not ended by CRLF");
          i++;
          this.digits = 0;
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
          // An empty line ends the trailer section; anything else is a trailer field line.
          this.state = c === 13 ? S.EndLf : S.Trailer;
          if (c === 10) return this.fail("bare LF in trailer section");
          i++;
          break;
        case S.Trailer:
          if (c === 13) this.state = S.TrailerLf;
          else if (c === 10 || c === 0) return this.fail("invalid trailer line");
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
