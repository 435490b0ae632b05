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
}

type EngineHandle = Pick<Engine, 'track' | 'untrack'>;

function isInvalidArg(e: unknown): boolean {
  return (e as { code?: unknown }).code === 'InvalidArg';
}

/** ICMP targets are keyed by their address alone, so the key is the only string kept. */
function keyOf(address: string, port: number): string {
  return port === 0 ? address : `${address}|${port}`;
}

function probeOf(key: string): Probe {
  const bar = key.indexOf('|');
  return bar < 0 ? { address: key, port: 0 } : { address: key.slice(0, bar), port: Number(key.slice(bar + 1)) };
}

/**
 * A flat copy of a string. Addresses come out of URL parsing as slices that keep the whole
 * parsed text alive; a copy held for hours should not.
 */
function ownCopy(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

/**
 * What is kept per target is a map entry from its key to a slot, and the slot's engine id and
 * last access in typed arrays: about 100 bytes a target, where an object per target cost three
 * times that at 100,000 targets.
 */
export class Targets {
  private readonly slotOf = new Map<string, number>();
  private ids = new Uint32Array(1024);
  private lastAccess = new Float64Array(1024);
  private readonly freeSlots: number[] = [];
  private slotsUsed = 0;
  private tcpCount = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly engine: EngineHandle,
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Targets being probed, ICMP (`tcp` false) or TCP; kept as they come and go, not counted per scrape. */
  count(tcp: boolean): number {
    return tcp ? this.tcpCount : this.slotOf.size - this.tcpCount;
  }

  private add(key: string, port: number, id: number): number {
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      if (this.slotsUsed === this.ids.length) {
        const ids = new Uint32Array(this.ids.length * 2);
        ids.set(this.ids);
        const lastAccess = new Float64Array(this.lastAccess.length * 2);
        lastAccess.set(this.lastAccess);
        [this.ids, this.lastAccess] = [ids, lastAccess];
      }
      slot = this.slotsUsed++;
    }
    this.ids[slot] = id;
    this.slotOf.set(key, slot);
    if (port !== 0) this.tcpCount += 1;
    return slot;
  }

  /** Forgets a target and stops its probe; false when it was not there. */
  private remove(key: string): boolean {
    const slot = this.slotOf.get(key);
    if (slot === undefined) return false;
    this.slotOf.delete(key);
    this.freeSlots.push(slot);
    if (probeOf(key).port !== 0) this.tcpCount -= 1;
    this.engine.untrack(this.ids[slot] as number);
    return true;
  }

  private target(key: string, slot: number): Target {
    return { ...probeOf(key), id: this.ids[slot] as number };
  }

  /**
   * Targets for these probes, starting the new ones. All or nothing: when one cannot be
   * probed, the probes this call started are stopped again.
   */
  acquire(probes: readonly Probe[]): Target[] {
    const started: string[] = [];
    const slots: number[] = [];
    const out: Target[] = [];
    for (const { address, port } of probes) {
      let key = keyOf(address, port);
      let slot = this.slotOf.get(key);
      if (slot === undefined) {
        let id: number;
        try {
          id = port === 0 ? this.engine.track(address, 'icmp') : this.engine.track(address, 'tcp', port);
        } catch (e) {
          for (const k of started) this.remove(k);
          const what = port === 0 ? address : `${address} port ${port}`;
          const message = `cannot probe ${what}: ${(e as Error).message}`;
          throw isInvalidArg(e) ? new BadRequestError(message) : new UnavailableError(message);
        }
        key = ownCopy(key);
        slot = this.add(key, port, id);
        started.push(key);
      }
      slots.push(slot);
      out.push({ address, port, id: this.ids[slot] as number });
    }
    const now = this.now();
    for (const slot of slots) this.lastAccess[slot] = now;
    return out;
  }

  /** The targets of these probes that exist, in order. */
  find(probes: readonly Probe[]): Target[] {
    return probes.flatMap(({ address, port }) => {
      const slot = this.slotOf.get(keyOf(address, port));
      return slot === undefined ? [] : [{ address, port, id: this.ids[slot] as number }];
    });
  }

  all(): Target[] {
    return [...this.slotOf].map(([key, slot]) => this.target(key, slot));
  }

  /** Stops these probes now. */
  release(probes: readonly Probe[]): void {
    for (const { address, port } of probes) this.remove(keyOf(address, port));
  }

  /** Stops the probes nobody asked for during the expiry time; returns how many. */
  sweep(): number {
    const cutoff = this.now() - this.expiryMs;
    const stale: string[] = [];
    for (const [key, slot] of this.slotOf) if ((this.lastAccess[slot] as number) <= cutoff) stale.push(key);
    for (const key of stale) this.remove(key);
    return stale.length;
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
