/**
 * /metrics: the exporter's own health. Engine counters are read when scraped (never
 * mirrored packet by packet), plus prom-client's process and Node metrics and HTTP metrics.
 */
import { createRequire } from 'node:module';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BuildInfo } from './build-info.js';
import { registerEventLoopLag } from './event-loop-lag.js';
import type { EngineCounters } from './native.js';

export type Protocol = 'icmp' | 'tcp';

export interface MetricsSources {
  build: BuildInfo;
  /** How ICMP probes are sent: raw sockets, or unprivileged datagram sockets. */
  icmpMode: 'raw' | 'datagram';
  /** How transmit stamps are tied to probes. */
  stampMatching: 'opt_id' | 'packet';
  counters(protocol: Protocol): EngineCounters | undefined;
  activeProbes(protocol: Protocol): number;
  engineUp(): boolean;
}

export interface HttpObserver {
  begin(): void;
  end(path: string, method: string, status: number, seconds: number, bytes: number): void;
}

type Labels = Record<string, string>;

/** A counter whose value is read from the engine at scrape time. */
function engineCounter(
  registry: Registry,
  protocol: Protocol,
  name: string,
  help: string,
  read: (c: EngineCounters) => Array<[Labels, number]>,
  sources: MetricsSources,
  labelNames: string[] = [],
): void {
  new Counter({
    name: `${protocol}_${name}`,
    help,
    labelNames,
    registers: [registry],
    collect() {
      const c = sources.counters(protocol);
      if (!c) return;
      this.reset();
      for (const [labels, value] of read(c)) this.inc(labels, value);
    },
  });
}

/**
 * `sources` with its engine counters read once per scrape rather than once per metric: each
 * read is a call into the engine that builds all 27 counters, and 30 metrics read them.
 * prom-client collects every metric of a scrape in one synchronous pass; the reading is
 * dropped in the microtask after it, so the next scrape reads afresh.
 */
function readOncePerScrape(sources: MetricsSources): MetricsSources {
  let read: Map<Protocol, EngineCounters | undefined> | undefined;
  return {
    ...sources,
    counters(protocol) {
      if (!read) {
        read = new Map();
        queueMicrotask(() => (read = undefined));
      }
      if (!read.has(protocol)) read.set(protocol, sources.counters(protocol));
      return read.get(protocol);
    },
  };
}

/**
 * prom-client's default process and Node metrics but its event-loop lag (see
 * event-loop-lag.ts): `collectDefaultMetrics` cannot leave one out, and its lag monitor
 * would keep its own timer running. The same modules, by the names its index lists.
 */
const DEFAULT_COLLECTORS = [
  'processCpuTotal',
  'processStartTime',
  'osMemoryHeap',
  'processOpenFileDescriptors',
  'processMaxFileDescriptors',
  'processResources',
  'processHandles',
  'processRequests',
  'heapSizeAndUsed',
  'heapSpacesSizeAndUsed',
  'version',
  'gc',
] as const;

/**
 * Gauges prom-client names `_total`, which `promtool check metrics` refuses for anything but
 * a counter: the same numbers are `sum(nodejs_active_handles)` and so on.
 */
const MISNAMED_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

function registerDefaultMetrics(registry: Registry): () => void {
  const require = createRequire(import.meta.url);
  for (const name of DEFAULT_COLLECTORS) {
    const collector = require(`prom-client/lib/metrics/${name}.js`) as (registry: Registry, config: object) => void;
    collector(registry, {});
  }
  for (const name of MISNAMED_GAUGES) registry.removeSingleMetric(name);
  return registerEventLoopLag(registry);
}

