/**
 * The Rust engine, loaded through the napi-rs generated loader at the package root, which
 * picks this platform's prebuilt package (icmp-exporter-linux-x64-gnu, ...). On a platform
 * with no prebuilt engine the error says which ones exist.
 */
import { createRequire } from 'node:module';
import type * as Native from '../native.cjs';

export type { EngineCounters, EngineOptions } from '../native.cjs';
export type { TargetStats } from './snapshot.js';

/** Where prebuilt engines exist: Linux on x86_64 and aarch64, with glibc or musl. */
export const SUPPORTED_PLATFORMS = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl'];

function load(): typeof Native {
  const here = `${process.platform}-${process.arch}`;
  const supported = `icmp-exporter runs on ${SUPPORTED_PLATFORMS.join(', ')}`;
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
    throw new Error(`${supported}; this is ${here}, for which there is no prebuilt engine (raw sockets and kernel timestamps are Linux-only)`);
  }
  try {
    return createRequire(import.meta.url)('../native.cjs') as typeof Native;
  } catch (e) {
    const cause = e instanceof Error ? e.message : String(e);
    throw new Error(
      `${supported}; the engine for ${here} could not be loaded. Install the platform package ` +
        `(npm installs icmp-exporter-${here}-gnu or -musl with icmp-exporter unless optional dependencies are omitted). ` +
        `Cause: ${cause}`,
      { cause: e },
    );
  }
}

export const { Engine, SNAPSHOT_STRIDE, engineVersion, tcpProbePorts } = load();
export type Engine = Native.Engine;
