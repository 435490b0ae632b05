/**
 * Per-request probe options (`size`, `ttl`, `tos`, `df`, `source`): each distinct set makes a
 * distinct probe of a target, so the registry keys targets by a small number per set (its
 * variant), interned here while targets use it.
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { BadRequestError, LimitError } from './errors.js';
import { canonicalIp, type IpVersion } from './resolve.js';

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

/** An integer option in [min, max], or a BadRequestError naming it. */
function integerOption(name: string, v: number | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < min || v > max) throw new BadRequestError(`${name} must be an integer between ${min} and ${max}, got ${v}`);
  return v;
}

/**
 * Options as the engine takes them and the registry keys them: ranges checked, `source`
 * canonical and an address of this host. Throws BadRequestError. For ICMP probes unless `tcp`.
 */
export function normalizeOptions(o: ProbeOptions | undefined, tcp = false): ProbeOptions | undefined {
  if (!o) return undefined;
  if (o.size !== undefined && tcp) throw new BadRequestError('size applies to ICMP probes only (a TCP SYN carries no payload)');
  const out: ProbeOptions = {};
  const size = integerOption('size', o.size, MIN_SIZE, MAX_SIZE);
  const ttl = integerOption('ttl', o.ttl, 1, 255);
  const tos = integerOption('tos', o.tos, 0, 255);
  if (size !== undefined) out.size = size;
  if (ttl !== undefined) out.ttl = ttl;
  if (tos !== undefined) out.tos = tos;
  if (o.df !== undefined) out.df = o.df;
  if (o.source !== undefined) {
    const source = canonicalSource(o.source);
    if (!isLocalAddress(source)) throw new BadRequestError(`source ${source} is not an address of this host`);
    out.source = source;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** `source` as an IP address in canonical form (no zone), or a BadRequestError. */
export function canonicalSource(raw: string): string {
  const canonical = isIP(raw) === 0 || raw.includes('%') ? undefined : canonicalIp(raw);
  if (!canonical) throw new BadRequestError(`invalid source=${JSON.stringify(raw)} (expected an IP address of this host)`);
  return canonical.address;
}

/**
 * The IP version lookups are narrowed to when probes leave from `source`: its family, which
 * `ipVersion` (the request's, named `asked`) must not contradict. BadRequestError if it does.
 */
export function sourceIpVersion(source: string | undefined, ipVersion: IpVersion, asked: string): IpVersion {
  if (source === undefined) return ipVersion;
  const family = isIP(source) === 4 ? '4' : '6';
  if (ipVersion !== 'all' && ipVersion !== family) {
    throw new BadRequestError(`source ${source} is IPv${family}, ${asked} asks for IPv${ipVersion}`);
  }
  return family;
}

/** BadRequestError when packets from `source` cannot reach one of `addresses` (see `sourceScopeRefusal`). */
export function checkSourceScope(source: string | undefined, addresses: readonly string[]): void {
  if (source === undefined) return;
  for (const address of addresses) {
    const why = sourceScopeRefusal(source, address);
    if (why) throw new BadRequestError(why);
  }
}

/** Whether `address` (canonical) is configured on an interface of this host (its network namespace). */
export function isLocalAddress(address: string): boolean {
  return Object.values(networkInterfaces())
    .flat()
    .some((a) => a !== undefined && canonicalIp(a.address.split('%')[0] ?? '')?.address === address);
}

const isLoopback = (a: string) => a === '::1' || a.startsWith('127.');
const isLinkLocal = (a: string) => a.startsWith('169.254.') || /^fe[89ab][0-9a-f]:/i.test(a);

/**
 * Why packets from `source` cannot reach `target` (both canonical), if they cannot: a loopback
 * source reaches only loopback targets (the kernel refuses the rest), a link-local one only
 * link-local targets (routers drop the rest, which would look like loss).
 */
export function sourceScopeRefusal(source: string, target: string): string | undefined {
  if (isLoopback(source) && !isLoopback(target)) return `source ${source} is a loopback address: it can only probe this host, not ${target}`;
  if (isLinkLocal(source) && !isLinkLocal(target)) return `source ${source} is link-local: packets from it to ${target} would be dropped past the link`;
  return undefined;
}

interface Variant {
  id: number;
  key: string;
  options: Readonly<ProbeOptions>;
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
      v = { id, key, options: Object.freeze({ ...options }), refs: 0 };
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
    this.byKey.delete(v.key);
    this.free.push(id);
  }

  /** A copy of set `id`'s options. */
  options(id: number): ProbeOptions | undefined {
    const o = this.byId.get(id)?.options;
    return o ? { ...o } : undefined;
  }

  get size(): number {
    return this.byId.size;
  }
}
