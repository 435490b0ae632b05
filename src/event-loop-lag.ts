/**
 * `nodejs_eventloop_lag_*_seconds`, prom-client's names, measured as lag: how late a 100 ms
 * timer fires. prom-client reads Node's `monitorEventLoopDelay`, which records each timer
 * period whole (an idle loop read 0.1 s at this resolution), and its standard deviation and
 * percentiles walk the histogram's tens of thousands of buckets: 150 µs of every scrape. Here
 * the summaries come from the samples since the last scrape (ten a second, a sort of a few
 * hundred numbers).
 */
import { Gauge, type Registry } from 'prom-client';

/** How often the loop's lag is sampled: one timer, unref'd (an idle exporter wakes for it). */
export const EVENT_LOOP_SAMPLE_MS = 100;
/** Samples kept between two scrapes; past it the oldest are overwritten (~7 minutes). */
const MAX_SAMPLES = 4096;

export interface LagSummary {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/**
 * min, max, mean, population standard deviation and nearest-rank percentiles (the smallest
 * sample with at least p % of the samples at or below it) of `samples`, which it sorts in
 * place; undefined when there is none.
 */
export function summarizeLag(samples: Float64Array): LagSummary | undefined {
  const n = samples.length;
  if (n === 0) return undefined;
  samples.sort();
  let sum = 0;
  for (const s of samples) sum += s;
  const mean = sum / n;
  let squares = 0;
  for (const s of samples) squares += (s - mean) ** 2;
  const rank = (p: number): number => samples[Math.max(0, Math.ceil((p / 100) * n) - 1)] ?? 0;
  return {
    min: samples[0] ?? 0,
    max: samples[n - 1] ?? 0,
    mean,
    stddev: Math.sqrt(squares / n),
    p50: rank(50),
    p90: rank(90),
    p99: rank(99),
  };
}

/** The lag samples since the last scrape, in a fixed buffer. */
class LagSamples {
  private readonly buffer = new Float64Array(MAX_SAMPLES);
  private taken = 0;

  add(seconds: number): void {
    this.buffer[this.taken % MAX_SAMPLES] = seconds;
    this.taken++;
  }

  /** The samples so far (a copy), and a fresh start. */
  takeAll(): Float64Array {
    const all = this.buffer.slice(0, Math.min(this.taken, MAX_SAMPLES));
    this.taken = 0;
    return all;
  }
}

/**
 * Registers the eight event-loop gauges in `registry` and starts sampling; returns what
 * stops it. Between scrapes
 * with no sample (scrapes less than 100 ms apart) the summaries keep their last values.
 * `nodejs_eventloop_lag_seconds` is prom-client's: how long a `setImmediate` queued at a
 * scrape waited, shown by the next scrape.
 */
export function registerEventLoopLag(registry: Registry): () => void {
  const registers = [registry];
  const samples = new LagSamples();
  let previous = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    samples.add(Math.max(0, now - previous - EVENT_LOOP_SAMPLE_MS) / 1000);
    previous = now;
  }, EVENT_LOOP_SAMPLE_MS).unref();

  let immediateLag = 0;
  // Registered first: prom-client reads the metrics in order, and this one's collect sets
  // the seven after it.
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers,
    collect() {
      this.set(immediateLag);
      const start = performance.now();
      setImmediate(() => (immediateLag = (performance.now() - start) / 1000));
      const summary = summarizeLag(samples.takeAll());
      if (!summary) return;
      min.set(summary.min);
      max.set(summary.max);
      mean.set(summary.mean);
      stddev.set(summary.stddev);
      p50.set(summary.p50);
      p90.set(summary.p90);
      p99.set(summary.p99);
    },
  });
  const gauge = (name: string, help: string): Gauge => new Gauge({ name: `nodejs_eventloop_lag_${name}_seconds`, help, registers });
  const min = gauge('min', 'The minimum recorded event loop delay.');
  const max = gauge('max', 'The maximum recorded event loop delay.');
  const mean = gauge('mean', 'The mean of the recorded event loop delays.');
  const stddev = gauge('stddev', 'The standard deviation of the recorded event loop delays.');
  const p50 = gauge('p50', 'The 50th percentile of the recorded event loop delays.');
  const p90 = gauge('p90', 'The 90th percentile of the recorded event loop delays.');
  const p99 = gauge('p99', 'The 99th percentile of the recorded event loop delays.');
  return () => clearInterval(timer);
}
