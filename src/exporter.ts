/** The HTTP exporter around a prober: the metrics registry and the server. */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { TargetAllowList } from './allow.js';
import { buildInfo } from './build-info.js';
import { DEFAULTS, type ExporterOptions } from './flags.js';
import { createMetricsRegistry } from './metrics.js';
import { Prober } from './prober.js';
import type { Logger } from './log.js';
import { listen } from './server.js';
import { loadWebConfig } from './web-config.js';
import { tlsOptions, WebGate } from './web-gate.js';

export interface Exporter {
  /** Where the server listens, e.g. `http://127.0.0.1:9116` (`https://` with TLS). */
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
  /**
   * `listener(reason)` is called once if the engine thread fails (a bug); the exporter then
   * answers `/probe` and `/-/ready` with 503. The command exits non-zero on it, so that its
   * supervisor restarts it.
   */
  onEngineFailure(listener: (reason: string) => void): void;
  close(): Promise<void>;
}

function urlOf(server: Server, tls: boolean): string {
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return `${tls ? 'https' : 'http'}://${host}:${a.port}`;
}

/** How long `close` lets requests being answered finish before it cuts their connections. */
const CLOSE_GRACE_MS = 5_000;

/**
 * Starts an exporter with the same options as the command line (all optional); `log` gets
 * one line per refused request (403, 429) and nothing else (the command logs the rest).
 */
export async function startExporter(partial: Partial<ExporterOptions> & { log?: Logger } = {}): Promise<Exporter> {
  const { log, ...given } = partial;
  const options: ExporterOptions = { ...DEFAULTS, ...given };
  // Read before anything starts: a bad file is a start-up error naming the key.
  const webConfig = options.webConfigFile === undefined ? undefined : loadWebConfig(options.webConfigFile);
  const prober = Prober.start(options);
  const { engine, targets, resolver } = prober;
  const { registry, http, stop: stopMetrics } = createMetricsRegistry({
    build: await buildInfo(),
    icmpMode: engine.icmpMode(),
    stampMatching: engine.stampMatching(),
    counters: (protocol) => engine.counters(protocol),
    activeProbes: (protocol) => targets.count(protocol === 'tcp'),
    engineUp: () => engine.failure() === null,
  });
  let server: Server;
  try {
    const allow = new TargetAllowList(options.targetAllow);
    const deps = { targets, resolver, engine, metrics: registry, ...(allow.restricts ? { allow } : {}), ...(log ? { log } : {}) };
    let reloadTls: (tls: import('./web-config.js').TlsSettings) => void = () => undefined;
    const gate =
      options.webConfigFile === undefined || webConfig === undefined
        ? undefined
        : new WebGate(options.webConfigFile, webConfig, log, (tls) => reloadTls(tls));
    server = await listen(deps, options.host, options.port, http, gate);
    const tlsServer = server as import('node:https').Server;
    reloadTls = (tls) => tlsServer.setSecureContext(tlsOptions(tls));
  } catch (e) {
    stopMetrics();
    await prober.stop();
    throw e;
  }
  return {
    url: urlOf(server, webConfig?.tls !== undefined),
    identifier: prober.identifier,
    warnings: engine.warnings(),
    icmpMode: engine.icmpMode(),
    stampMatching: engine.stampMatching(),
    prober,
    onEngineFailure: (listener) => prober.onFailure(listener),
    async close() {
      // No new connection; requests being answered finish (up to CLOSE_GRACE_MS), each
      // connection closes once idle; then the engine stops (and puts NIC settings back).
      await new Promise<void>((resolve) => {
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearInterval(idle);
          clearTimeout(cut);
          resolve();
        });
        server.closeIdleConnections();
      });
      stopMetrics();
      await prober.stop();
    },
  };
}
