/**
 * The systemd unit shipped with the package, completed for this install: ExecStart runs this
 * Node binary on this package's CLI, so it works wherever npm put the global install.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlagError } from './errors.js';
import { parseFlags } from './flags.js';
import { loadWebConfig } from './web-config.js';

export const UNIT_NAME = 'icmp-exporter.service';
const TEMPLATE = fileURLToPath(new URL(`../${UNIT_NAME}`, import.meta.url));
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
/** What the unit runs with when no flags are given. */
export const DEFAULT_SERVICE_FLAGS = ['-listen', '127.0.0.1:9116'];

/** Refuses what no unit line can carry: a line break would start a line of its own. */
function noControl(word: string): string {
  if ([...word].some((c) => c < ' ' || c === '\u007f')) throw new FlagError(`${JSON.stringify(word)}: a control character cannot go into the unit`);
  return word;
}

/**
 * An ExecStart word: `%` (specifiers) and `$` (variables) doubled, so systemd passes them on
 * as they are, and double quotes around words with spaces, quotes or backslashes.
 */
function quote(word: string): string {
  const escaped = noControl(word).replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /[\s"'\\]/.test(escaped) ? `"${escaped.replace(/(["\\])/g, '\\$1')}"` : escaped;
}

/** A BindReadOnlyPaths= path: `%` doubled, `:` (which separates source and destination) escaped, spaces quoted. */
function bindPath(path: string): string {
  const escaped = noControl(path).replace(/%/g, '%%').replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  return /\s/.test(escaped) ? `"${escaped}"` : escaped;
}

/** `-web.config.file`'s value made absolute wherever it is on the line (the service starts in /). */
function absoluteFlags(flags: readonly string[]): string[] {
  const out = [...flags];
  for (let i = 0; i < out.length; i++) {
    const m = /^(--?web\.config\.file)(?:=(.*))?$/s.exec(out[i] ?? '');
    if (!m) continue;
    if (m[2] !== undefined) out[i] = `${m[1]}=${resolve(m[2])}`;
    else if (i + 1 < out.length) out[i + 1] = resolve(out[i + 1] ?? '');
  }
  return out;
}

/** Where ProtectHome= hides everything. */
const HOMES = ['/home', '/root', '/run/user'];

const under = (path: string, dir: string) => path === dir || path.startsWith(`${dir}${sep}`);

/**
 * The directories the service must read that lie under a home directory: Node's install
 * prefix (nvm, volta and fnm put it there), this package's root (with its node_modules and
 * engine), the web config file's directory. Nested ones are left out.
 */
export function homePaths(paths: readonly string[]): string[] {
  const wanted = paths.map((p) => resolve(p)).filter((p) => HOMES.some((h) => under(p, h)));
  const unique = [...new Set(wanted)].sort();
  return unique.filter((p) => !unique.some((q) => q !== p && under(p, q)));
}

/**
 * The unit text; `flags` are exporter flags, validated here so a bad one fails now, not at
 * boot. `execPath` and `cli` are what ExecStart runs (this Node and this package by default).
 */
export function unitFile(given: readonly string[] = DEFAULT_SERVICE_FLAGS, execPath = process.execPath, cli = CLI): string {
  const flags = absoluteFlags(given);
  const options = parseFlags(flags);
  // Checked now rather than at boot, and the files it names must be readable by the service.
  const web = options.webConfigFile === undefined ? undefined : loadWebConfig(options.webConfigFile);
  const execStart = [execPath, cli, ...flags].map(quote).join(' ');
  let unit = readFileSync(TEMPLATE, 'utf8');
  const replace = (line: RegExp, by: string) => {
    if (!line.test(unit)) throw new FlagError(`${TEMPLATE} has no line ${line.source}`);
    unit = unit.replace(line, () => by); // a function: `by` may hold `$`
  };
  replace(/^ExecStart=.*$/m, `ExecStart=${execStart}`);
  if (options.hard) {
    // -hard turns on the NIC's timestamping (SIOCSHWTSTAMP), and puts it back at stop.
    replace(/^AmbientCapabilities=.*$/m, 'AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN');
    replace(/^CapabilityBoundingSet=.*$/m, 'CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN');
  }
  // The package, with the dependencies and engine package npm put beside it when it was
  // installed into a node_modules (a project's, or a global one).
  const packageRoot = dirname(dirname(cli));
  const modules = dirname(packageRoot);
  const readable = homePaths([
    dirname(dirname(execPath)),
    modules.endsWith(`${sep}node_modules`) ? modules : packageRoot,
    ...(options.webConfigFile === undefined ? [] : [dirname(options.webConfigFile)]),
    ...Object.values(web?.tls?.files ?? {}).map((file) => dirname(file)),
  ]);
  if (readable.length > 0) {
    // An empty /home (and /root, /run/user) with only these directories in it, read-only.
    replace(/^ProtectHome=.*$/m, `ProtectHome=tmpfs\nBindReadOnlyPaths=${readable.map(bindPath).join(' ')}`);
  }
  return unit;
}

/** Writes the unit into `unitDir`; returns its path. */
export function installUnit(unitDir: string, flags: readonly string[] = DEFAULT_SERVICE_FLAGS): string {
  const text = unitFile(flags);
  mkdirSync(unitDir, { recursive: true });
  const path = join(unitDir, UNIT_NAME);
  writeFileSync(path, text, { mode: 0o644 });
  return path;
}
