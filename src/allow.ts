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

/** `*` stands for any run of characters, dots included; matched without case. */
function globToRegExp(glob: string): RegExp {
  const escaped = glob
    .toLowerCase()
    .split('*')
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${escaped}$`);
}

const GLOB = /^[a-z0-9_*]([a-z0-9_*.-]*[a-z0-9_*])?\.?$/i;

export class TargetAllowList {
  private readonly cidrs = new BlockList();
  private readonly globs: RegExp[] = [];
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
        this.cidrs.addSubnet(ip, bits, family === 4 ? 'ipv4' : 'ipv6');
        this.hasCidr = true;
      } else if (!cidr && GLOB.test(entry) && !entry.includes('..') && entry.length <= 253) {
        this.globs.push(globToRegExp(entry));
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

  /** Why this hostname may not be looked up, or undefined when it may. */
  refuseName(name: string): string | undefined {
    if (this.globs.length === 0) return undefined;
    const lower = name.toLowerCase();
    if (this.globs.some((g) => g.test(lower))) return undefined;
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
    if (this.cidrs.check(address, family === 4 ? 'ipv4' : 'ipv6')) return undefined;
    const via = address === target ? '' : ` (an address of target=${JSON.stringify(target)})`;
    return `${address}${via} is not allowed: it lies in no -target-allow range (${this.list()})`;
  }

  private list(): string {
    return this.entries.join(', ');
  }
}
