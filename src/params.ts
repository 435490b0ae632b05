/** The `/probe` query string, validated at the door. Pure: tested without a server. */
import { BadRequestError } from './errors.js';
import { canonicalSource, MAX_SIZE, MIN_SIZE, type ProbeOptions } from './probe-options.js';
import type { IpVersion } from './resolve.js';

export interface ProbeQuery {
  targets: string[];
  ipVersion: IpVersion;
  /** TCP ports to SYN-probe; empty for ICMP. */
  tcpPorts: number[];
  /** How the probes differ from the default ones; absent for default probes. */
  options?: ProbeOptions;
}

const OPTIONS = ['size', 'ttl', 'tos', 'df', 'source'];
const KNOWN = new Set(['target', 'ip_version', 'tcp_port', ...OPTIONS]);

function once(params: URLSearchParams, name: string): string | undefined {
  const all = params.getAll(name);
  if (all.length > 1) throw new BadRequestError(`${name} may be given once`);
  return all[0];
}

/** A decimal integer in [min, max] (or `0x` hexadecimal, for the TOS byte). */
function integerParam(name: string, raw: string, min: number, max: number, hex = false): number {
  const ok = /^\d{1,5}$/.test(raw) || (hex && /^0x[0-9a-f]{1,2}$/i.test(raw));
  const n = Number(raw);
  if (!ok || n < min || n > max) {
    throw new BadRequestError(`invalid ${name}=${JSON.stringify(raw)} (expected an integer between ${min} and ${max}${hex ? ', decimal or 0x hexadecimal' : ''})`);
  }
  return n;
}

/** `size`, `ttl`, `tos`, `df`, `source`: syntax and ranges (whether `source` is this host's is the server's check). */
function parseOptions(params: URLSearchParams, tcp: boolean): ProbeOptions | undefined {
  const options: ProbeOptions = {};
  const size = once(params, 'size');
  if (size !== undefined) {
    if (tcp) throw new BadRequestError('size applies to ICMP probes only (a TCP SYN carries no payload)');
    options.size = integerParam('size', size, MIN_SIZE, MAX_SIZE);
  }
  const ttl = once(params, 'ttl');
  if (ttl !== undefined) options.ttl = integerParam('ttl', ttl, 1, 255);
  const tos = once(params, 'tos');
  if (tos !== undefined) options.tos = integerParam('tos', tos, 0, 255, true);
  const df = once(params, 'df');
  if (df !== undefined) {
    if (df !== '0' && df !== '1') throw new BadRequestError(`invalid df=${JSON.stringify(df)} (expected 0 or 1)`);
    options.df = df === '1';
  }
  const source = once(params, 'source');
  if (source !== undefined) options.source = canonicalSource(source);
  return Object.keys(options).length > 0 ? options : undefined;
}

export function parseProbeQuery(params: URLSearchParams): ProbeQuery {
  for (const key of new Set(params.keys())) {
    if (!KNOWN.has(key)) {
      throw new BadRequestError(`unknown parameter ${JSON.stringify(key)} (expected target, ip_version, tcp_port, ${OPTIONS.join(', ')})`);
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
  const options = parseOptions(params, tcpPorts.size > 0);
  return { targets: [...new Set(targets)], ipVersion, tcpPorts: [...tcpPorts], ...(options ? { options } : {}) };
}
