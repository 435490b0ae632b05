/**
 * Command-line flags: the reference spelling (`-listen :9116`, Go style) and `--listen`
 * both work. Parsing is pure so every rule is tested without starting anything.
 */
import { parseArgs, type ArgsDef } from 'citty';
import { TargetAllowList } from './allow.js';
import { parseBuckets } from './buckets.js';
import { FlagError } from './errors.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './log.js';

export interface ExporterOptions {
  /** Host to listen on; undefined = every address. */
  host: string | undefined;
  port: number;
  intervalMs: number;
  timeoutMs: number;
  maxPps: number;
  /** 0 = process id, 1 = random (as in the reference). */
  identifierMode: 0 | 1;
  /** How long a target keeps being probed after its last /probe request. */
  expiryMs: number;
  /** Drop privileges once every socket is open. */
  drop: boolean;
  /** NIC hardware timestamps. */
  hard: boolean;
  /** Interface of IPv4 / IPv6 probes: a name, "auto" (the default route's), or undefined (not bound). */
  interface4: string | undefined;
  interface6: string | undefined;
  /** `-target-allow`: CIDRs and hostname globs a /probe target must be in; empty = any. */
  targetAllow: string[];
  /** `-max-targets`: targets probed at once, all protocols; Infinity = no limit. */
  maxTargets: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** `-web.config.file`: TLS, basic auth, headers, rate limit (exporter-toolkit format). */
  webConfigFile: string | undefined;
  /** `-buckets`: classic RTT histogram bounds in seconds; undefined = 10 µs to the timeout, 1-2-5. */
  buckets: number[] | undefined;
  /** `-native-histograms`: each target's native histogram, on the protobuf exposition. */
  nativeHistograms: boolean;
}

export const DEFAULTS: ExporterOptions = {
  host: undefined,
  port: 9116,
  intervalMs: 2000,
  timeoutMs: 3000,
  maxPps: 10000,
  identifierMode: 0,
  expiryMs: 10 * 60 * 1000,
  drop: false,
  hard: false,
  interface4: undefined,
  interface6: undefined,
  targetAllow: [],
  maxTargets: Number.POSITIVE_INFINITY,
  logLevel: 'info',
  logFormat: 'logfmt',
  webConfigFile: undefined,
  buckets: undefined,
  nativeHistograms: true,
};

/** Every flag (citty argument definitions), in the order `--help` lists them. */
export const FLAGS = {
  listen: { type: 'string', valueHint: 'addr', description: 'Ip and port to listen on. (default ":9116")' },
  interval: {
    type: 'string',
    valueHint: 'ms',
    description: 'Interval between two probes of a target, in milliseconds. Minimum 10. Must be unlocked. (default 2000)',
  },
  timeout: {
    type: 'string',
    valueHint: 'ms',
    description: 'Time after which an unanswered probe counts as lost, in milliseconds (10..40000). (default 3000)',
  },
  maxpps: {
    type: 'string',
    valueHint: 'n',
    description: 'Maximum packets per second, all targets together. Minimum 1. Must be unlocked. (default 10000)',
  },
  identifier: {
    type: 'string',
    valueHint: '0|1',
    description: 'ICMP identifier: 0 - process pid (default), 1 - random. Must be unlocked.',
  },
  'i-wont-be-evil': { type: 'boolean', description: 'Unlocks -interval, -maxpps and -identifier.' },
  expiry: {
    type: 'string',
    valueHint: 'ms',
    description: 'Stop probing a target this long after its last /probe request, in milliseconds. (default 600000)',
  },
  hard: {
    type: 'boolean',
    description: 'Use NIC hardware timestamping (binds to the default route\'s interface unless one is named).',
  },
  interface4: {
    type: 'string',
    valueHint: 'name',
    description:
      'IPv4 interface to bind to. If "auto" then the interface of the default route, followed as it changes. (default: not bound, the routing table decides)',
  },
  interface6: {
    type: 'string',
    valueHint: 'name',
    description:
      'IPv6 interface to bind to. If "auto" then the interface of the default route, followed as it changes. (default: not bound, the routing table decides)',
  },
  'target-allow': {
    type: 'string',
    valueHint: 'cidr|glob',
    description:
      'Allow only these /probe targets; repeatable. A CIDR (198.51.100.0/24, 2001:db8::/32): every address, given or resolved, must lie in one. A hostname glob (*.example.net): every hostname must match one. Others: 403. (default: any)',
  },
  'max-targets': {
    type: 'string',
    valueHint: 'n',
    description: 'Most targets probed at once, all protocols; a /probe that would add more is refused with 429 and starts nothing. (default: no limit)',
  },
  buckets: {
    type: 'string',
    valueHint: 'seconds,...',
    description:
      'Upper bounds of the RTT histogram buckets, in seconds, increasing and comma-separated; "none" for no classic buckets. (default 10 µs to the timeout: 0.00001,0.00002,0.00005,0.0001,... )',
  },
  'native-histograms': {
    type: 'boolean',
    description: 'Expose each target\'s RTT as a native histogram too, to scrapers asking for the protobuf format (Prometheus with native histograms on). -native-histograms=false to save its memory. (default true)',
  },
  drop: {
    type: 'boolean',
    description: 'Drop capabilities after starting: once every socket is open, switch to user nobody (when started as root).',
  },
  'web.config.file': {
    type: 'string',
    valueHint: 'path',
    description: 'Path to a web configuration file (exporter-toolkit format) enabling TLS, basic authentication, response headers and a rate limit.',
  },
  'log.level': {
    type: 'string',
    valueHint: 'level',
    description: 'Only log messages with the given severity or above: debug, info, warn, error. (default "info")',
  },
  'log.format': {
    type: 'string',
    valueHint: 'format',
    description: 'Output format of log messages: logfmt, json. (default "logfmt")',
  },
  // Answered before any flag is parsed (cli.ts): here so that --help lists it.
  version: { type: 'boolean', description: 'Print the version, source revision, Node and engine versions, and exit.' },
} satisfies ArgsDef;

