/**
 * A protocol buffers wire reader for tests, written from the encoding spec apart from the
 * exporter's writer: fields by number, nested messages decoded on request.
 */
export type Field = { field: number; wire: number; value: bigint | number | Uint8Array };

function varint(buf: Uint8Array, at: number): [bigint, number] {
  let n = 0n;
  let shift = 0n;
  for (;;) {
    const b = buf[at++];
    if (b === undefined) throw new Error('truncated varint');
    n |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [n, at];
    shift += 7n;
  }
}

export function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let at = 0;
  while (at < buf.length) {
    const [key, next] = varint(buf, at);
    at = next;
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      const [v, n] = varint(buf, at);
      out.push({ field, wire, value: v });
      at = n;
    } else if (wire === 1) {
      out.push({ field, wire, value: new DataView(buf.buffer, buf.byteOffset + at, 8).getFloat64(0, true) });
      at += 8;
    } else if (wire === 2) {
      const [len, n] = varint(buf, at);
      out.push({ field, wire, value: buf.subarray(n, n + Number(len)) });
      at = n + Number(len);
    } else {
      throw new Error(`wire type ${wire} not expected here`);
    }
  }
  if (at !== buf.length) throw new Error('trailing bytes');
  return out;
}

/** Messages of a length-delimited stream. */
export function delimited(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < buf.length) {
    const [len, n] = varint(buf, at);
    out.push(buf.subarray(n, n + Number(len)));
    at = n + Number(len);
  }
  return out;
}

export const zigzag = (n: bigint): number => Number(n & 1n ? -((n + 1n) >> 1n) : n >> 1n);

/** Values of one field number. */
export const all = (fs: Field[], field: number) => fs.filter((f) => f.field === field).map((f) => f.value);
export const one = (fs: Field[], field: number) => all(fs, field)[0];
export const text = (v: unknown) => new TextDecoder().decode(v as Uint8Array);
export const sub = (v: unknown) => fields(v as Uint8Array);
