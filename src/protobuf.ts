/**
 * The few protocol buffers encodings the Prometheus protobuf exposition needs (varints,
 * zigzag, doubles, strings, nested messages), written by hand: one message type, no schema
 * compiler. Pure; every field is written even when zero (proto2 `optional` fields are present).
 */

const enum Wire {
  Varint = 0,
  Fixed64 = 1,
  Bytes = 2,
}

export class ProtoWriter {
  private buf: Uint8Array;
  private view: DataView;
  private len = 0;

  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  get length(): number {
    return this.len;
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  /** An unsigned integer up to 2^53 (what a JavaScript number holds exactly). */
  varint(n: number): this {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a varint: ${n}`);
    this.room(10);
    while (n >= 0x80) {
      this.buf[this.len++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.len++] = n;
    return this;
  }

  private tag(field: number, wire: Wire): void {
    this.varint(field * 8 + wire);
  }

  uint(field: number, n: number): this {
    this.tag(field, Wire.Varint);
    return this.varint(n);
  }

  /** `sint32` / `sint64`: zigzag, so that small negative numbers stay short. */
  sint(field: number, n: number): this {
    this.tag(field, Wire.Varint);
    return this.varint(n >= 0 ? 2 * n : -2 * n - 1);
  }

  double(field: number, v: number): this {
    this.tag(field, Wire.Fixed64);
    this.room(8);
    this.view.setFloat64(this.len, v, true);
    this.len += 8;
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  bytes(field: number, b: Uint8Array): this {
    this.tag(field, Wire.Bytes);
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  /** A nested message, written by `fill` into a writer of its own. */
  message(field: number, fill: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter(64);
    fill(inner);
    return this.bytes(field, inner.finish());
  }

  /** Bytes prefixed with their varint length: one message of a delimited stream. */
  delimited(b: Uint8Array): this {
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}
