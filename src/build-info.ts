/**
 * What this build is: `--version` prints it, `icmp_exporter_build_info` exports it. The
 * revision is written next to the compiled code at build time (scripts/build-info.mjs); the
 * engine's version comes from the native module, so a platform package of another version
 * shows.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

export interface BuildInfo {
  version: string;
  /** The git commit the build came from, "-dirty" with local changes, or "unknown". */
  revision: string;
  /** Node's version, as `process.version`. */
  nodejs: string;
  /** The native engine's version, or why it could not be loaded. */
  engine: string;
}

function revision(): string {
  try {
    const info = JSON.parse(readFileSync(new URL('./build-info.json', import.meta.url), 'utf8')) as { revision?: unknown };
    return typeof info.revision === 'string' && info.revision !== '' ? info.revision : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The native engine's version; loading it is what can fail, and --version must still answer. */
async function engineVersion(): Promise<string> {
  try {
    const native = await import('./native.js');
    return native.engineVersion();
  } catch (e) {
    return `unavailable (${(e as Error).message.split('\n')[0] ?? ''})`;
  }
}

export async function buildInfo(): Promise<BuildInfo> {
  const pkg = createRequire(import.meta.url)('../package.json') as { version: string };
  return { version: pkg.version, revision: revision(), nodejs: process.version, engine: await engineVersion() };
}

/** `--version`, laid out as Prometheus exporters print theirs. */
export function versionText(info: BuildInfo): string {
  return (
    `icmp-exporter, version ${info.version} (revision: ${info.revision})\n` +
    `  node version:     ${info.nodejs}\n` +
    `  engine:           ${info.engine}\n` +
    `  platform:         ${process.platform}/${process.arch}\n`
  );
}
