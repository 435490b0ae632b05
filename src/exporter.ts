/** Wires the engine, the target registry, the resolver, the metrics and the HTTP server. */
import { randomInt } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { DEFAULTS, type ExporterOptions } from './flags.js';
import { createMetricsRegistry } from './metrics.js';
import { Engine } from './native.js';
import { Resolver } from './resolve.js';
import { createApp, listen } from './server.js';
import { Targets } from './targets.js';

export interface Exporter {
  /** Where the server listens, e.g. `http://127.0.0.1:9116`. */
  url: string;
  identifier: number;
  /** What did not work at start without preventing it (e.g. IPv6 unavailable). */
  warnings: string[];
  close(): Promise<void>;
}

/** The ICMP identifier: the pid (as in the reference), random on request or when the pid is 1. */
export function chooseIdentifier(mode: 0 | 1, pid = process.pid): number {
  const fromPid = pid & 0xffff;
  return mode === 1 || pid === 1 ? randomInt(1, 0x10000) : fromPid;
}

function urlOf(server: Server): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `http://${host}:${a.port}`;
}

export async function startExporter(partial: Partial<ExporterOptions> = {}): Promise<Exporter> {
  const options: ExporterOptions = { ...DEFAULTS, ...partial };
  const identifier = chooseIdentifier(options.identifierMode);
  const engine = new Engine({
    intervalMs: options.intervalMs,
    timeoutMs: options.timeoutMs,
    maxPps: options.maxPps,
    identifier,
  });
  const targets = new Targets(engine, options.expiryMs);
  const resolver = new Resolver({ timeoutMs: 5000, cacheTtlMs: 60_000, maxEntries: 10_000 });
  const { registry, http } = createMetricsRegistry({
    counters: (protocol) => engine.counters(protocol),
    activeProbes: (protocol) => targets.count(protocol === 'tcp'),
    engineUp: () => engine.failure() === null,
  });
  let server: Server;
  try {
    server = await listen(createApp({ targets, resolver, engine, metrics: registry }), options.host, options.port, http);
  } catch (e) {
    await engine.stop();
    throw e;
  }
  targets.startSweeping();
  return {
    url: urlOf(server),
    identifier,
    warnings: engine.warnings(),
    async close() {
      targets.stopSweeping();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await engine.stop();
    },
  };
}
