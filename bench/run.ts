/**
 * `npm run bench`: figures for scale, cost against the peers, and precision, printed as tables
 * and written to bench-results/bench-<time>.json. Every run builds its own lab namespaces and
 * removes them (also on failure or Ctrl-C); each section is bounded in time (the whole run
 * takes about three minutes). Compare figures as ratios within one run, never across
 * machines or runs: the machines are shared and noisy.
 *
 *   BENCH_SECTIONS   scale,ceiling,cost,idle,precision,http,deployment (default: all)
 *   BENCH_COST_TARGETS  targets of the cost section (default 1000,10000)
 *   BENCH_COST_PEERS    who answers in the cost section: kernel,netsim (default both)
 *   BENCH_TARGETS    scale steps (default 1000,10000,100000; 2 s interval, -maxpps 100000)
 *   BENCH_WINDOW_MS  measuring window of each step (default 5000)
 *   BENCH_DEPLOYMENT_TARGETS    deployment steps (default 1000,10000)
 *   BENCH_DEPLOYMENT_WINDOW_MS  its measuring window (default 30000: two scrape intervals)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { deployment, scrapedCeiling } from './deployment.js';
import { httpCost } from './http-cost.js';
import { cost, idle, precision } from './peers.js';
import { churn, scale } from './scale.js';

const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? 'scale,ceiling,cost,idle,precision,http,deployment').split(','));
const STEPS = (process.env.BENCH_TARGETS ?? '1000,10000,100000').split(',').map(Number);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 5000);
const COST_TARGETS = (process.env.BENCH_COST_TARGETS ?? '1000,10000').split(',').map(Number);
/** kernel: the peer namespace's kernel answers (its work is charged to the sender, over veth); netsim: a process answers. */
const COST_PEERS = (process.env.BENCH_COST_PEERS ?? 'kernel,netsim').split(',').filter((p): p is 'kernel' | 'netsim' => p === 'kernel' || p === 'netsim');
const IDLE_WINDOW_MS = 20_000;
const DEPLOYMENT_STEPS = (process.env.BENCH_DEPLOYMENT_TARGETS ?? '1000,10000').split(',').map(Number);
const DEPLOYMENT_WINDOW_MS = Number(process.env.BENCH_DEPLOYMENT_WINDOW_MS ?? 30_000);
const PRECISION_HOSTS = 50;

type Row = Record<string, string | number>;

/** Adds, per peer row, the peer's figure divided by ours for the named columns. */
function withRatios<T extends Row>(rows: T[], columns: readonly string[], key: (r: T) => string): Row[] {
  const ours = new Map(rows.filter((r) => r['tool'] === 'icmp-exporter').map((r) => [key(r), r]));
  return rows.map((r) => {
    const base = ours.get(key(r));
    const out: Row = { ...r };
    for (const c of columns) {
      const [a, b] = [Number(r[c]), Number(base?.[c])];
      out[`${c}_x_ours`] = r['tool'] === 'icmp-exporter' || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? '' : Number((a / b).toFixed(2));
    }
    return out;
  });
}

