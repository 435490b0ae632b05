/**
 * `-target-allow`: which targets a `/probe` request may name. Pure: parsed from the flags,
 * asked before any lookup (names) and after it (addresses).
 *
 * With no entry everything is allowed, as in the reference. With entries:
 * - a hostname must match one of the globs, when any glob is given (checked before it is
 *   looked up, so a refused name costs no DNS query);
 * - every address, an IP literal or one a name resolved to, must lie in one of the CIDRs, when
 *   any CIDR is given; an IP literal with only globs given is refused.
 */
import { BlockList, isIP } from 'node:net';
import { FlagError } from './errors.js';

/**
 * Whether `name` matches `glob` (both lowercase), `*` standing for any run of characters,
 * dots included. Linear in their lengths (the classic greedy wildcard match with one
 * backtrack point): a regular expression of several `.*` took seconds on a long name.
 */
export function globMatches(glob: string, name: string): boolean {
  let g = 0;
  let n = 0;
  let star = -1;
  let resume = 0;
  while (n < name.length) {
    if (g < glob.length && glob[g] !== '*' && glob[g] === name[n]) {
      g++;
      n++;
    } else if (g < glob.length && glob[g] === '*') {
      star = g++;
      resume = n;
    } else if (star >= 0) {
      g = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob[g] === '*') g++;
  return g === glob.length;
}

/** The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) stands for, or undefined. */
function mappedV4(address: string): string | undefined {
  const m = /^::ffff:(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(address);
  if (!m) return undefined;
  if (m[1]) return m[1];
  const hi = parseInt(m[2] ?? '0', 16);
  const lo = parseInt(m[3] ?? '0', 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

const GLOB = /^[a-z0-9_*]([a-z0-9_*.-]*[a-z0-9_*])?\.?$/i;

export class TargetAllowList {
  // One list per family: a BlockList checks IPv4 addresses against IPv6 rules in their
  // ::ffff: form, so an IPv6 range such as ::/0 would have let every IPv4 address in.
  private readonly cidrs4 = new BlockList();
  private readonly cidrs6 = new BlockList();
  private readonly globs: string[] = [];
  private hasCidr = false;
  /** The entries as given, for messages. */
  readonly entries: readonly string[];

  /** Parses the `-target-allow` values; a value that is neither a CIDR nor a hostname glob is a FlagError. */
  constructor(entries: readonly string[]) {
    this.entries = [...entries];
    for (const entry of entries) {
      const cidr = /^(.+)\/(\d{1,3})$/.exec(entry);
      const ip = cidr?.[1] ?? entry;
      const family = isIP(ip);
      if (family !== 0) {
        const bits = cidr?.[2] === undefined ? (family === 4 ? 32 : 128) : Number(cidr[2]);
        if (bits > (family === 4 ? 32 : 128)) {
          throw new FlagError(`-target-allow ${JSON.stringify(entry)}: a prefix length of at most ${family === 4 ? 32 : 128}`);
        }
        if (family === 4) this.cidrs4.addSubnet(ip, bits, 'ipv4');
        else this.cidrs6.addSubnet(ip, bits, 'ipv6');
        this.hasCidr = true;
      } else if (!cidr && GLOB.test(entry) && !entry.includes('..') && entry.length <= 253) {
        this.globs.push(entry.toLowerCase());
      } else {
        throw new FlagError(
          `-target-allow ${JSON.stringify(entry)} is neither a CIDR (198.51.100.0/24, 2001:db8::/32, an address) nor a hostname glob (*.example.net)`,
        );
      }
    }
  }

  /** Whether any entry was given (with none, everything is allowed). */
  get restricts(): boolean {
    return this.entries.length > 0;
  }

  /** Whether any address range was given (then IP literals are checked against them). */
  get hasRanges(): boolean {
    return this.hasCidr;
  }

  /** Why this hostname may not be looked up, or undefined when it may. */
  refuseName(name: string): string | undefined {
    if (this.globs.length === 0) return undefined;
    const lower = name.toLowerCase();
    if (this.globs.some((g) => globMatches(g, lower))) return undefined;
    return `target=${JSON.stringify(name)} is not allowed: it matches no -target-allow hostname (${this.list()})`;
  }

  /** Why this address may not be probed (`target` is what the request named), or undefined when it may. */
  refuseAddress(address: string, family: 4 | 6, target: string): string | undefined {
    if (!this.restricts) return undefined;
    if (!this.hasCidr) {
      return isIP(target) !== 0 || target.startsWith('[')
        ? `target=${JSON.stringify(target)} is not allowed: -target-allow names no address range, only hostnames (${this.list()})`
        : undefined;
    }
    // An IPv4-mapped IPv6 address is the IPv4 address it maps: only IPv4 ranges allow it.
    const v4 = family === 6 ? mappedV4(address) : address;
    const allowed = v4 !== undefined ? this.cidrs4.check(v4, 'ipv4') : this.cidrs6.check(address, 'ipv6');
    if (allowed) return undefined;
    const via = address === target ? '' : ` (an address of target=${JSON.stringify(target)})`;
    return `${address}${via} is not allowed: it lies in no -target-allow range (${this.list()})`;
  }

  private list(): string {
    return this.entries.join(', ');
  }
}
