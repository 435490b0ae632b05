/**
 * Target names to IP addresses: literals pass through, hostnames go through /etc/hosts and
 * DNS (dns-lookup.ts: c-ares, never libuv's thread pool) with a deadline that cancels the
 * queries, one lookup per name however many requests wait for it, and a small cache.
 */
import { isIP } from 'node:net';
import { DnsLookup } from './dns-lookup.js';
import { BadRequestError, LimitError } from './errors.js';

export type IpVersion = '4' | '6' | 'all';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export interface ResolverOptions {
  timeoutMs: number;
  /** Lookups under way at once (each holds a socket until it ends); past it, LimitError. Default 512. */
  maxLookups?: number;
  /** How long an answer is reused. getaddrinfo does not report record TTLs. */
  cacheTtlMs: number;
  maxEntries: number;
  /** The lookup itself, cancelled through `signal` at the deadline; replaceable for tests of the cache. */
  lookupAll?: (name: string, signal: AbortSignal) => Promise<ResolvedAddress[]>;
}

const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;


/** Canonical text of an IP literal (so `::0:1` and `::1` are one target), or undefined. */
export function canonicalIp(text: string): ResolvedAddress | undefined {
  // A zone (fe80::1%eth0) is not an address the engine can probe.
  if (text.includes('%')) return undefined;
  const family = isIP(text);
  if (family === 4) {
    return { address: text.split('.').map((o) => String(Number(o))).join('.'), family: 4 };
  }
  if (family === 6) {
    // The URL parser prints IPv6 addresses in RFC 5952 form.
    return { address: new URL(`http://[${text}]/`).hostname.slice(1, -1), family: 6 };
  }
  return undefined;
}

/** Throws BadRequestError unless `target` is a valid hostname (checked before anything else is done with it). */
export function checkHostname(target: string): void {
  if (!HOSTNAME.test(target)) {
    throw new BadRequestError(`target=${JSON.stringify(target)} is neither an IP address nor a valid hostname`);
  }
}

/** The IP literal a `target` parameter names (bare, or in brackets), or undefined for a hostname. */
export function literalTarget(target: string): ResolvedAddress | undefined {
  return canonicalIp(target.startsWith('[') && target.endsWith(']') ? target.slice(1, -1) : target);
}

export class Resolver {
  private readonly cache = new Map<string, { addresses: ResolvedAddress[]; expires: number }>();
  /** Lookups under way, by name: a request for a name being looked up waits for that lookup. */
  private readonly pending = new Map<string, Promise<ResolvedAddress[]>>();
  private readonly lookupAll: (name: string, signal: AbortSignal) => Promise<ResolvedAddress[]>;

  constructor(private readonly options: ResolverOptions) {
    if (options.lookupAll) {
      this.lookupAll = options.lookupAll;
    } else {
      // Two tries of half the deadline each: a lost packet is sent again, and the deadline
      // cancels whatever is still under way.
      const dns = new DnsLookup({ tryTimeoutMs: Math.max(100, Math.floor(options.timeoutMs / 2)), tries: 2 });
      this.lookupAll = (name, signal) => dns.lookup(name, signal);
    }
  }

  /** Addresses of one `target` parameter, filtered by `ip_version`. Throws BadRequestError. */
  async resolve(target: string, ipVersion: IpVersion): Promise<ResolvedAddress[]> {
    const literal = literalTarget(target);
    if (literal) {
      if (ipVersion !== 'all' && String(literal.family) !== ipVersion) {
        throw new BadRequestError(`target=${JSON.stringify(target)} is an IPv${literal.family} address but ip_version=${ipVersion}`);
      }
      return [literal];
    }
    checkHostname(target);
    const all = await this.lookupCached(target.toLowerCase());
    const wanted = all.filter((a) => ipVersion === 'all' || String(a.family) === ipVersion);
    if (wanted.length === 0) {
      const what = ipVersion === 'all' ? 'no address' : `no IPv${ipVersion} address`;
      throw new BadRequestError(`unable to resolve target=${JSON.stringify(target)}: ${what}`);
    }
    return wanted;
  }

  private async lookupCached(name: string): Promise<ResolvedAddress[]> {
    const hit = this.cache.get(name);
    if (hit && hit.expires > Date.now()) {
      return hit.addresses;
    }
    let lookup = this.pending.get(name);
    if (!lookup) {
      const most = this.options.maxLookups ?? 512;
      if (this.pending.size >= most) {
        throw new LimitError(`${most} DNS lookups are under way (each up to ${this.options.timeoutMs} ms): target=${JSON.stringify(name)} not looked up, try again`);
      }
      lookup = this.lookupFresh(name).finally(() => this.pending.delete(name));
      this.pending.set(name, lookup);
    }
    return lookup;
  }

  /** One lookup of `name`, cancelled at the deadline, its answer cached. */
  private async lookupFresh(name: string): Promise<ResolvedAddress[]> {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    // Also a backstop for a lookup that does not heed its signal.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new Error(`timed out after ${this.options.timeoutMs} ms`));
      }, this.options.timeoutMs);
    });
    let answers: ResolvedAddress[];
    try {
      answers = await Promise.race([this.lookupAll(name, controller.signal), timeout]);
    } catch (e) {
      const reason = controller.signal.aborted ? `timed out after ${this.options.timeoutMs} ms` : ((e as NodeJS.ErrnoException).code ?? (e as Error).message);
      throw new BadRequestError(`unable to resolve target=${JSON.stringify(name)}: ${reason}`);
    } finally {
      clearTimeout(timer);
    }
    const unique = new Map<string, ResolvedAddress>();
    for (const a of answers) {
      const c = canonicalIp(a.address);
      if (c) unique.set(c.address, c);
    }
    const addresses = [...unique.values()];
    this.cache.delete(name);
    this.cache.set(name, { addresses, expires: Date.now() + this.options.cacheTtlMs });
    // Maps iterate in insertion order: the first key is the oldest entry.
    while (this.cache.size > this.options.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    return addresses;
  }
}
