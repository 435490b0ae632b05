/**
 * Deployment: the exporter as it is run. A real Prometheus (Debian's) scrapes each of N
 * targets every 15 s through `/probe?target=` with the README's relabelling, and the
 * exporter probes each target every second; the figure is the exporter's whole-process CPU
 * per target per second (and Prometheus' own, separately), over a few scrape intervals after
 * every target has been scraped once. Prometheus runs inside the lab's prober namespace with a
 * temporary data directory, listening on the lab's HTTP address; both go with the lab.
 */
import { Lab } from '../__test__/helpers/lab.js';
import { query, startPrometheus } from '../__test__/helpers/prometheus.js';
import { parseSamples, sleep, value } from '../__test__/helpers/prom.js';
import { addTargets } from './http.js';
import { cpuSeconds, rssBytes, threadCpuSeconds, threadRunqueueWaitSeconds } from './proc.js';
import { targetAddress } from './scale.js';

export { PROMETHEUS } from '../__test__/helpers/prometheus.js';
const SCRAPE_INTERVAL_S = 15;

/** The n-th address the lab's kernel peer answers (198.18.128.0/17: up to 32,768). */
export function peerAddress(n: number): string {
  return `198.18.${128 + (n >> 8)}.${n & 0xff}`;
}

/** The README's scrape config, the exporter at `exporter` (host:port), plus a job for its own /metrics. */
function prometheusConfig(exporter: string, targets: readonly string[]): string {
  return [
    'global:',
    `  scrape_interval: ${SCRAPE_INTERVAL_S}s`,
    '  scrape_timeout: 10s',
    'scrape_configs:',
    "  - job_name: 'icmp'",
    '    metrics_path: /probe',
    '    relabel_configs:',
    '      - target_label: __param_target',
    '        source_labels: [__address__]',
    '      - target_label: instance',
    '        source_labels: [__address__]',
    '      - target_label: __address__',
    `        replacement: ${exporter}`,
    '    static_configs:',
    '      - targets:',
    ...targets.map((t) => `        - ${t}`),
    "  - job_name: 'exporter'",
    '    static_configs:',
    `      - targets: ['${exporter}']`,
    '',
  ].join('\n');
}

/** Polls `read` until `done` holds; throws with the last value after `ms`. */
async function until<T>(what: string, read: () => Promise<T>, done: (v: T) => boolean, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T | undefined;
  for (;;) {
    try {
      last = await read();
      if (done(last)) return last;
    } catch {
      // not answering yet
    }
    if (Date.now() > deadline) throw new Error(`deployment: ${what} not reached within ${ms} ms (last: ${String(last)})`);
    await sleep(250);
  }
}

/**
 * Runs `body` with a teardown list of its own, run when it ends, and by the bench's cleanup
 * should the run be interrupted first.
 */
async function scoped<T>(teardown: (f: () => void) => void, body: (onTeardown: (f: () => void) => void) => Promise<T>): Promise<T> {
  const local: Array<() => void> = [];
  const cleanup = () => local.splice(0).reverse().forEach((f) => f());
  teardown(cleanup);
  try {
    return await body((f) => local.push(f));
  } finally {
    cleanup();
  }
}

/** One step: N targets, its own lab, exporter and Prometheus, all removed before it returns. */
function step(teardown: (f: () => void) => void, n: number, windowMs: number): Promise<Record<string, number>> {
  return scoped(teardown, async (onTeardown) => {
    const lab = Lab.create({ teardown: onTeardown });
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '1000', '-maxpps', String(2 * n)]);
    const pid = exporter.child.pid ?? 0;
    const targets = Array.from({ length: n }, (_, k) => peerAddress(k));
    const prom = await startPrometheus(lab, () => prometheusConfig(new URL(exporter.url).host, targets), onTeardown);
    // Warm-up: every target scraped (so probed) once, then one more interval at the steady state.
    const upTimeout = 4 * SCRAPE_INTERVAL_S * 1000;
    await until(`all ${n} targets up`, () => query(prom.url, 'count(up{job="icmp"} == 1)'), (c) => c === n, upTimeout);
    await sleep(SCRAPE_INTERVAL_S * 1000);
    const probeScrapes = async () =>
      value(parseSamples((await exporter.get('/metrics')).body), 'http_request_duration_seconds_count', { path: '/probe', method: 'GET', status: '200' }) ?? 0;
    const [s0, cpu0, eng0, prom0, t0] = [await probeScrapes(), cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), cpuSeconds(prom.child.pid ?? 0), Date.now()];
    await sleep(windowMs);
    const [s1, cpu1, eng1, prom1, t1] = [await probeScrapes(), cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), cpuSeconds(prom.child.pid ?? 0), Date.now()];
    const seconds = (t1 - t0) / 1000;
    const scrapes = s1 - s0;
    const perTargetUs = (cpu: number) => Number(((cpu / seconds / n) * 1e6).toFixed(2));
    const down = await query(prom.url, 'count(up{job="icmp"} == 0)');
    const scrapeMs = await query(prom.url, 'avg(scrape_duration_seconds{job="icmp"})');
    return {
      targets: n,
      window_s: Math.round(seconds),
      scrapes_per_s: Number((scrapes / seconds).toFixed(1)),
      due_scrapes_per_s: Number((n / SCRAPE_INTERVAL_S).toFixed(1)),
      targets_down: Number.isNaN(down) ? 0 : down,
      // The headline: CPU microseconds per target per second, the whole exporter process.
      exporter_cpu_us_per_target_s: perTargetUs(cpu1 - cpu0),
      // Of it: the engine thread (probing), and the rest (Node: HTTP, scrapes, GC).
      engine_cpu_us_per_target_s: perTargetUs(eng1 - eng0),
      node_cpu_us_per_target_s: perTargetUs(cpu1 - cpu0 - (eng1 - eng0)),
      node_cpu_us_per_scrape: Number((((cpu1 - cpu0 - (eng1 - eng0)) / Math.max(1, scrapes)) * 1e6).toFixed(1)),
      exporter_core_share: Number(((cpu1 - cpu0) / seconds).toFixed(3)),
      exporter_rss_mb: Number((rssBytes(pid) / 1e6).toFixed(1)),
      prometheus_cpu_us_per_target_s: perTargetUs(prom1 - prom0),
      prometheus_core_share: Number(((prom1 - prom0) / seconds).toFixed(3)),
      scrape_duration_avg_ms: Number((scrapeMs * 1000).toFixed(2)),
    };
  });
}