const LOCKED = ['interval', 'maxpps', 'identifier'];
/** Flags that may be given more than once. */
const REPEATABLE = new Set(['target-allow']);

/**
 * The engine's in-flight table, and how long past its timeout a probe can stay in it (the
 * 5 ms grace for the transmit path, a turn of up to 10 ms before its expiry is noticed, and a
 * turn's worth of pacer catch-up): the same figures as `lifecycle::peak_in_flight` in
 * crates/netprobe, which refuses them too.
 */
const IN_FLIGHT_SLOTS = 1_048_576;
const IN_FLIGHT_EXTRA_MS = 25;

/** The most probes `maxPps` and `timeoutMs` can put in flight at once. */
export function peakInFlight(maxPps: number, timeoutMs: number): number {
  return Math.ceil((maxPps * (timeoutMs + IN_FLIGHT_EXTRA_MS)) / 1000) + 1;
}

/**
 * Rewrites Go-style `-name` / `-name=value` into `--name`: like Go's flag package, a single
 * dash may start a long name (only one-letter options stay short).
 */
export function normalizeArgv(argv: readonly string[]): string[] {
  return argv.map((arg) => (/^-[a-z][a-z0-9.-]+(=.*)?$/i.test(arg) ? `-${arg}` : arg));
}

function integer(flag: string, raw: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(raw.trim())) {
    throw new FlagError(`-${flag} must be an integer, got ${JSON.stringify(raw)}`);
  }
  const n = Number(raw);
  if (n < min || n > max) {
    throw new FlagError(`-${flag} must be between ${min} and ${max}, got ${n}`);
  }
  return n;
}

/** `:9116`, `127.0.0.1:9116`, `[::1]:9116`, `0.0.0.0:0`. */
export function parseListen(raw: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(raw);
  if (!m || m[3] === undefined) {
    throw new FlagError(`-listen must look like ":9116", "127.0.0.1:9116" or "[::1]:9116", got ${JSON.stringify(raw)}`);
  }
  const port = Number(m[3]);
  if (port > 65535) {
    throw new FlagError(`-listen port must be between 0 and 65535, got ${port}`);
  }
  const host = m[1] ?? (m[2] === '' ? undefined : m[2]);
  return { host, port };
}

const GO_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const GO_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** `--flag=value` for a boolean flag, read as Go's flag package does (citty takes any value as true). */
function booleanValues(argv: readonly string[]): string[] {
  return argv.map((arg) => {
    const m = /^--([a-z0-9-]+)=(.*)$/.exec(arg);
    const def = m?.[1] !== undefined ? (FLAGS as Record<string, { type: string }>)[m[1]] : undefined;
    if (!m || def?.type !== 'boolean') return arg;
    if (GO_TRUE.has(m[2] ?? '')) return `--${m[1]}`;
    if (GO_FALSE.has(m[2] ?? '')) return `--no-${m[1]}`;
    throw new FlagError(`-${m[1]} takes true or false, got ${JSON.stringify(m[2])}`);
  });
}

/**
 * Each known flag's values in the order given (`--name value`, `--name=value`; a boolean
 * flag's occurrences as ''), from a normalized command line: what citty's last-wins parse
 * loses for repeatable flags and for flags given twice.
 */
function repeatedValues(normalized: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const defs = FLAGS as Record<string, { type: string }>;
  for (let i = 0; i < normalized.length; i++) {
    const m = /^--(?:no-)?([a-z0-9.-]+)(?:=(.*))?$/s.exec(normalized[i] ?? '');
    const name = m?.[1];
    if (!m || name === undefined || !defs[name]) continue;
    let value = m[2];
    if (value === undefined && defs[name].type === 'string') {
      const next = normalized[i + 1];
      value = next !== undefined && !next.startsWith('--') ? next : '';
      if (next !== undefined && !next.startsWith('--')) i++;
    }
    out.set(name, [...(out.get(name) ?? []), value ?? '']);
  }
  return out;
}

