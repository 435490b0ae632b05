/** The HTTP exporter around a prober: the metrics registry and the server. */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { DEFAULTS, type ExporterOptions } from './flags.js';
import { createMetricsRegistry } from './metrics.js';
import { Prober } from './prober.js';
import { listen } from './server.js';

export interface Exporter {
  /** Where the server listens, e.g. `http://127.0.0.1:9116`. */
  url: string;
  identifier: number;
  /** What did not work at start without preventing it (e.g. IPv6 unavailable). */
  warnings: string[];
  /** How ICMP probes are sent: raw sockets, or unprivileged datagram sockets. */
  icmpMode: 'raw' | 'datagram';
  /** How transmit stamps are tied to probes: SCM_TS_OPT_ID (Linux >= 6.13) or the packet's copy. */
  stampMatching: 'opt_id' | 'packet';
  /** The prober behind it, for programmatic use next to HTTP. */
  prober: Prober;
  close(): Promise<void>;
}

function urlOf(server: Server): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `http://${host}:${a.port}`;
}

/** Starts an exporter with the same options as the command line (all optional). */
export async function startExporter(partial: Partial<ExporterOptions> = {}): Promise<Exporter> {
  const options: ExporterOptions = { ...DEFAULTS, ...partial };
  const prober = Prober.start(options);
  const { engine, targets, resolver } = prober;
  const { registry, http } = createMetricsRegistry({
    icmpMode: engine.icmpMode(),
    stampMatching: engine.stampMatching(),
    counters: (protocol) => engine.counters(protocol),
    activeProbes: (protocol) => targets.count(protocol === 'tcp'),
    engineUp: () => engine.failure() === null,
  });
  let server: Server;
  try {
    server = await listen({ targets, resolver, engine, metrics: registry }, options.host, options.port, http);
  } catch (e) {
    await prober.stop();
    throw e;
  }
  return {
    url: urlOf(server),
    identifier: prober.identifier,
    warnings: engine.warnings(),
    icmpMode: engine.icmpMode(),
    stampMatching: engine.stampMatching(),
    prober,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await prober.stop();
    },
  };
}
