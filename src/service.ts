/**
 * The systemd unit shipped with the package, completed for this install: ExecStart runs this
 * Node binary on this package's CLI, so it works wherever npm put the global install.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlagError } from './errors.js';
import { parseFlags } from './flags.js';

export const UNIT_NAME = 'icmp-exporter.service';
const TEMPLATE = fileURLToPath(new URL(`../${UNIT_NAME}`, import.meta.url));
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
/** What the unit runs with when no flags are given. */
export const DEFAULT_SERVICE_FLAGS = ['-listen', '127.0.0.1:9116'];

/** systemd's quoting: double quotes around words with spaces, quotes or backslashes. */
function quote(word: string): string {
  return /[\s"'\\]/.test(word) ? `"${word.replace(/(["\\])/g, '\\$1')}"` : word;
}

/** The unit text; `flags` are exporter flags, validated here so a bad one fails now, not at boot. */
export function unitFile(flags: readonly string[] = DEFAULT_SERVICE_FLAGS): string {
  parseFlags(flags);
  const execStart = [process.execPath, CLI, ...flags].map(quote).join(' ');
  const template = readFileSync(TEMPLATE, 'utf8');
  if (!/^ExecStart=.*$/m.test(template)) throw new FlagError(`${TEMPLATE} has no ExecStart line`);
  return template.replace(/^ExecStart=.*$/m, `ExecStart=${execStart}`);
}

/** Writes the unit into `unitDir`; returns its path. */
export function installUnit(unitDir: string, flags: readonly string[] = DEFAULT_SERVICE_FLAGS): string {
  const text = unitFile(flags);
  mkdirSync(unitDir, { recursive: true });
  const path = join(unitDir, UNIT_NAME);
  writeFileSync(path, text, { mode: 0o644 });
  return path;
}
