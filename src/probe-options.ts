/**
 * Per-request probe options (`size`, `ttl`, `tos`, `df`, `source`): each distinct set makes a
 * distinct probe of a target, so the registry keys targets by a small number per set (its
 * variant), interned here while targets use it.
 */
import { LimitError } from './errors.js';

export interface ProbeOptions {
  /** ICMP payload bytes (12..8972). */
  size?: number;
  /** IPv4 TTL / IPv6 hop limit (1..255). */
  ttl?: number;
  /** IPv4 TOS byte / IPv6 traffic class (0..255). */
  tos?: number;
  /** Don't fragment (true) or may fragment (false); absent: the kernel's default. */
  df?: boolean;
  /** A local address of this host to send from. */
  source?: string;
}

export const MIN_SIZE = 12;
export const MAX_SIZE = 8972;
/** Distinct option sets in use at once (the address index keeps a set's number in 11 bits). */
export const MAX_VARIANTS = 2047;

/** One string per distinct set; '' for the default probe. */
export function optionsKey(o: ProbeOptions | undefined): string {
  if (!o) return '';
  const parts: string[] = [];
  if (o.size !== undefined) parts.push(`size=${o.size}`);
  if (o.ttl !== undefined) parts.push(`ttl=${o.ttl}`);
  if (o.tos !== undefined) parts.push(`tos=${o.tos}`);
  if (o.df !== undefined) parts.push(`df=${o.df ? 1 : 0}`);
  if (o.source !== undefined) parts.push(`source=${o.source}`);
  return parts.join(' ');
}

interface Variant {
  id: number;
  options: ProbeOptions;
  /** Targets probed with it. */
  refs: number;
}

/** Option sets by number while targets use them; 0 is the default probe and always exists. */
export class OptionVariants {
  private readonly byKey = new Map<string, Variant>();
  private readonly byId = new Map<number, Variant>();
  private readonly free: number[] = [];
  private next = 1;

  /** The number of `options` if some target uses it (0 for the default). */
  peek(options: ProbeOptions | undefined): number | undefined {
    const key = optionsKey(options);
    return key === '' ? 0 : this.byKey.get(key)?.id;
  }

  /** The number of `options`, counting one more target using it. LimitError past MAX_VARIANTS sets. */
  take(options: ProbeOptions | undefined): number {
    const key = optionsKey(options);
    if (key === '' || !options) return 0;
    let v = this.byKey.get(key);
    if (!v) {
      const id = this.free.pop() ?? (this.next <= MAX_VARIANTS ? this.next++ : undefined);
      if (id === undefined) {
        throw new LimitError(`${MAX_VARIANTS} distinct sets of probe options are in use: a new one starts when targets probed with another expire`);
      }
      v = { id, options: { ...options }, refs: 0 };
      this.byKey.set(key, v);
      this.byId.set(id, v);
    }
    v.refs += 1;
    return v.id;
  }

  /** One target fewer uses set `id`; forgotten when none does. */
  release(id: number): void {
    const v = this.byId.get(id);
    if (!v) return;
    v.refs -= 1;
    if (v.refs > 0) return;
    this.byId.delete(id);
    this.byKey.delete(optionsKey(v.options));
    this.free.push(id);
  }

  options(id: number): ProbeOptions | undefined {
    return this.byId.get(id)?.options;
  }

  get size(): number {
    return this.byId.size;
  }
}
