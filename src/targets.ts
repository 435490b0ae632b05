/**
 * Which addresses are being probed and until when. The first /probe request for an address
 * starts its background probe in the engine; every request refreshes it; a probe nobody
 * asked for during `expiryMs` is stopped.
 */
import { AddressIndex, addressBytes, probeKey } from './address-index.js';
import { BadRequestError, LimitError, UnavailableError } from './errors.js';
import type { Engine } from './native.js';
import { OptionVariants, optionsKey, type ProbeOptions } from './probe-options.js';

/**
 * What is probed: an address with ICMP echo (`port` 0) or with TCP SYN to `port`, with
 * probe options or not: each distinct set of options is a probe of its own.
 */
export interface Probe {
  address: string;
  port: number;
  options?: ProbeOptions | undefined;
}

export interface Target extends Probe {
  id: number;
}

type EngineHandle = Pick<Engine, 'track' | 'untrack'>;

function isInvalidArg(e: unknown): boolean {
  return (e as { code?: unknown }).code === 'InvalidArg';
}

/**
 * What is kept per target is its slot in an address index (its address bytes and port in
 * typed arrays, see address-index.ts), and the slot's engine id and last access in typed
 * arrays: no object and no string per target. With a Map from key strings, V8's live heap
 * after 100,000 targets was 15.2 MB; with this, 8.4 MB (--trace-gc).
 */
export class Targets {
  private readonly index = new AddressIndex();
  private readonly variants = new OptionVariants();
  private ids = new Uint32Array(1024);
  private lastAccess = new Float64Array(1024);
  /** Free slots below `slotsUsed`, kept so that `pop` gives the lowest (see `add`). */
  private freeSlots: number[] = [];
  private freeSorted = true;
  private slotsUsed = 0;
  private tcpCount = 0;
  private sweeper: NodeJS.Timeout | undefined;
  /**
   * No target can expire before this: the oldest last access the previous sweep left, plus
   * the expiry (an access only moves a target's last access later, a new target starts now).
   * The timer's tick is one comparison until then, instead of a pass over every target.
   */
  private nextExpiry = -Infinity;

  constructor(
    private readonly engine: EngineHandle,
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
    /** Targets probed at once, all protocols (`-max-targets`). */
    private readonly maxTargets = Number.POSITIVE_INFINITY,
  ) {}

  /** Targets being probed, all protocols. */
  get size(): number {
    return this.index.size;
  }

  /**
   * Refuses (LimitError) when these probes alone, without the ones a lookup may still add,
   * would take the targets past `maxTargets`: checked before any lookup of the request.
   */
  checkLimit(probes: readonly Probe[]): void {
    if (!Number.isFinite(this.maxTargets)) return;
    const fresh = new Set(
      probes.filter((p) => this.slotOf(p) === undefined).map(({ address, port, options }) => `${address} ${port} ${optionsKey(options)}`),
    );
    if (this.index.size + fresh.size > this.maxTargets) {
      throw new LimitError(
        `-max-targets ${this.maxTargets}: ${this.index.size} targets are being probed and this request would add ${fresh.size}; ` +
          'targets stop being probed -expiry after their last request',
      );
    }
  }

  /** Distinct sets of probe options in use (for tests). */
  get optionSets(): number {
    return this.variants.size;
  }

  /** Targets being probed, ICMP (`tcp` false) or TCP; kept as they come and go, not counted per scrape. */
  count(tcp: boolean): number {
    return tcp ? this.tcpCount : this.index.size - this.tcpCount;
  }

  /** The slot of a probe being made, if it is. */
  private slotOf({ address, port, options }: Probe): number | undefined {
    const variant = this.variants.peek(options);
    return variant === undefined ? undefined : this.index.get(address, probeKey(port, variant));
  }

  /** A slot for a target the engine now probes as `id`; undefined when `address` is no IP address. */
  private add(address: string, port: number, variant: number, id: number): number | undefined {
    // The lowest free slot: after a burst left, the slots in use stay at the bottom and the
    // top can be given back (shrink).
    if (!this.freeSorted) {
      this.freeSlots.sort((a, b) => b - a);
      this.freeSorted = true;
    }
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
    if (!this.index.set(slot, address, probeKey(port, variant))) {
      this.freeSlots.push(slot);
      this.freeSorted = false;
      return undefined;
    }
    this.ids[slot] = id;
    if (port !== 0) this.tcpCount += 1;
    return slot;
  }

  /** Forgets a target and stops its probe. */
  private remove(slot: number): void {
    if (!this.index.holds(slot)) return;
    if (this.index.port(slot) !== 0) this.tcpCount -= 1;
    this.variants.release(this.index.variant(slot));
    this.index.delete(slot);
    this.freeSlots.push(slot);
    this.freeSorted = false;
    this.engine.untrack(this.ids[slot] as number);
  }

