/**
 * Target names to IP addresses: literals pass through, hostnames go through the system
 * resolver (getaddrinfo: /etc/hosts, then DNS) with a timeout and a small cache.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { BadRequestError } from './errors.js';

export type IpVersion = '4' | '6' | 'all';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export interface ResolverOptions {
  timeoutMs: number;
  /** How long an answer is reused. getaddrinfo does not report record TTLs. */
  cacheTtlMs: number;
  maxEntries: number;
  /** The lookup itself; replaceable for tests of the cache. */
  lookupAll?: (name: string) => Promise<ResolvedAddress[]>;
}

const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

async function systemLookup(name: string): Promise<ResolvedAddress[]> {
  const answers = await lookup(name, { all: true, verbatim: true });
  return answers.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
}

/** Canonical text of an IP literal (so `::0:1` and `::1` are one target), or undefined. */
export function canonicalIp(text: string): ResolvedAddress | undefined {
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

/** The IP literal a `target` parameter names (bare, or in brackets), or undefined for a hostname. */
export function literalTarget(target: string): ResolvedAddress | undefined {
  return canonicalIp(target.startsWith('[') && target.endsWith(']') ? target.slice(1, -1) : target);
}

export class Resolver {
  private readonly cache = new Map<string, { addresses: ResolvedAddress[]; expires: number }>();
  private readonly lookupAll: (name: string) => Promise<ResolvedAddress[]>;

  constructor(private readonly options: ResolverOptions) {
    this.lookupAll = options.lookupAll ?? systemLookup;
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
    if (!HOSTNAME.test(target)) {
      throw new BadRequestError(`target=${JSON.stringify(target)} is neither an IP address nor a valid hostname`);
    }
    const all = await this.lookupCached(target.toLowerCase());
    const wanted = all.filter((a) => ipVersion === 'all' || String(a.family) === ipVersion);
    if (wanted.length === 0) {
      const what = ipVersion === 'all' ? 'no address' : `no IPv${ipVersion} address`;
      throw new BadRequestError(`unable to resolve target=${JSON.stringify(target)}: ${what}`);
    }
    return wanted;
  }

  private async lookupCached(name: string): Promise<ResolvedAddress[]> {
    const now = Date.now();
    const hit = this.cache.get(name);
    if (hit && hit.expires > now) {
      return hit.addresses;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
    });
    let answers: ResolvedAddress[];
    try {
      answers = await Promise.race([this.lookupAll(name), timeout]);
    } catch (e) {
      const reason = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
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
    this.cache.set(name, { addresses, expires: now + this.options.cacheTtlMs });
    // Maps iterate in insertion order: the first key is the oldest entry.
    while (this.cache.size > this.options.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    return addresses;
  }
}
