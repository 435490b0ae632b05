/**
 * Which addresses are being probed and until when. The first /probe request for an address
 * starts its background probe in the engine; every request refreshes it; a probe nobody
 * asked for during `expiryMs` is stopped.
 */
import { BadRequestError, UnavailableError } from './errors.js';
import type { Engine } from './native.js';

/** What is probed: an address with ICMP echo (`port` 0) or with TCP SYN to `port`. */
export interface Probe {
  address: string;
  port: number;
}

export interface Target extends Probe {
  id: number;
  lastAccess: number;
}

type EngineHandle = Pick<Engine, 'track' | 'untrack'>;

function isInvalidArg(e: unknown): boolean {
  return (e as { code?: unknown }).code === 'InvalidArg';
}

export class Targets {
  private readonly byKey = new Map<string, Target>();
  private tcpCount = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly engine: EngineHandle,
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Targets being probed, ICMP (`tcp` false) or TCP; kept as they come and go, not counted per scrape. */
  count(tcp: boolean): number {
    return tcp ? this.tcpCount : this.byKey.size - this.tcpCount;
  }

  private add(key: string, target: Target): void {
    this.byKey.set(key, target);
    if (target.port !== 0) this.tcpCount += 1;
  }

  private remove(key: string, target: Target): void {
    if (this.byKey.delete(key) && target.port !== 0) this.tcpCount -= 1;
  }

  /**
   * Targets for these probes, starting the new ones. All or nothing: when one cannot be
   * probed, the probes this call started are stopped again.
   */
  acquire(probes: readonly Probe[]): Target[] {
    const started: Target[] = [];
    const out: Target[] = [];
    for (const { address, port } of probes) {
      const key = `${address}|${port}`;
      let target = this.byKey.get(key);
      if (!target) {
        try {
          const id = port === 0 ? this.engine.track(address, 'icmp') : this.engine.track(address, 'tcp', port);
          target = { address, port, id, lastAccess: 0 };
        } catch (e) {
          for (const t of started) {
            this.remove(`${t.address}|${t.port}`, t);
            this.engine.untrack(t.id);
          }
          const what = port === 0 ? address : `${address} port ${port}`;
          const message = `cannot probe ${what}: ${(e as Error).message}`;
          throw isInvalidArg(e) ? new BadRequestError(message) : new UnavailableError(message);
        }
        started.push(target);
        this.add(key, target);
      }
      out.push(target);
    }
    const now = this.now();
    for (const t of out) t.lastAccess = now;
    return out;
  }

  /** The targets of these probes that exist, in order. */
  find(probes: readonly Probe[]): Target[] {
    return probes.flatMap((p) => this.byKey.get(`${p.address}|${p.port}`) ?? []);
  }

  all(): Target[] {
    return [...this.byKey.values()];
  }

  /** Stops these probes now. */
  release(probes: readonly Probe[]): void {
    for (const t of this.find(probes)) {
      this.remove(`${t.address}|${t.port}`, t);
      this.engine.untrack(t.id);
    }
  }

  /** Stops the probes nobody asked for during the expiry time; returns how many. */
  sweep(): number {
    const cutoff = this.now() - this.expiryMs;
    let expired = 0;
    for (const [key, t] of this.byKey) {
      if (t.lastAccess <= cutoff) {
        this.remove(key, t);
        this.engine.untrack(t.id);
        expired += 1;
      }
    }
    return expired;
  }

  startSweeping(): void {
    const every = Math.max(50, Math.min(1000, Math.floor(this.expiryMs / 10)));
    this.sweeper = setInterval(() => {
      try {
        this.sweep();
      } catch {
        // The engine is gone; /probe reports that. Nothing to expire any more.
      }
    }, every);
    this.sweeper.unref();
  }

  stopSweeping(): void {
    clearInterval(this.sweeper);
  }
}
