/**
 * Address and port → slot, with no object and no string per entry: each slot's address bytes
 * in one typed array, an open-addressing table of slot numbers in another (at most half full).
 * A Map from key strings took about 135 bytes of resident memory an entry at 100,000 entries
 * (a standalone node script); this takes 28 a slot, up to twice that while the arrays have
 * room to grow.
 */
import { canonicalIp } from './resolve.js';

const EMPTY = -1;
/** `meta` of a slot: 0 when free, else this bit, the family and the key (see `metaOf`). */
const USED = 0x8000_0000;

/** Writes the 4 bytes of a dotted IPv4 address at `out[at]`; false when it is not one. */
function parse4(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (const [i, p] of parts.entries()) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return false;
    out[at + i] = Number(p);
  }
  return true;
}

/** 16-bit words of one side of an IPv6 address ("" is none); undefined when malformed. */
function words6(side: string): number[] | undefined {
  if (side === '') return [];
  const out: number[] = [];
  const groups = side.split(':');
  for (const [i, g] of groups.entries()) {
    if (i === groups.length - 1 && g.includes('.')) {
      const v4 = new Uint8Array(4);
      if (!parse4(g, v4, 0)) return undefined;
      out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
    } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) {
      out.push(parseInt(g, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

/** Writes the 16 bytes of an IPv6 address at `out[0]`; false when it is not one. */
function parse6(text: string, out: Uint8Array): boolean {
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const head = words6(halves[0] as string);
  const tail = halves.length === 2 ? words6(halves[1] as string) : [];
  if (!head || !tail) return false;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return false;
  const words = [...head, ...new Array<number>(missing).fill(0), ...tail];
  for (const [i, w] of words.entries()) {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  }
  return true;
}

/** The family of `address` with its bytes in `out` (IPv4 in the first 4), or 0 when it is not an IP address. */
export function addressBytes(address: string, out: Uint8Array): 0 | 4 | 6 {
  out.fill(0);
  if (address.includes(':')) return parse6(address, out) ? 6 : 0;
  return parse4(address, out, 0) ? 4 : 0;
}

export class AddressIndex {
  private bytes = new Uint8Array(16 * 1024);
  private meta = new Uint32Array(1024);
  /** Slot numbers by hash, linear probing; EMPTY where none. */
  private table = new Int32Array(2048).fill(EMPTY);
  private count = 0;
  private readonly scratch = new Uint8Array(16);

  get size(): number {
    return this.count;
  }

  /** Whether `slot` is indexed. */
  holds(slot: number): boolean {
    return slot < this.meta.length && this.meta[slot] !== 0;
  }

  /** The slot indexed under `address` and `port`. */
  get(address: string, key: number): number | undefined {
    const family = addressBytes(address, this.scratch);
    if (family === 0) return undefined;
    const mask = this.table.length - 1;
    for (let i = this.hash(this.scratch, 0, family, key) & mask; ; i = (i + 1) & mask) {
      const slot = this.table[i] as number;
      if (slot === EMPTY) return undefined;
      if (this.meta[slot] === metaOf(family, key) && this.sameBytes(slot)) return slot;
    }
  }

  /**
   * Indexes free `slot` under `address` and `port` (which must not be indexed yet); false,
   * and nothing changed, when `address` is not an IP address.
   */
  set(slot: number, address: string, key: number): boolean {
    const family = addressBytes(address, this.scratch);
    if (family === 0) return false;
    this.ensureSlot(slot);
    this.bytes.set(this.scratch, slot * 16);
    this.meta[slot] = metaOf(family, key);
    this.count += 1;
    if (2 * this.count > this.table.length) this.rehash(2 * this.table.length);
    else this.place(slot);
    return true;
  }

  /** Unindexes `slot`. */
  delete(slot: number): void {
    if (!this.holds(slot)) return;
    const mask = this.table.length - 1;
    let i = this.home(slot);
    for (let probes = 0; this.table[i] !== slot; probes++) {
      if (probes > mask) throw new Error(`address index: slot ${slot} is held but not in the table`);
      i = (i + 1) & mask;
    }
    // Backward-shift deletion: later entries of the run move up, so no lookup stops early.
    for (let j = (i + 1) & mask; this.table[j] !== EMPTY; j = (j + 1) & mask) {
      const home = this.home(this.table[j] as number);
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!between) {
        this.table[i] = this.table[j] as number;
        i = j;
      }
    }
    this.table[i] = EMPTY;
    this.meta[slot] = 0;
    this.count -= 1;
  }

  /** The address of an indexed slot, in the canonical text form. */
  address(slot: number): string {
    const b = this.bytes.subarray(slot * 16, slot * 16 + 16);
    if (((this.meta[slot] as number) >>> 28 & 0x7) === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
    const words = Array.from({ length: 8 }, (_, i) => (((b[2 * i] as number) << 8) | (b[2 * i + 1] as number)).toString(16));
    return canonicalIp(words.join(':'))?.address ?? words.join(':');
  }

  port(slot: number): number {
    return (this.meta[slot] as number) & 0xffff;
  }

  /** The probe options' variant of `slot` (see `probeKey`). */
  variant(slot: number): number {
    return ((this.meta[slot] as number) >>> 16) & 0x7ff;
  }

  /**
   * Gives memory back once fewer than a quarter of the arrays are used: the slot arrays cut
   * to hold slots below `slots` (none at or above it may be indexed), the hash table to twice
   * the entries (both powers of two, never below their first size).
   */
  shrink(slots: number): void {
    const fit = (n: number, least: number) => {
      let size = least;
      while (size < n) size *= 2;
      return size;
    };
    const wanted = fit(slots, 1024);
    if (this.meta.length > 4 * wanted) {
      [this.meta, this.bytes] = [this.meta.slice(0, wanted), this.bytes.slice(0, 16 * wanted)];
    }
    const table = fit(2 * this.count, 2048);
    if (this.table.length > 4 * table) this.rehash(table);
  }

  /** Lengths of the slot arrays and of the hash table, for tests. */
  sizes(): { slots: number; table: number } {
    return { slots: this.meta.length, table: this.table.length };
  }

  private ensureSlot(slot: number): void {
    if (slot < this.meta.length) return;
    let n = this.meta.length;
    while (n <= slot) n *= 2;
    const meta = new Uint32Array(n);
    meta.set(this.meta);
    const bytes = new Uint8Array(16 * n);
    bytes.set(this.bytes);
    [this.meta, this.bytes] = [meta, bytes];
  }

  private home(slot: number): number {
    const meta = this.meta[slot] as number;
    return this.hash(this.bytes, slot * 16, (meta >>> 28) & 0x7, meta & 0x7ff_ffff) & (this.table.length - 1);
  }

  private place(slot: number): void {
    const mask = this.table.length - 1;
    let i = this.home(slot);
    while (this.table[i] !== EMPTY) i = (i + 1) & mask;
    this.table[i] = slot;
  }

  private rehash(size: number): void {
    this.table = new Int32Array(size).fill(EMPTY);
    for (let slot = 0; slot < this.meta.length; slot++) if (this.meta[slot] !== 0) this.place(slot);
  }

  private sameBytes(slot: number): boolean {
    for (let k = 0; k < 16; k++) if (this.bytes[slot * 16 + k] !== this.scratch[k]) return false;
    return true;
  }

  /** FNV-1a over the address bytes, the family and the key (port and variant). */
  private hash(bytes: Uint8Array, at: number, family: number, port: number): number {
    let h = 0x811c9dc5;
    for (let k = 0; k < 16; k++) h = Math.imul(h ^ (bytes[at + k] as number), 0x01000193);
    h = Math.imul(h ^ family, 0x01000193);
    h = Math.imul(h ^ (port & 0xff), 0x01000193);
    h = Math.imul(h ^ ((port >>> 8) & 0xff), 0x01000193);
    h = Math.imul(h ^ (port >>> 16), 0x01000193);
    return h >>> 0;
  }
}

/**
 * Used bit, family (4 or 6) in bits 28..30, and the key: a port in the low 16 bits, the
 * probe options' variant (0..2047) above it.
 */
function metaOf(family: number, key: number): number {
  return (USED | (family << 28) | key) >>> 0;
}

/** A target's key in the index: its TCP port (0 for ICMP) and its probe options' variant. */
export function probeKey(port: number, variant = 0): number {
  return port + variant * 0x1_0000;
}
