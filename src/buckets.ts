/**
 * Classic RTT histogram buckets: the default series and the `-buckets` flag. Kernel stamps
 * resolve microseconds, so the default starts at 10 µs (smokeping_prober's starts at 50 µs)
 * and climbs 1-2-5 per decade to the probe timeout, past which no answer is counted.
 */
import { FlagError } from './errors.js';

/** As the engine allows: each bound costs 8 bytes per target. */
export const MAX_BUCKETS = 64;
/** The largest bound the engine takes, in seconds. */
const MAX_BOUND_S = 3600;

/** 10 µs, 20 µs, 50 µs, 100 µs, ... up to the first at or above `timeoutMs`. */
export function defaultBuckets(timeoutMs: number): number[] {
  const out: number[] = [];
  for (let decade = -5; out.length === 0 || (out[out.length - 1] as number) * 1000 < timeoutMs; decade++) {
    for (const step of [1, 2, 5]) {
      // Written as a decimal and read back: 0.3, not 0.30000000000000004.
      const bound = Number(`${step}e${decade}`);
      out.push(bound);
      if (bound * 1000 >= timeoutMs) break;
    }
  }
  return out;
}

const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * `-buckets`: upper bounds in seconds, comma-separated and increasing ("0.0001,0.001,0.01"),
 * or "none" for no classic buckets (the histogram's sum and count remain). Throws FlagError.
 */
export function parseBuckets(raw: string): number[] {
  if (raw.trim() === 'none') return [];
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length > MAX_BUCKETS) throw new FlagError(`-buckets takes at most ${MAX_BUCKETS} bounds, got ${parts.length}`);
  const bounds: number[] = [];
  for (const part of parts) {
    if (!DECIMAL.test(part)) throw new FlagError(`-buckets must be increasing numbers of seconds separated by commas, or "none"; got ${JSON.stringify(part)}`);
    const v = Number(part);
    if (!(v > 0) || v > MAX_BOUND_S) throw new FlagError(`-buckets bound ${part} must be above 0 and at most ${MAX_BOUND_S} seconds`);
    // The engine counts in nanoseconds: two bounds it cannot tell apart are one bound.
    const previous = bounds[bounds.length - 1];
    if (Math.round(v * 1e9) < 1 || (previous !== undefined && Math.round(v * 1e9) <= Math.round(previous * 1e9))) {
      throw new FlagError(`-buckets must increase by at least a nanosecond: ${part} after ${previous ?? 0}`);
    }
    bounds.push(v);
  }
  return bounds;
}
