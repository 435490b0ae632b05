/** The `/probe` query string, validated at the door. Pure: tested without a server. */
import { BadRequestError } from './errors.js';
import type { IpVersion } from './resolve.js';

export interface ProbeQuery {
  targets: string[];
  ipVersion: IpVersion;
  /** TCP ports to SYN-probe; empty for ICMP. */
  tcpPorts: number[];
}

const KNOWN = new Set(['target', 'ip_version', 'tcp_port']);

export function parseProbeQuery(params: URLSearchParams): ProbeQuery {
  for (const key of new Set(params.keys())) {
    if (!KNOWN.has(key)) {
      throw new BadRequestError(`unknown parameter ${JSON.stringify(key)} (expected target, ip_version, tcp_port)`);
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
  const tcpPorts = new Set<number>();
  for (const raw of params.getAll('tcp_port')) {
    const port = Number(raw);
    if (!/^\d+$/.test(raw) || port < 1 || port > 65535) {
      throw new BadRequestError(`invalid tcp_port=${JSON.stringify(raw)} (expected an integer between 1 and 65535)`);
    }
    tcpPorts.add(port);
  }
  return { targets: [...new Set(targets)], ipVersion, tcpPorts: [...tcpPorts] };
}
