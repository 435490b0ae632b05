/** nodejs_eventloop_lag_*: the summaries (pure), and lag read as lag, not as the sampling period. */
import test from 'ava';
import { Registry } from 'prom-client';
import { EVENT_LOOP_SAMPLE_MS, registerEventLoopLag, summarizeLag } from '../src/event-loop-lag.js';
import { parseSamples, promtoolProblems, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

/** A deterministic pseudo-random sequence (xorshift), so a failure replays. */
function* randoms(seed: number): Generator<number> {
  let x = seed >>> 0 || 1;
  for (;;) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    yield (x >>> 0) / 2 ** 32;
  }
}

test('summaries against their definitions, for many random sample sets', (t) => {
  const random = randoms(7);
  for (let round = 0; round < 500; round++) {
    const n = 1 + Math.floor(random.next().value * 300);
    const values = Array.from({ length: n }, () => random.next().value * random.next().value * 0.2);
    const summary = summarizeLag(Float64Array.from(values));
    if (!summary) return t.fail('no summary of a non-empty set');
    const sorted = [...values].sort((a, b) => a - b);
    const mean = values.reduce((a, b) => a + b, 0) / n;
    t.is(summary.min, sorted[0] ?? Number.NaN);
    t.is(summary.max, sorted[n - 1] ?? Number.NaN);
    t.true(Math.abs(summary.mean - mean) < 1e-12);
    const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
    t.true(Math.abs(summary.stddev - Math.sqrt(variance)) < 1e-12);
    for (const [p, got] of [
      [50, summary.p50],
      [90, summary.p90],
      [99, summary.p99],
    ] as const) {
      // Nearest rank: at least p % of the samples at or below it, and fewer below it.
      const atOrBelow = values.filter((v) => v <= got).length;
      const below = values.filter((v) => v < got).length;
      t.true(values.includes(got));
      t.true(atOrBelow >= (p / 100) * n, `p${p} of ${n}: ${atOrBelow} at or below`);
      t.true(below < (p / 100) * n, `p${p} of ${n}: ${below} below`);
    }
  }
  t.is(summarizeLag(new Float64Array()), undefined);
});

/** The lag gauges of one scrape of `registry`, checked by promtool. */
async function scrape(t: import('ava').ExecutionContext, registry: Registry): Promise<Map<string, number>> {
  const body = await registry.metrics();
  t.is(promtoolProblems(body), '');
  const m = parseSamples(body);
  const lag = new Map<string, number>();
  for (const name of ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99']) {
    lag.set(name, value(m, `nodejs_eventloop_lag_${name}_seconds`) ?? Number.NaN);
  }
  return lag;
}

test.serial('an idle loop reads near zero, a blocked one reads the block', async (t) => {
  const registry = new Registry();
  registerEventLoopLag(registry);
  // An idle loop's timer is late by scheduling noise, far below the sampling period (Node's
  // own monitor read the period itself, 0.1 s). Scrapes a few samples apart, until one has
  // a sample above zero.
  const idle = await waitFor(
    () => scrape(t, registry),
    (lag) => (lag.get('max') ?? 0) > 0,
    { what: 'a scrape with a lag sample', everyMs: 3.5 * EVENT_LOOP_SAMPLE_MS },
  );
  t.true((idle.get('p50') ?? 1) < EVENT_LOOP_SAMPLE_MS / 2000, `idle p50 ${idle.get('p50')} s`);
  t.true((idle.get('min') ?? -1) >= 0);

  // A 300 ms block delays the timer due during it by at least 200 ms; the scrape that
  // follows it sees that sample.
  const end = performance.now() + 300;
  while (performance.now() < end) {
    // block the loop
  }
  const blocked = await waitFor(
    () => scrape(t, registry),
    (lag) => (lag.get('max') ?? 0) >= 0.19,
    { what: 'the block read as lag of at least 190 ms', timeoutMs: 10_000 },
  );
  t.true((blocked.get('p99') ?? 0) >= 0.19);
});
