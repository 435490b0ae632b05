/**
 * Which addresses are being probed and until when. The first /probe request for an address
 * starts its background probe in the engine; every request refreshes it; a probe nobody
 * asked for during `expiryMs` is stopped.
 */
import { BadRequestError, UnavailableError } from './errors.js';
import type { Engine } from './native.js';

export interface Target {
  address: string;
  id: number;
  lastAccess: number;
}

type EngineHandle = Pick<Engine, 'track' | 'untrack'>;

function isInvalidArg(e: unknown): boolean {
  return (e as { code?: unknown }).code === 'InvalidArg';
}

export class Targets {
  private readonly byAddress = new Map<string, Target>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly engine: EngineHandle,
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.byAddress.size;
  }

  /**
   * Targets for these addresses, starting probes for new ones. All or nothing: when one
   * address cannot be probed, the probes this call started are stopped again.
   */
  acquire(addresses: readonly string[]): Target[] {
    const started: Target[] = [];
    const out: Target[] = [];
    for (const address of addresses) {
      let target = this.byAddress.get(address);
      if (!target) {
        try {
          target = { address, id: this.engine.track(address, 'icmp'), lastAccess: 0 };
        } catch (e) {
          for (const t of started) {
            this.byAddress.delete(t.address);
            this.engine.untrack(t.id);
          }
          const message = `cannot probe ${address}: ${(e as Error).message}`;
          throw isInvalidArg(e) ? new BadRequestError(message) : new UnavailableError(message);
        }
        started.push(target);
        this.byAddress.set(address, target);
      }
      out.push(target);
    }
    const now = this.now();
    for (const t of out) t.lastAccess = now;
    return out;
  }

  /** Stops the probes nobody asked for during the expiry time; returns how many. */
  sweep(): number {
    const cutoff = this.now() - this.expiryMs;
    let expired = 0;
    for (const [address, t] of this.byAddress) {
      if (t.lastAccess <= cutoff) {
        this.byAddress.delete(address);
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
