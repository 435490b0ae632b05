/**
 * Waiting for a condition instead of a wall-clock moment. A loaded machine makes everything
 * slower, so a test that sleeps a fixed time and then compares exact counts fails there; a
 * test that polls for the state it needs only takes longer. Deadlines are generous (they are
 * there to end a test that will never pass, not to judge speed), and a missed one says what
 * was awaited and what was seen last.
 */
import { inspect } from 'node:util';

export interface WaitOptions<T> {
  /** What is awaited, for the failure message: "198.18.0.1 has ≥ 20 final probes". */
  what: string;
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
  /** Pause between two reads (default 50 ms). */
  everyMs?: number;
  /** How to show the last value in the failure message (default: util.inspect, shortened). */
  show?: (value: T) => string;
}

export class WaitTimeout extends Error {
  override name = 'WaitTimeout';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const shorten = (text: string, max = 2000) => (text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text);

/**
 * Reads `read()` until `done(value)` holds and returns that value (so a test can assert on
 * exactly the state the condition saw). A read that throws counts as "not yet"; its error is
 * shown if the deadline passes. Throws a `WaitTimeout` naming `what` and the last value.
 */
export async function waitFor<T>(read: () => T | Promise<T>, done: (value: T) => boolean, opts: WaitOptions<T>): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const everyMs = opts.everyMs ?? 50;
  const show = opts.show ?? ((v: T) => inspect(v, { depth: 4, breakLength: Infinity }));
  const start = Date.now();
  let reads = 0;
  let last: { value: T } | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await read();
      reads += 1;
      last = { value };
      lastError = undefined;
      if (done(value)) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - start >= timeoutMs) {
      const seen = lastError !== undefined ? `the last read failed: ${lastError instanceof Error ? lastError.message : String(lastError)}` : last ? `last seen: ${show(last.value)}` : 'nothing was read';
      throw new WaitTimeout(`gave up after ${timeoutMs} ms (${reads} reads) waiting for ${opts.what}; ${shorten(seen)}`);
    }
    await sleep(everyMs);
  }
}

/**
 * `waitFor` for a check that says at once whether it is done and what it saw:
 * `[done, "what the state was"]`; on a missed deadline the failure names `what` and that state.
 */
export async function waitUntil(what: string, timeoutMs: number, check: () => Promise<[boolean, string]>): Promise<void> {
  await waitFor(check, ([done]) => done, { what, timeoutMs, everyMs: 100, show: ([, state]) => state });
}
