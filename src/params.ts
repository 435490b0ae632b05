/** The `/probe` query string, validated at the door. Pure: tested without a server. */
import { BadRequestError } from './errors.js';
import type { IpVersion } from './resolve.js';

export interface ProbeQuery {
  targets: string[];
  ipVersion: IpVersion;
}

const KNOWN = new Set(['target', 'ip_version']);

export function parseProbeQuery(params: URLSearchParams): ProbeQuery {
  for (const key of new Set(params.keys())) {
    if (key === 'tcp_port') {
      throw new BadRequestError('tcp_port is not supported yet: TCP SYN probing comes in a later version');
    }
    if (!KNOWN.has(key)) {
      throw new BadRequestError(`unknown parameter ${JSON.stringify(key)} (expected target, ip_version)`);
    }
  }
  const versions = params.getAll('ip_version');
  if (versions.length > 1) {
    throw new BadRequestError('ip_version may be given once');
  }
  const ipVersion = versions[0] ?? 'all';
  if (ipVersion !== '4' && ipVersion !== '6' && ipVersion !== 'all') {
    throw new BadRequestError(`invalid ip_version=${JSON.stringify(ipVersion)} (expected 4, 6 or all)`);
  }
  const targets = params.getAll('target').map((t) => t.trim());
  if (targets.length === 0) {
    throw new BadRequestError('missing parameter target');
  }
  if (targets.some((t) => t === '')) {
    throw new BadRequestError('empty target parameter');
  }
  return { targets: [...new Set(targets)], ipVersion };
}
