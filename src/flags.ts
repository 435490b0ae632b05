/**
 * Command-line flags: the reference spelling (`-listen :9116`, Go style) and `--listen`
 * both work. Parsing is pure so every rule is tested without starting anything.
 */
import { parseArgs, type ArgsDef } from 'citty';
import { FlagError } from './errors.js';

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
  drop: {
    type: 'boolean',
    description: 'Drop capabilities after starting: once every socket is open, switch to user nobody (when started as root).',
  },
} satisfies ArgsDef;

const LOCKED = ['interval', 'maxpps', 'identifier'];

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
  return argv.map((arg) => (/^-[a-z][a-z0-9-]+(=.*)?$/i.test(arg) ? `-${arg}` : arg));
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

/** Parses and validates a command line (without node and script). Throws FlagError. */
export function parseFlags(argv: readonly string[]): ExporterOptions {
  // citty is lenient (unknown flags become booleans, stray words positionals): be strict here.
  const values = parseArgs(booleanValues(normalizeArgv(argv)), FLAGS) as Record<string, unknown> & { _: string[] };
  const camel = (name: string) => name.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
  const known = new Set(Object.keys(FLAGS).flatMap((name) => [name, camel(name)]));
  const unknown = Object.keys(values).filter((key) => key !== '_' && !known.has(key));
  if (unknown.length > 0) {
    throw new FlagError(`unknown flag ${unknown.map((k) => `-${k}`).join(', ')} (see --help)`);
  }
  if (values._.length > 0) {
    throw new FlagError(`unexpected argument ${JSON.stringify(values._[0])} (see --help)`);
  }
  for (const [name, def] of Object.entries(FLAGS)) {
    const v = values[name];
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
  return options;
}