export async function deployment(teardown: (f: () => void) => void, steps: readonly number[], windowMs: number): Promise<Array<Record<string, number>>> {
  const rows: Array<Record<string, number>> = [];
  for (const n of steps) rows.push(await step(teardown, n, windowMs));
  return rows;
}

/**
 * A scrape config for many targets per scrape: one job per batch of up to 256 targets, each
 * scraping `/probe` with all of them as `target` parameters (one request returns every
 * target's series), plus the exporter's own /metrics.
 */
function batchedConfig(exporter: string, targets: readonly string[], batch: number): string {
  const lines = ['global:', `  scrape_interval: ${SCRAPE_INTERVAL_S}s`, '  scrape_timeout: 10s', 'scrape_configs:'];
  for (let i = 0; i < targets.length; i += batch) {
    lines.push(`  - job_name: 'icmp-${i / batch}'`, '    metrics_path: /probe', '    params:', '      target:');
    lines.push(...targets.slice(i, i + batch).map((t) => `        - '${t}'`));
    lines.push('    static_configs:', `      - targets: ['${exporter}']`);
  }
  lines.push("  - job_name: 'exporter'", '    static_configs:', `      - targets: ['${exporter}']`, '');
  return lines.join('\n');
}

/**
 * The ceiling while Prometheus scrapes: 100,000 targets at a 1 s interval (100,000 probes/s,
 * `-maxpps 200000`), every target's series scraped every 15 s by a real Prometheus through
 * `/probe` in batches of 256 targets a request (391 scrapes per interval), and the exporter's
 * /metrics. Over one scrape interval after every batch was scraped once: the exporter's CPU
 * (whole process, and the engine thread), probes/s, the share that left within 1 ms of their
 * slot, false losses, and Prometheus' own CPU.
 */
export function scrapedCeiling(teardown: (f: () => void) => void, n = 100_000, batch = 256): Promise<Array<Record<string, number>>> {
  return scoped(teardown, async (onTeardown) => {
    const lab = Lab.create({ teardown: onTeardown });
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '1000', '-maxpps', String(2 * n)]);
    const pid = exporter.child.pid ?? 0;
    const targets = Array.from({ length: n }, (_, k) => targetAddress(k));
    await addTargets(exporter.url, targets);
    const prom = await startPrometheus(lab, () => batchedConfig(new URL(exporter.url).host, targets, batch), onTeardown);
    const jobs = Math.ceil(n / batch);
    await until(`all ${jobs} batches up`, () => query(prom.url, 'count(up{job=~"icmp-.*"} == 1)'), (c) => c === jobs, 4 * SCRAPE_INTERVAL_S * 1000);
    const read = async () => {
      const m = parseSamples((await exporter.get('/metrics')).body);
      return {
        sent: value(m, 'icmp_packets_sent_total') ?? 0,
        late: value(m, 'icmp_send_schedule_late_total', { over: '0.001' }) ?? 0,
        falseLosses: value(m, 'icmp_late_replies_within_timeout_total') ?? 0,
        scrapes: value(m, 'http_request_duration_seconds_count', { path: '/probe', method: 'GET', status: '200' }) ?? 0,
      };
    };
    const waited = () => threadRunqueueWaitSeconds(pid, 'netprobe') * 1000;
    const [c0, cpu0, eng0, prom0, w0, t0] = [await read(), cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), cpuSeconds(prom.child.pid ?? 0), waited(), Date.now()];
    await sleep(SCRAPE_INTERVAL_S * 1000);
    const [c1, cpu1, eng1, prom1, w1, t1] = [await read(), cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), cpuSeconds(prom.child.pid ?? 0), waited(), Date.now()];
    const seconds = (t1 - t0) / 1000;
    const sent = Math.max(1, c1.sent - c0.sent);
    const samples = await query(prom.url, 'sum(scrape_samples_scraped{job=~"icmp-.*"})');
    return [
      {
        targets: n,
        targets_per_scrape: batch,
        window_s: Number(seconds.toFixed(1)),
        probes_per_s: Math.round(sent / seconds),
        on_schedule_share: Number((1 - (c1.late - c0.late) / sent).toFixed(4)),
        // The engine thread runnable but not running (others had the CPUs): the machine's share of the lateness.
        engine_waited_for_cpu_ms: Math.round(w1 - w0),
        false_losses_since_start: c1.falseLosses,
        probe_scrapes_per_s: Number(((c1.scrapes - c0.scrapes) / seconds).toFixed(1)),
        samples_per_scrape_round: samples,
        exporter_core_share: Number(((cpu1 - cpu0) / seconds).toFixed(3)),
        engine_core_share: Number(((eng1 - eng0) / seconds).toFixed(3)),
        exporter_cpu_us_per_probe: Number((((cpu1 - cpu0) / sent) * 1e6).toFixed(2)),
        exporter_rss_mb: Number((rssBytes(pid) / 1e6).toFixed(1)),
        prometheus_core_share: Number(((prom1 - prom0) / seconds).toFixed(3)),
      },
    ];
  });
}
