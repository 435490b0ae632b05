/**
 * The prober without HTTP: start the engine, add targets (IP addresses or hostnames, ICMP or
 * TCP SYN to a port), read their statistics, stop. The exporter is built on it.
 */
import { randomInt } from 'node:crypto';
import { defaultBuckets } from './buckets.js';
import { DEFAULTS } from './flags.js';
import { Engine, type EngineCounters, type TargetStats } from './native.js';
import { snapshotFlat, statsAt } from './snapshot.js';
import { checkSourceScope, normalizeOptions, sourceIpVersion, type ProbeOptions } from './probe-options.js';
import { Resolver, type IpVersion } from './resolve.js';
import { Targets, type Target } from './targets.js';

export interface ProberOptions {
  /** Milliseconds between two probes of one target (at least 10). */
  intervalMs: number;
  /** Milliseconds after which an unanswered probe counts as lost (10..40000). */
  timeoutMs: number;
  /** Probes per second, all targets together. */
  maxPps: number;
  /** ICMP identifier: 0 = the process id, 1 = random. */
  identifierMode: 0 | 1;
  /** Stop probing a target this long after it was last added; undefined = never. */
  expiryMs?: number | undefined;
  /** Most targets probed at once, all protocols; `add` past it throws LimitError. Default: no limit. */
  maxTargets?: number | undefined;
  /** Interface of IPv4 / IPv6 probes: a name, "auto" (the default route's, followed), or undefined (not bound). */
  interface4?: string | undefined;
  interface6?: string | undefined;
  /** NIC hardware timestamps (needs CAP_NET_ADMIN and a NIC that stamps every packet). */
  hard?: boolean | undefined;
  /** Classic RTT histogram bounds, in seconds; undefined = `defaultBuckets(timeoutMs)`, [] = none. */
  buckets?: readonly number[] | undefined;
  /** Keep each target's native histogram (default true). */
  nativeHistograms?: boolean | undefined;
}

/** One probe: an address with ICMP echo, or with TCP SYN to `port`, and how its packets differ from the default. */
export interface ProbeTarget {
  address: string;
  protocol: 'icmp' | 'tcp';
  /** 0 for ICMP. */
  port: number;
  options?: ProbeOptions;
}

/** A target and its statistics; the histogram as plain arrays (copies of the engine's answer). */
export interface ProbeStats extends ProbeTarget, Omit<TargetStats, 'buckets' | 'native'> {
  /** Cumulative classic bucket counts at `Prober.histogramBounds()`. */
  buckets: number[];
  /** The native histogram: bucket `index` holds (2^((index-1)/2^schema), 2^(index/2^schema)] seconds. */
  native?: { schema: number; zeroCount: number; buckets: Array<[index: number, count: number]> };
}

/** The ICMP identifier: the pid (as in the reference), random on request or when the pid is 1. */
export function chooseIdentifier(mode: 0 | 1, pid = process.pid): number {
  return mode === 1 || pid === 1 ? randomInt(1, 0x10000) : pid & 0xffff;
}

const describe = (t: Target): ProbeTarget => ({
  address: t.address,
  port: t.port,
  protocol: t.port === 0 ? 'icmp' : 'tcp',
  ...(t.options ? { options: t.options } : {}),
});

export class Prober {
  readonly identifier: number;
  readonly engine: Engine;
  readonly targets: Targets;
  readonly resolver: Resolver;

  private constructor(options: ProberOptions) {
    this.identifier = chooseIdentifier(options.identifierMode);
    this.engine = new Engine({
      intervalMs: options.intervalMs,
      timeoutMs: options.timeoutMs,
      maxPps: options.maxPps,
      identifier: this.identifier,
      hard: options.hard ?? false,
      bucketsSeconds: [...(options.buckets ?? defaultBuckets(options.timeoutMs))],
      nativeHistograms: options.nativeHistograms ?? true,
      ...(options.interface4 === undefined ? {} : { interface4: options.interface4 }),
      ...(options.interface6 === undefined ? {} : { interface6: options.interface6 }),
    });
    this.targets = new Targets(this.engine, options.expiryMs ?? Number.POSITIVE_INFINITY, Date.now, options.maxTargets);
    if (options.expiryMs !== undefined) this.targets.startSweeping();
    this.resolver = new Resolver({ timeoutMs: 5000, cacheTtlMs: 60_000, maxEntries: 10_000 });
  }

  /** Opens the raw sockets (needs CAP_NET_RAW) and starts the engine thread. */
  static start(options: Partial<ProberOptions> = {}): Prober {
    const { intervalMs, timeoutMs, maxPps, identifierMode } = DEFAULTS;
    return new Prober({ intervalMs, timeoutMs, maxPps, identifierMode, ...options });
  }

  /**
   * Starts probing every address of `target` (an IP address or a hostname), with ICMP echo or,
   * given `tcpPort`, with TCP SYN. Adding a target again keeps its history. Throws
   * BadRequestError for a name that does not resolve or an address that cannot be probed.
   */
  async add(target: string, options: { tcpPort?: number; ipVersion?: IpVersion; probe?: ProbeOptions } = {}): Promise<ProbeTarget[]> {
    const port = options.tcpPort ?? 0;
    // Checked and made canonical as the HTTP door does: equal options are one probe.
    const probe = normalizeOptions(options.probe, port !== 0);
    const ipVersion = options.ipVersion ?? 'all';
    const addresses = await this.resolver.resolve(target, sourceIpVersion(probe?.source, ipVersion, `ipVersion ${ipVersion}`));
    checkSourceScope(probe?.source, addresses.map((a) => a.address));
    return this.targets.acquire(addresses.map(({ address }) => ({ address, port, options: probe }))).map(describe);
  }

  /** Stops probing these targets. */
  remove(targets: readonly ProbeTarget[]): void {
    this.targets.release(targets);
  }

  /** Statistics of these targets (all by default), counters since each was first added. */
  async stats(targets?: readonly ProbeTarget[]): Promise<ProbeStats[]> {
    const chosen = targets ? this.targets.find(targets) : this.targets.all();
    const snapshot = await snapshotFlat(this.engine, chosen.map((t) => t.id));
    return chosen.flatMap((t, i) => {
      const s = statsAt(snapshot, i);
      if (!s) return [];
      // Plain arrays: the views would keep the whole snapshot alive and serialise as objects.
      const { buckets, native, ...rest } = s;
      const pairs: Array<[number, number]> = [];
      for (let k = 0; native && k + 1 < native.buckets.length; k += 2) pairs.push([native.buckets[k] as number, native.buckets[k + 1] as number]);
      const stats: ProbeStats = { ...describe(t), ...rest, buckets: Array.from(buckets) };
      if (native) stats.native = { schema: native.schema, zeroCount: native.zeroCount, buckets: pairs };
      return [stats];
    });
  }

  /**
   * `listener(reason)` is called once, on the event loop, if the engine thread fails (a bug:
   * it panicked or could not go on); at once if it already has. Replaces an earlier listener.
   */
  onFailure(listener: (reason: string) => void): void {
    this.engine.onFailure(listener);
  }

  /** Upper bounds of the classic RTT histogram buckets, in seconds (what `ProbeStats.buckets` counts up to). */
  histogramBounds(): number[] {
    return Array.from(this.engine.histogramBounds());
  }

  /** Engine-wide counters of one protocol. */
  counters(protocol: 'icmp' | 'tcp'): EngineCounters {
    return this.engine.counters(protocol);
  }

  /** Stops the engine thread and closes its sockets. */
  async stop(): Promise<void> {
    this.targets.stopSweeping();
    await this.engine.stop();
  }
}