async function main(): Promise<void> {
  const teardowns: Array<() => void> = [];
  const cleanup = () => teardowns.splice(0).reverse().forEach((f) => f());
  const teardown = (f: () => void) => teardowns.push(f);
  process.on('SIGINT', () => (cleanup(), process.exit(130)));
  const results: Record<string, unknown> = { window_ms: WINDOW_MS };
  const failed: string[] = [];
  /**
   * Prints `title`, runs `measure`, tears its lab down, prints its rows and keeps them as `key`
   * (if any). A section that fails (a machine too slow for its load, say) is reported and the
   * others still run; the command then exits 1.
   */
  const section = async (key: string | undefined, title: string, measure: () => Promise<Row[]>): Promise<void> => {
    console.log(`\n${title}`);
    try {
      const rows = await measure();
      console.table(rows);
      if (key !== undefined) results[key] = rows;
    } catch (e) {
      console.error(`section failed: ${(e as Error).message}`);
      failed.push(title);
      if (key !== undefined) results[key] = { error: (e as Error).message };
    } finally {
      cleanup();
    }
  };
  try {
    if (SECTIONS.has('scale')) {
      await section('scale', `Scale: the exporter against the kernel peer, 2 s interval, -maxpps 100000 (window ${WINDOW_MS} ms)`, () => scale(teardown, STEPS, WINDOW_MS));
      // The same last step with no histogram kept: what a target's histograms cost, beside the row above.
      const last = STEPS[STEPS.length - 1] ?? 100_000;
      await section('scale_without_histograms', `Scale at ${last} targets with -buckets=none -native-histograms=false (the histograms' memory is the difference)`, () =>
        scale(teardown, [last], WINDOW_MS, undefined, undefined, ['-buckets=none', '-native-histograms=false']),
      );
      await section('churn', 'Churn: 20,000 targets added at once, then expiring together, beside 1,000 kept ones', () => churn(teardown));
    }
    if (SECTIONS.has('ceiling')) {
      // 100,000 probes a second due. The cap is set above the demand, as a user would: with
      // the demand exactly at the cap, the pacer is a queue at full load and any stall leaves
      // a backlog it can only work off by one turn's worth at a time.
      await section('ceiling', `Ceiling: 100,000 targets at a 1 s interval, -maxpps 200000 (window ${WINDOW_MS} ms)`, () => scale(teardown, [100_000], WINDOW_MS, 1000, 200_000));
      await section('ceiling_scraped', 'Ceiling while Prometheus scrapes every target every 15 s, 256 targets a /probe request', () => scrapedCeiling(teardown));
    }
    if (SECTIONS.has('cost')) {
      const all: Row[] = [];
      for (const peer of COST_PEERS) {
        for (const targets of COST_TARGETS) {
          const title = `Cost: each tool alone, ${targets} ${peer === 'kernel' ? 'kernel-peer' : 'netsim'} targets at 1 probe/s each`;
          await section(undefined, title, async () => {
            const rows = withRatios(await cost(teardown, targets, WINDOW_MS, peer), ['cpu_us_per_probe', 'wakeups_per_probe', 'syscalls_per_probe', 'rss_mb', 'scrape_p99_ms'], () => '');
            all.push(...rows);
            return rows;
          });
        }
      }
      results['cost'] = all;
    }
    if (SECTIONS.has('idle')) {
      await section('idle', `Idle: 5 targets at a 2 s interval (window ${IDLE_WINDOW_MS} ms)`, () => idle(teardown, IDLE_WINDOW_MS));
    }
    if (SECTIONS.has('precision')) {
      const title = `Precision: all tools at once, ${PRECISION_HOSTS} kernel-peer hosts and ${PRECISION_HOSTS} netsim hosts (2 ms fixed delay), 1 probe/s each`;
      await section('precision', title, async () => {
        const rows: Row[] = [];
        for (const busy of [false, true]) {
          rows.push(...(await precision(teardown, PRECISION_HOSTS, 2 * WINDOW_MS, busy)));
          cleanup();
        }
        return withRatios(rows as Array<Row & { load: string }>, ['kernel_mean_us', 'kernel_sd_us', 'netsim_sd_us'], (r) => String(r['load']));
      });
    }
    if (SECTIONS.has('http')) {
      const title = 'HTTP: server CPU per request, 5,000 serial keep-alive requests each, against a bare node:http server (lowest of 3 rounds); paced: 500 each, alternated, 10 ms apart';
      await section('http', title, () => httpCost(teardown));
    }
    if (SECTIONS.has('deployment')) {
      const title = `Deployment: Prometheus scraping each target's /probe every 15 s, targets probed every 1 s (window ${DEPLOYMENT_WINDOW_MS} ms)`;
      await section('deployment', title, () => deployment(teardown, DEPLOYMENT_STEPS, DEPLOYMENT_WINDOW_MS));
    }
  } finally {
    cleanup();
  }
  mkdirSync('bench-results', { recursive: true });
  const file = `bench-results/bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`written: ${file}`);
  if (failed.length > 0) {
    console.error(`${failed.length} section(s) failed: ${failed.join('; ')}`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
