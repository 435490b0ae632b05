/**
 * Scale: the exporter against the lab's kernel peer (AnyIP ranges answer every address) at
 * rising target counts, 2 s interval, -maxpps 100000. Per step: probes/s against what is due,
 * answered share, CPU per 1,000 probes (process and engine thread), resident memory per target
 * beyond the base, send-schedule delay, and /probe latency for 1 and 256 targets.
 */
import { Lab, type ExporterProcess } from '../__test__/helpers/lab.js';
import { parseSamples, sleep, value } from '../__test__/helpers/prom.js';
import { addTargets, timedGets } from './http.js';
import { anonymousRss, cpuSeconds, quantile, rssBytes, threadCpuSeconds, threadRunqueueWaitSeconds } from './proc.js';

const INTERVAL_MS = 2000;
/** Addresses in the peer's IPv4 AnyIP range (198.18.128.0/17); targets beyond it are IPv6. */
const V4_TARGETS = 32_768;

/** The n-th bench target: IPv4 first, then IPv6 in the peer's 2001:2:0:8000::/49. */
export function targetAddress(n: number): string {
  if (n < V4_TARGETS) return `198.18.${128 + (n >> 8)}.${n & 0xff}`;
  const m = n - V4_TARGETS;
  return `2001:2:0:8000::${(m >> 16).toString(16)}:${(m & 0xffff).toString(16)}`;
}

interface Counters {
  sent: number;
  recv: number;
  delaySum: number;
  delayMax: number;
  /** Probes that left more than 1 ms / 10 ms late. */
  over1ms: number;
  over10ms: number;
  /** Answers whose transmit stamp never came (a full error queue would show here) and answers the receive buffer dropped. */
  txMissing: number;
  queueDrops: number;
  /** Answers counted late, and of those the ones whose RTT was within the timeout (false losses). */
  late: number;
  falseLosses: number;
  /** Sends this host had no room for (ENOBUFS: a full backlog or queue), sent again. */
  deferred: number;
}

async function counters(e: ExporterProcess): Promise<Counters> {
  const m = parseSamples((await e.get('/metrics')).body);
  return {
    sent: value(m, 'icmp_packets_sent_total') ?? 0,
    recv: value(m, 'icmp_packets_recv_total') ?? 0,
    delaySum: value(m, 'icmp_send_schedule_delay_seconds_total') ?? 0,
    delayMax: value(m, 'icmp_send_schedule_delay_max_seconds') ?? 0,
    over1ms: value(m, 'icmp_send_schedule_late_total', { over: '0.001' }) ?? 0,
    over10ms: value(m, 'icmp_send_schedule_late_total', { over: '0.01' }) ?? 0,
    txMissing: value(m, 'icmp_timestamp_fallback_total', { reason: 'tx_missing' }) ?? 0,
    queueDrops: value(m, 'icmp_receive_queue_drops_total') ?? 0,
    late: value(m, 'icmp_replies_ignored_total', { reason: 'late' }) ?? 0,
    falseLosses: value(m, 'icmp_late_replies_within_timeout_total') ?? 0,
    deferred: value(m, 'icmp_send_deferred_total') ?? 0,
  };
}

/** Milliseconds the engine thread has waited, runnable, for a CPU. */
const engineWaitedMs = (pid: number) => threadRunqueueWaitSeconds(pid, 'netprobe') * 1000;

/** Targets [from, to) of the bench's address sequence. */
function range(from: number, to: number): string[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, k) => targetAddress(from + k));
}