export function createMetricsRegistry(allSources: MetricsSources): { registry: Registry; http: HttpObserver; stop: () => void } {
  const sources = readOncePerScrape(allSources);
  const registry = new Registry();
  const stop = registerDefaultMetrics(registry);
  const registers = [registry];

  new Gauge({
    name: 'icmp_exporter_build_info',
    help: 'A metric with a constant 1 labelled by the version and source revision of icmp-exporter, the Node.js it runs on and its engine',
    labelNames: ['version', 'revision', 'nodejs', 'engine'],
    registers,
  }).set({ ...sources.build }, 1);
  new Gauge({
    name: 'icmp_engine_up',
    help: '1 while the probing engine thread runs, 0 after it failed',
    registers,
    collect() {
      this.set(sources.engineUp() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'icmp_socket_mode_info',
    help: 'How ICMP probes are sent: raw sockets (CAP_NET_RAW) or unprivileged datagram sockets (net.ipv4.ping_group_range)',
    labelNames: ['mode'],
    registers,
  }).set({ mode: sources.icmpMode }, 1);
  new Gauge({
    name: 'icmp_tx_timestamp_matching_info',
    help: 'How kernel transmit timestamps are tied to their probes: opt_id (SCM_TS_OPT_ID, Linux >= 6.13) or packet (the copy of the packet each stamp comes with, every kernel)',
    labelNames: ['method'],
    registers,
  }).set({ method: sources.stampMatching }, 1);
  engineCounter(
    registry,
    'icmp',
    'engine_poll_errors_total',
    'Failed waits (ppoll) of the engine thread, retried: the engine never stops for one',
    (c) => [[{}, c.pollErrors]],
    sources,
  );
  for (const protocol of ['icmp', 'tcp'] as const) {
    const P = protocol.toUpperCase();
    const packets = protocol === 'icmp' ? 'ICMP echo requests' : 'TCP SYNs';
    const answers = protocol === 'icmp' ? 'ICMP echo replies carrying our identifier' : 'SYN-ACKs and RSTs to our probe ports';
    new Gauge({
      name: `${protocol}_active_probes`,
      help: `The number of active ${P} probes`,
      registers,
      collect() {
        this.set(sources.activeProbes(protocol));
      },
    });
    const one = (v: number): Array<[Labels, number]> => [[{}, v]];
    engineCounter(registry, protocol, 'packets_sent_total', `The total number of ${packets} sent`, (c) => one(c.packetsSent), sources);
    engineCounter(registry, protocol, 'packets_recv_total', `The total number of ${answers} received (matched or not)`, (c) => one(c.packetsReceived), sources);
    engineCounter(
      registry,
      protocol,
      'packets_error_total',
      `The total number of ${P} socket errors (failed sends and receives, probes not sent for lack of room in flight)`,
      (c) => one(c.sendErrors + c.receiveErrors + c.inflightFull),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'send_deferred_total',
      `${packets} this host had no room for (ENOBUFS, EAGAIN, ENOMEM): sent again a moment later, never counted as sent nor as lost`,
      (c) => one(c.sendDeferred),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'replies_ignored_total',
      'Answers that changed no target: foreign (no probe of ours), duplicate, or late (after the timeout)',
      (c) => [
        [{ reason: 'foreign' }, c.repliesForeign],
        [{ reason: 'duplicate' }, c.repliesDuplicate],
        [{ reason: 'late' }, c.repliesLate],
      ],
      sources,
      ['reason'],
    );
    engineCounter(
      registry,
      protocol,
      'late_replies_within_timeout_total',
      'Answers counted late (their probe had already ended as lost) although their RTT was within the timeout: probes the exporter lost, not the network. 0 unless the real-time clock was stepped back',
      (c) => one(c.lateWithinTimeout),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'error_messages_total',
      `ICMP errors (unreachable, time exceeded, ...) quoting our ${packets}; matched ones end their probe as lost`,
      (c) => [
        [{ matched: 'true' }, c.icmpErrors],
        [{ matched: 'false' }, c.icmpErrorsUnmatched],
      ],
      sources,
      ['matched'],
    );
    engineCounter(
      registry,
      protocol,
      'packets_malformed_total',
      'Received packets that passed the socket filter but did not parse (truncated, bad checksum)',
      (c) => one(c.packetsMalformed),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'timestamp_fallback_total',
      'Answered probes whose RTT came from the monotonic clock instead of kernel timestamps, by reason',
      (c) => [
        [{ reason: 'tx_missing' }, c.txTimestampMissing],
        [{ reason: 'rx_missing' }, c.rxTimestampMissing],
        [{ reason: 'inconsistent' }, c.timestampInconsistent],
      ],
      sources,
      ['reason'],
    );
    engineCounter(
      registry,
      protocol,
      'rtt_clock_total',
      'Answered probes by the clock their RTT came from: the NIC (hardware, with -hard), kernel software stamps, or the monotonic fallback',
      (c) => [
        [{ clock: 'hardware' }, c.rttHardware],
        [{ clock: 'software' }, c.rttSoftware],
        [{ clock: 'monotonic' }, c.rttMonotonic],
      ],
      sources,
      ['clock'],
    );
    engineCounter(
      registry,
      protocol,
      'send_schedule_delay_seconds_total',
      'Sum of how late probes left against their schedule (divide by packets_sent_total for the mean)',
      (c) => one(c.sendDelaySumNs / 1e9),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'send_schedule_late_total',
      'Probes that left more than `over` seconds late against their schedule (bursts and stalls of the engine)',
      (c) => [
        [{ over: '0.0001' }, c.sendDelayOver100Us],
        [{ over: '0.001' }, c.sendDelayOver1Ms],
        [{ over: '0.01' }, c.sendDelayOver10Ms],
      ],
      sources,
      ['over'],
    );
    new Gauge({
      name: `${protocol}_send_schedule_delay_max_seconds`,
      help: 'The latest any probe has left against its schedule since start',
      registers,
      collect() {
        const c = sources.counters(protocol);
        if (c) this.set(c.sendDelayMaxNs / 1e9);
      },
    });
    engineCounter(
      registry,
      protocol,
      'receive_queue_drops_total',
      `Packets the kernel dropped because the engine's ${P} receive socket buffer was full: answers the network delivered, whose probes then count as lost`,
      (c) => one(c.receiveQueueDrops),
      sources,
    );
    engineCounter(
      registry,
      protocol,
      'tx_timestamps_unmatched_total',
      'Kernel transmit timestamps that matched no probe in flight',
      (c) => one(c.txTimestampsUnmatched),
      sources,
    );
  }

  const labelNames = ['path', 'method', 'status'];
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'The latency of the HTTP requests.',
    labelNames,
    registers,
  });
  const size = new Histogram({
    name: 'http_response_size_bytes',
    help: 'The size of the HTTP responses.',
    labelNames,
    buckets: [100, 1000, 10000, 100000, 1000000, 10000000],
    registers,
  });
  const inflight = new Gauge({
    name: 'http_requests_inflight',
    help: 'The number of inflight requests being handled at the same time.',
    registers,
  });
  const http: HttpObserver = {
    begin: () => inflight.inc(),
    end(path, method, status, seconds, bytes) {
      inflight.dec();
      const labels = { path, method, status: String(status) };
      duration.observe(labels, seconds);
      size.observe(labels, bytes);
    },
  };
  return { registry, http, stop };
}