/** Parses and validates a command line (without node and script). Throws FlagError. */
export function parseFlags(argv: readonly string[]): ExporterOptions {
  // citty is lenient (unknown flags become booleans, stray words positionals, a repeated
  // flag keeps its last value): be strict here.
  const normalized = booleanValues(normalizeArgv(argv));
  const values = parseArgs(normalized, FLAGS) as Record<string, unknown> & { _: string[] };
  const given = repeatedValues(normalized);
  // citty also files each value under the name's camelCase and kebab-case aliases.
  const camel = (name: string) => name.replace(/[-.]([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
  const known = new Set(Object.keys(FLAGS).flatMap((name) => [name, camel(name), name.replace(/\./g, '-')]));
  const unknown = Object.keys(values).filter((key) => key !== '_' && !known.has(key));
  if (unknown.length > 0) {
    throw new FlagError(`unknown flag ${unknown.map((k) => `-${k}`).join(', ')} (see --help)`);
  }
  if (values._.length > 0) {
    throw new FlagError(`unexpected argument ${JSON.stringify(values._[0])} (see --help)`);
  }
  for (const [name, def] of Object.entries(FLAGS)) {
    const v = values[name];
    if ((given.get(name)?.length ?? 0) > 1 && !REPEATABLE.has(name)) {
      throw new FlagError(`-${name} may be given once`);
    }
    if (def.type === 'string' && v !== undefined && (typeof v !== 'string' || v === '')) {
      throw new FlagError(`-${name} needs a value`);
    }
    if (def.type === 'boolean' && v !== undefined && typeof v !== 'boolean') {
      throw new FlagError(`-${name} takes no value`);
    }
  }
  const unlocked = values['i-wont-be-evil'] === true;
  const locked = LOCKED.filter((name) => values[name] !== undefined);
  if (locked.length > 0 && !unlocked) {
    throw new FlagError(`${locked.map((n) => `-${n}`).join(', ')} must be unlocked with -i-wont-be-evil`);
  }
  const str = (name: string): string | undefined => {
    const v = values[name];
    return typeof v === 'string' ? v : undefined;
  };
  const options: ExporterOptions = { ...DEFAULTS };
  const listen = str('listen');
  if (listen !== undefined) {
    Object.assign(options, parseListen(listen));
  }
  const interval = str('interval');
  if (interval !== undefined) options.intervalMs = integer('interval', interval, 10, 3_600_000);
  const timeout = str('timeout');
  if (timeout !== undefined) options.timeoutMs = integer('timeout', timeout, 10, 40_000);
  const maxpps = str('maxpps');
  if (maxpps !== undefined) options.maxPps = integer('maxpps', maxpps, 1, 1_000_000);
  const identifier = str('identifier');
  if (identifier !== undefined) options.identifierMode = integer('identifier', identifier, 0, 1) as 0 | 1;
  const expiry = str('expiry');
  if (expiry !== undefined) options.expiryMs = integer('expiry', expiry, 100, 7 * 24 * 3_600_000);
  const peak = peakInFlight(options.maxPps, options.timeoutMs);
  if (peak > IN_FLIGHT_SLOTS) {
    throw new FlagError(
      `-maxpps ${options.maxPps} with -timeout ${options.timeoutMs} can put up to ${peak} probes in flight, ` +
        `more than the ${IN_FLIGHT_SLOTS} the engine holds: lower -maxpps or -timeout`,
    );
  }
  options.drop = values.drop === true;
  options.hard = values.hard === true;
  for (const name of ['interface4', 'interface6'] as const) {
    const v = str(name);
    if (v === undefined) continue;
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(v)) {
      throw new FlagError(`-${name} must be an interface name (at most 15 characters) or "auto", got ${JSON.stringify(v)}`);
    }
    options[name] = v;
  }
  options.targetAllow = given.get('target-allow') ?? [];
  if (options.targetAllow.some((v) => v === '')) throw new FlagError('-target-allow needs a value');
  new TargetAllowList(options.targetAllow); // throws FlagError on a bad entry
  options.webConfigFile = str('web.config.file');
  const level = str('log.level');
  if (level !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new FlagError(`-log.level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
    options.logLevel = level as LogLevel;
  }
  const format = str('log.format');
  if (format !== undefined) {
    if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new FlagError(`-log.format must be one of ${LOG_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
    options.logFormat = format as LogFormat;
  }
  const buckets = str('buckets');
  if (buckets !== undefined) options.buckets = parseBuckets(buckets);
  if (values['native-histograms'] === false) options.nativeHistograms = false;
  const maxTargets = str('max-targets');
  if (maxTargets !== undefined) options.maxTargets = integer('max-targets', maxTargets, 1, 100_000_000);
  return options;
}