export async function scale(
  teardown: (f: () => void) => void,
  steps: readonly number[],
  windowMs: number,
  intervalMs = INTERVAL_MS,
  maxPps = 100_000,
  extraArgs: readonly string[] = [],
): Promise<Array<Record<string, number>>> {
  const lab = Lab.create({ teardown });
  const args = ['-i-wont-be-evil', '-interval', String(intervalMs), '-timeout', '1000', '-maxpps', String(maxPps), ...extraArgs];
  const exporter = await lab.startExporter(args);
  const pid = exporter.child.pid ?? 0;
  await sleep(500);
  const baseRss = rssBytes(pid);
  const rows: Array<Record<string, number>> = [];
  let tracked = 0;
  let previousRss = baseRss;
  let previousAnon = anonymousRss(pid);
  for (const targets of steps) {
    const before = await counters(exporter);
    const waitedBefore = engineWaitedMs(pid);
    await addTargets(exporter.url, range(tracked, targets));
    const added = targets - tracked;
    tracked = targets;
    // Two rounds to settle; the worst delay while adding is the max gauge's rise, if any.
    await sleep(2 * intervalMs);
    const c0 = await counters(exporter);
    const [cpu0, eng0, t0, waited0] = [cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), Date.now(), engineWaitedMs(pid)];
    await sleep(windowMs);
    const [cpu1, eng1, t1, waited1] = [cpuSeconds(pid), threadCpuSeconds(pid, 'netprobe'), Date.now(), engineWaitedMs(pid)];
    const c1 = await counters(exporter);
    const rss = rssBytes(pid);
    // Beyond everything the previous step had: the young heap, request garbage and such
    // fixed costs are paid by then, so this is what one more target costs.
    const perAdded = Math.round((rss - previousRss) / Math.max(1, added));
    previousRss = rss;
    const anon = anonymousRss(pid);
    const nativePerAdded = Math.round((anon.rest - previousAnon.rest) / Math.max(1, added));
    const v8PagesPerAdded = Math.round((anon.v8Pages - previousAnon.v8Pages) / Math.max(1, added));
    previousAnon = anon;
    const one = await timedGets(`${exporter.url}/probe?target=${targetAddress(0)}`, 200);
    const many = Array.from({ length: 256 }, (_, k) => `target=${targetAddress(k)}`).join('&');
    const batch = await timedGets(`${exporter.url}/probe?${many}`, 50);
    const sent = c1.sent - c0.sent;
    const seconds = (t1 - t0) / 1000;
    const per1k = (cpu: number) => Number(((cpu / Math.max(1, sent)) * 1000).toFixed(4));
    const ms = (x: number) => Number(x.toFixed(3));
    rows.push({
      targets,
      due_per_s: (targets * 1000) / intervalMs,
      probes_per_s: Math.round(sent / seconds),
      answered_share: Number(((c1.recv - c0.recv) / Math.max(1, sent)).toFixed(4)),
      cpu_s_per_1k: per1k(cpu1 - cpu0),
      engine_cpu_s_per_1k: per1k(eng1 - eng0),
      engine_core_share: Number(((eng1 - eng0) / seconds).toFixed(3)),
      rss_per_target_bytes: Math.round((rss - baseRss) / targets),
      rss_per_added_target_bytes: perAdded,
      // Of that: native mappings (engine tables, typed arrays, malloc), and V8's heap pages.
      rss_native_per_added_target_bytes: nativePerAdded,
      rss_v8_pages_per_added_target_bytes: v8PagesPerAdded,
      rss_mb: Number((rss / 1e6).toFixed(1)),
      send_delay_mean_us: Math.round(((c1.delaySum - c0.delaySum) / Math.max(1, sent)) * 1e6),
      late_over_1ms_adding: c0.over1ms - before.over1ms,
      late_over_10ms_adding: c0.over10ms - before.over10ms,
      late_over_1ms_window: c1.over1ms - c0.over1ms,
      late_share_window: Number(((c1.over1ms - c0.over1ms) / Math.max(1, sent)).toFixed(4)),
      // Probes that left within 1 ms of their slot (their turn on the grid).
      on_schedule_share: Number((1 - (c1.over1ms - c0.over1ms) / Math.max(1, sent)).toFixed(4)),
      tx_stamps_missing_window: c1.txMissing - c0.txMissing,
      receive_queue_drops_since_start: c1.queueDrops,
      // Probes lost although their answer came within the timeout: must be 0 at every step.
      late_replies_since_start: c1.late,
      false_losses_since_start: c1.falseLosses,
      sends_deferred_window: c1.deferred - c0.deferred,
      engine_waited_for_cpu_ms_adding: Math.round(waited0 - waitedBefore),
      engine_waited_for_cpu_ms_window: Math.round(waited1 - waited0),
      send_delay_max_us_since_start: Math.round(c1.delayMax * 1e6),
      probe1_p50_ms: ms(quantile(one.client, 0.5)),
      probe1_p99_ms: ms(quantile(one.client, 0.99)),
      probe1_server_p50_ms: ms(quantile(one.server, 0.5)),
      probe1_server_p99_ms: ms(quantile(one.server, 0.99)),
      probe256_p50_ms: ms(quantile(batch.client, 0.5)),
      probe256_p99_ms: ms(quantile(batch.client, 0.99)),
      probe256_server_p50_ms: ms(quantile(batch.server, 0.5)),
      probe256_server_p99_ms: ms(quantile(batch.server, 0.99)),
    });
  }
  return rows;
}

