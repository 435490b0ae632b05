/**
 * Hostname lookups that one bad zone cannot hold up: DNS through c-ares (`node:dns`'s
 * `Resolver`: its own sockets and timers on the event loop, and `cancel()`), not getaddrinfo,
 * which holds one of libuv's four pool threads for as long as a lookup hangs (a handful of
 * hanging lookups stopped every other name). What getaddrinfo did besides is done here:
 * /etc/hosts first, then the search list of /etc/resolv.conf with its `ndots` rule. Both files
 * are read again when they change. The parsers are pure.
 */
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import { readFileSync, statSync } from 'node:fs';

export interface Address {
  address: string;
  family: 4 | 6;
}

export interface ResolvConf {
  /** Domains tried after (or before, see `ndots`) the name itself. */
  search: string[];
  /** A name with at least this many dots is tried as it is first. */
  ndots: number;
}

/** `search`/`domain` and `options ndots:` of a resolv.conf (the last `search` or `domain` line wins, as in glibc). */
export function parseResolvConf(text: string): ResolvConf {
  const conf: ResolvConf = { search: [], ndots: 1 };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [keyword, ...args] = line.split(/\s+/);
    if (keyword === 'search' || keyword === 'domain') {
      conf.search = args.map((d) => d.replace(/\.$/, '').toLowerCase()).filter((d) => d !== '');
    } else if (keyword === 'options') {
      for (const option of args) {
        const m = /^ndots:(\d+)$/.exec(option);
        if (m) conf.ndots = Math.min(15, Number(m[1]));
      }
    }
  }
  return conf;
}

/** Names to addresses from a hosts file (lowercase names and aliases, in file order). */
export function parseHosts(text: string): Map<string, Address[]> {
  const hosts = new Map<string, Address[]>();
  for (const raw of text.split('\n')) {
    const [address, ...names] = raw.replace(/#.*$/, '').trim().split(/\s+/);
    const family = address === undefined || address.includes('%') ? 0 : isIP(address);
    if (family === 0 || address === undefined) continue;
    for (const name of names) {
      const key = name.toLowerCase().replace(/\.$/, '');
      const list = hosts.get(key) ?? [];
      if (!list.some((a) => a.address === address)) list.push({ address, family: family === 6 ? 6 : 4 });
      hosts.set(key, list);
    }
  }
  return hosts;
}

/**
 * The names DNS is asked, in order, as glibc's resolver tries them: a name ending in a dot
 * only as it is; one with at least `ndots` dots as it is, then with each search domain;
 * others with each search domain first.
 */
export function searchNames(name: string, conf: ResolvConf): string[] {
  if (name.endsWith('.')) return [name.slice(0, -1)];
  const withDomains = conf.search.map((d) => `${name}.${d}`);
  const dots = name.split('.').length - 1;
  return dots >= conf.ndots ? [name, ...withDomains] : [...withDomains, name];
}

/** A file's parsed contents, read again when its modification time or size changes (checked at most once a second). */
class WatchedFile<T> {
  private value: T;
  private stamp = '';
  private checked = 0;

  constructor(
    private readonly path: string,
    private readonly parse: (text: string) => T,
  ) {
    this.value = parse('');
  }

  get(): T {
    const now = Date.now();
    if (now - this.checked < 1000) return this.value;
    this.checked = now;
    let stamp = 'missing';
    try {
      const s = statSync(this.path);
      stamp = `${s.mtimeMs} ${s.size} ${s.ino}`;
    } catch {
      // no such file: parsed as empty
    }
    if (stamp !== this.stamp) {
      this.stamp = stamp;
      let text = '';
      try {
        text = readFileSync(this.path, 'utf8');
      } catch {
        // unreadable or gone: as empty
      }
      this.value = this.parse(text);
    }
    return this.value;
  }
}

/** DNS answers that mean "no such name or no such record": the next search name is tried. */
const NO_ANSWER = new Set(['ENOTFOUND', 'ENODATA']);
/** A server failure: the next search name is tried too (as glibc does), and reported if none answers. */
const SERVER_FAILURE = 'ESERVFAIL';

export interface DnsLookupOptions {
  /** How long c-ares waits for one answer before it tries again (or the next server). */
  tryTimeoutMs: number;
  /** How many times each query is sent per server. */
  tries: number;
  hostsPath?: string;
  resolvConfPath?: string;
}

export class DnsLookup {
  private readonly hosts: WatchedFile<Map<string, Address[]>>;
  private readonly conf: WatchedFile<ResolvConf>;

  constructor(private readonly options: DnsLookupOptions) {
    this.hosts = new WatchedFile(options.hostsPath ?? '/etc/hosts', parseHosts);
    this.conf = new WatchedFile(options.resolvConfPath ?? '/etc/resolv.conf', parseResolvConf);
  }

  /**
   * The addresses of `name` (lowercase): from the hosts file, else A and AAAA over DNS for
   * each search name in turn. Rejects with the DNS error's code (ENOTFOUND, ETIMEOUT,
   * ESERVFAIL, ...); `signal` cancels the queries under way (ECANCELLED).
   */
  async lookup(name: string, signal?: AbortSignal): Promise<Address[]> {
    const bare = name.replace(/\.$/, '');
    const fromHosts = this.hosts.get().get(bare);
    if (fromHosts) return fromHosts;
    // One resolver a lookup, so that cancelling it cancels this lookup's queries only. It
    // reads the servers of /etc/resolv.conf as it is made.
    const resolver = new dns.Resolver({ timeout: this.options.tryTimeoutMs, tries: this.options.tries });
    const cancel = () => resolver.cancel();
    signal?.addEventListener('abort', cancel, { once: true });
    let serverFailure: unknown;
    try {
      for (const candidate of searchNames(name, this.conf.get())) {
        if (signal?.aborted) throw Object.assign(new Error('cancelled'), { code: 'ECANCELLED' });
        const [v4, v6] = await Promise.allSettled([resolver.resolve4(candidate), resolver.resolve6(candidate)]);
        const addresses: Address[] = [
          ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 as const })) : []),
          ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 as const })) : []),
        ];
        if (addresses.length > 0) return addresses;
        for (const r of [v4, v6]) {
          if (r.status !== 'rejected') continue;
          const code = (r.reason as NodeJS.ErrnoException).code ?? '';
          if (code === SERVER_FAILURE) serverFailure = r.reason;
          else if (!NO_ANSWER.has(code)) throw r.reason;
        }
      }
      throw serverFailure ?? Object.assign(new Error(`${name}: no such name`), { code: 'ENOTFOUND' });
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }
}