  /**
   * Gives memory back after targets left: the free slots above the highest one in use are
   * dropped, and the arrays cut once fewer than a quarter of them are used.
   */
  private shrink(): void {
    let used = this.slotsUsed;
    while (used > 0 && !this.index.holds(used - 1)) used--;
    if (used === this.slotsUsed) return;
    this.slotsUsed = used;
    this.freeSlots = this.freeSlots.filter((s) => s < used);
    this.freeSorted = false;
    let size = 1024;
    while (size < used) size *= 2;
    if (this.ids.length > 4 * size) {
      [this.ids, this.lastAccess] = [this.ids.slice(0, size), this.lastAccess.slice(0, size)];
    }
    this.index.shrink(used);
  }

  /** Slots (taken and free) and the length of the slot arrays, for tests. */
  tableSizes(): { slots: number; arrays: number; index: { slots: number; table: number } } {
    return { slots: this.slotsUsed, arrays: this.ids.length, index: this.index.sizes() };
  }

  /**
   * Targets for these probes, starting the new ones. All or nothing: when one cannot be
   * probed, the probes this call started are stopped again; when the new ones would take
   * the targets past `maxTargets`, nothing is started (LimitError).
   */
  acquire(probes: readonly Probe[]): Target[] {
    this.checkLimit(probes);
    const started: number[] = [];
    const slots: number[] = [];
    const out: Target[] = [];
    const refuse = (what: string, e: Error) => {
      for (const s of started) this.remove(s);
      const message = `cannot probe ${what}: ${e.message}`;
      return isInvalidArg(e) ? new BadRequestError(message) : new UnavailableError(message);
    };
    for (const probe of probes) {
      const { address, port, options } = probe;
      let slot = this.slotOf(probe);
      if (slot === undefined) {
        const what = port === 0 ? address : `${address} port ${port}`;
        if (addressBytes(address, new Uint8Array(16)) === 0) {
          throw refuse(what, Object.assign(new Error('not an IP address'), { code: 'InvalidArg' }));
        }
        let variant: number;
        try {
          variant = this.variants.take(options);
        } catch (e) {
          for (const s of started) this.remove(s);
          throw e;
        }
        let id: number;
        try {
          id = port === 0 ? this.engine.track(address, 'icmp', undefined, options) : this.engine.track(address, 'tcp', port, options);
        } catch (e) {
          this.variants.release(variant);
          throw refuse(what, e as Error);
        }
        slot = this.add(address, port, variant, id) as number;
        started.push(slot);
      }
      slots.push(slot);
      out.push({ address, port, id: this.ids[slot] as number, ...(options ? { options } : {}) });
    }
    const now = this.now();
    for (const slot of slots) this.lastAccess[slot] = now;
    if (started.length > 0) this.nextExpiry = Math.min(this.nextExpiry, now + this.expiryMs);
    return out;
  }

  /** The targets of these probes that exist, in order. */
  find(probes: readonly Probe[]): Target[] {
    return probes.flatMap((probe) => {
      const slot = this.slotOf(probe);
      return slot === undefined ? [] : [{ ...probe, id: this.ids[slot] as number }];
    });
  }

  all(): Target[] {
    const out: Target[] = [];
    for (let slot = 0; slot < this.slotsUsed; slot++) {
      if (!this.index.holds(slot)) continue;
      const options = this.variants.options(this.index.variant(slot));
      out.push({ address: this.index.address(slot), port: this.index.port(slot), id: this.ids[slot] as number, ...(options ? { options } : {}) });
    }
    return out;
  }

  /** Stops these probes now. */
  release(probes: readonly Probe[]): void {
    for (const probe of probes) {
      const slot = this.slotOf(probe);
      if (slot !== undefined) this.remove(slot);
    }
  }

  /** Stops the probes nobody asked for during the expiry time; returns how many. */
  sweep(): number {
    const cutoff = this.now() - this.expiryMs;
    let stale = 0;
    let oldest = Infinity;
    for (let slot = 0; slot < this.slotsUsed; slot++) {
      if (!this.index.holds(slot)) continue;
      const last = this.lastAccess[slot] as number;
      if (last <= cutoff) {
        this.remove(slot);
        stale += 1;
      } else if (last < oldest) {
        oldest = last;
      }
    }
    this.nextExpiry = oldest + this.expiryMs;
    if (stale > 0) this.shrink();
    return stale;
  }

  /** `sweep`, when a target can have expired since the last one (what the timer calls); returns how many expired. */
  sweepDue(): number {
    return this.now() >= this.nextExpiry ? this.sweep() : 0;
  }

  startSweeping(): void {
    const every = Math.max(50, Math.min(1000, Math.floor(this.expiryMs / 10)));
    this.sweeper = setInterval(() => {
      try {
        this.sweepDue();
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