/**
 * Churn: 1,000 targets kept alive by requests every second while 20,000 more are added at
 * once and then expire together (-expiry 4000): how many probes left more than 1 ms and
 * 10 ms late while it happened, against the same span before.
 */
export async function churn(teardown: (f: () => void) => void): Promise<Array<Record<string, number>>> {
  const lab = Lab.create({ teardown });
  const args = ['-i-wont-be-evil', '-interval', String(INTERVAL_MS), '-timeout', '1000', '-maxpps', '100000', '-expiry', '4000'];
  const exporter = await lab.startExporter(args);
  const pid = exporter.child.pid ?? 0;
  const keep = 1000;
  let keeping = true;
  const keepAlive = (async () => {
    while (keeping) {
      await addTargets(exporter.url, range(0, keep));
      await sleep(1000);
    }
  })();
  const active = async () => value(parseSamples((await exporter.get('/metrics')).body), 'icmp_active_probes') ?? NaN;
  try {
    await sleep(2 * INTERVAL_MS);
    const [quiet, waitedQuiet] = [await counters(exporter), engineWaitedMs(pid)];
    await sleep(INTERVAL_MS + 6000);
    const [settled, waitedSettled] = [await counters(exporter), engineWaitedMs(pid)];
    const rssBefore = rssBytes(pid);
    const t0 = Date.now();
    await addTargets(exporter.url, range(keep, keep + 20_000));
    const addMs = Date.now() - t0;
    await sleep(INTERVAL_MS);
    const [added, waitedAdded] = [await counters(exporter), engineWaitedMs(pid)];
    const activeAdded = await active();
    const rssBurst = rssBytes(pid);
    await sleep(6000); // expiry 4 s after the last request, swept within 0.4 s
    const [expired, waitedExpired] = [await counters(exporter), engineWaitedMs(pid)];
    const activeExpired = await active();
    // The engine gives its tables back an interval and a timeout after the last target left.
    await sleep(INTERVAL_MS + 1000 + 1000);
    const rssAfter = rssBytes(pid);
    return [
      {
        kept: keep,
        added: 20_000,
        adding_ms: addMs,
        active_after_adding: activeAdded,
        active_after_expiry: activeExpired,
        // Resident memory before the burst, with it, and once it expired and the tables shrank.
        rss_mb_before: Math.round(rssBefore / 1e5) / 10,
        rss_mb_with_burst: Math.round(rssBurst / 1e5) / 10,
        rss_mb_after_expiry: Math.round(rssAfter / 1e5) / 10,
        late_over_1ms_quiet: settled.over1ms - quiet.over1ms,
        late_over_1ms_adding: added.over1ms - settled.over1ms,
        late_over_10ms_adding: added.over10ms - settled.over10ms,
        late_over_1ms_expiring: expired.over1ms - added.over1ms,
        late_over_10ms_expiring: expired.over10ms - added.over10ms,
        send_delay_max_us_since_start: Math.round(expired.delayMax * 1e6),
        late_replies_since_start: expired.late,
        false_losses_since_start: expired.falseLosses,
        // Same-length spans, so comparable: the engine thread runnable but not running.
        engine_waited_for_cpu_ms_quiet: Math.round(waitedSettled - waitedQuiet),
        engine_waited_for_cpu_ms_adding: Math.round(waitedAdded - waitedSettled),
        engine_waited_for_cpu_ms_expiring: Math.round(waitedExpired - waitedAdded),
      },
    ];
  } finally {
    keeping = false;
    await keepAlive;
  }
}
