/**
 * RTT histograms on the wire: at every scrape, each target's histogram count is its answered
 * probes and its sum their latency total, over the text format and, scraped by a real
 * Prometheus with native histograms on, over the protobuf format as a native histogram.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { scrape, targets } from './helpers/probing.js';
import { value, type Sample } from './helpers/prom.js';
import { probeJob, queryVector, startPrometheus } from './helpers/prometheus.js';
import { all, delimited, fields, one, sub, text, zigzag } from './helpers/protowire.js';
import { waitFor } from './helpers/wait.js';

const PROTOBUF_ACCEPT = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,text/plain;version=0.0.4;q=0.5';

/** The probes' timeout (200 ms) as a bucket bound. */
const TIMEOUT_BOUND = '0.2';
const ICMP = ['198.18.128.1', '198.18.128.2', '198.18.128.3', '198.18.128.4'];
const TCP_PORTS = [7, 9];

/** Every histogram in a scrape against its counters; empty when they agree. */
function disagreements(samples: Sample[], proto: 'icmp' | 'tcp', bounds: string[]): string[] {
  const problems: string[] = [];
  for (const s of samples.filter((x) => x.name === `${proto}_probe_packets_recv_total`)) {
    const id = JSON.stringify(s.labels);
    const h = (suffix: string, extra: Record<string, string> = {}) => value(samples, `${proto}_probe_rtt_seconds_${suffix}`, { ...s.labels, ...extra });
    if (h('count') !== s.value) problems.push(`${id}: count ${h('count')} recv ${s.value}`);
    if (h('sum') !== value(samples, `${proto}_probe_latency_seconds_total`, s.labels)) problems.push(`${id}: sum ${h('sum')}`);
    const cumulative = [...bounds, '+Inf'].map((le) => h('bucket', { le }));
    if (cumulative.some((c, i) => c === undefined || (i > 0 && c < (cumulative[i - 1] as number)))) problems.push(`${id}: buckets ${cumulative.join(',')}`);
    if (cumulative[cumulative.length - 1] !== s.value) problems.push(`${id}: +Inf ${cumulative[cumulative.length - 1]}`);
    // The engine's own count at the timeout: every answer counted came within it.
    if (h('bucket', { le: TIMEOUT_BOUND }) !== s.value) problems.push(`${id}: le=${TIMEOUT_BOUND} ${h('bucket', { le: TIMEOUT_BOUND })} of ${s.value}`);
  }
  return problems;
}

test('at every scrape, each histogram counts exactly the answered probes and sums their RTTs (ICMP and TCP)', async (t) => {
  const lab = Lab.create(t);
  const bounds = ['2e-05', '5e-05', '0.0001', '0.0002', '0.0005', '0.001', TIMEOUT_BOUND];
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '200', '-buckets', bounds.join(',')]);
  const icmp = targets(ICMP);
  const tcp = `${targets(ICMP.slice(0, 2))}&${TCP_PORTS.map((p) => `tcp_port=${p}`).join('&')}`;
  let scrapes = 0;
  let lastRecv = 0;
  // Scrapes while probes end (100 a second per target): counts and sums must move together.
  await waitFor(
    async () => {
      const [a, b] = await Promise.all([scrape(exporter, icmp), scrape(exporter, tcp)]);
      scrapes++;
      const problems = [...disagreements(a, 'icmp', bounds), ...disagreements(b, 'tcp', bounds)];
      if (problems.length > 0) throw new Error(`scrape ${scrapes}: ${problems.join('; ')}`);
      lastRecv = Math.min(...a.concat(b).filter((s) => s.name.endsWith('_packets_recv_total')).map((s) => s.value));
      return lastRecv;
    },
    (recv) => recv >= 300 && scrapes >= 60,
    { what: '60 scrapes and 300 answers per target', timeoutMs: 60_000, everyMs: 20 },
  );
  t.true(lastRecv >= 300);
  // The RTTs over veth are tens of microseconds: they spread over the buckets, not all in +Inf.
  const samples = await scrape(exporter, icmp);
  const fine = value(samples, 'icmp_probe_rtt_seconds_bucket', { ip: ICMP[0] as string, le: '0.001' }) ?? 0;
  const recv = value(samples, 'icmp_probe_packets_recv_total', { ip: ICMP[0] as string }) ?? 0;
  t.true(fine > 0.9 * recv, `${fine} of ${recv} answers within 1 ms`);
  t.is((await exporter.get(`/probe?${icmp}`)).headers.get('vary'), 'Accept');

  // The protobuf answer: each native histogram holds every answer (its zero bucket and its
  // buckets add up to the answered count the same message carries).
  const res = await fetch(`${exporter.url}/probe?${icmp}`, { headers: { accept: PROTOBUF_ACCEPT } });
  t.is(res.headers.get('content-type'), 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited');
  const families = new Map(delimited(new Uint8Array(await res.arrayBuffer())).map((f) => [text(one(fields(f), 1)), fields(f)]));
  const recvOf = new Map(
    all(families.get('icmp_probe_packets_recv_total') ?? [], 4).map((m) => [text(one(sub(one(sub(m), 1)), 2)), one(sub(one(sub(m), 3)), 1) as number]),
  );
  const histograms = all(families.get('icmp_probe_rtt_seconds') ?? [], 4).map(sub);
  t.is(histograms.length, ICMP.length);
  for (const m of histograms) {
    const ip = text(one(sub(one(m, 1)), 2));
    const h = sub(one(m, 7));
    const count = Number(one(h, 1));
    let running = 0;
    const total = all(h, 13).reduce<number>((sum, d) => sum + (running += zigzag(d as bigint)), Number(one(h, 7) ?? 0n));
    t.is(count, recvOf.get(ip) ?? -1, `${ip}: sample_count = packets_recv_total`);
    t.is(total, count, `${ip}: zero bucket + native buckets = sample_count`);
    t.true(count > 0);
  }
});

test('a real Prometheus with native histograms scrapes each target as a native histogram that agrees with its counters', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '50']);
  const host = new URL(exporter.url).host;
  const job = (name: string, params: string, addresses: string[]) => probeJob(name, addresses, [host], [`    params: { ${params} }`, '    scrape_interval: 1s']);
  const prom = await startPrometheus(
    lab,
    () => ['scrape_configs:', job('icmp', '', ICMP.slice(0, 3)), job('tcp', "tcp_port: ['9']", ICMP.slice(0, 2)), ''].join('\n'),
    (f) => t.teardown(f),
    { flags: ['--enable-feature=native-histograms'] },
  );
  // Native series have no _bucket: histogram_count reads the native histogram only.
  for (const proto of ['icmp', 'tcp'] as const) {
    const expected = proto === 'icmp' ? 3 : 2;
    const counts = await waitFor(
      () => queryVector(prom.url, `histogram_count(${proto}_probe_rtt_seconds) > 20`),
      (v) => v.length === expected,
      { what: `${expected} native ${proto} histograms with answers`, timeoutMs: 60_000, everyMs: 500 },
    );
    t.is(counts.length, expected);
    // The same scrape: the histogram and the counters must be equal, series by series.
    const countGap = await queryVector(prom.url, `histogram_count(${proto}_probe_rtt_seconds) - ${proto}_probe_packets_recv_total`);
    t.deepEqual(countGap.map((s) => s.value), Array(expected).fill(0), `${proto}: count = recv`);
    const sumGap = await queryVector(prom.url, `histogram_sum(${proto}_probe_rtt_seconds) - ${proto}_probe_latency_seconds_total`);
    t.deepEqual(sumGap.map((s) => s.value), Array(expected).fill(0), `${proto}: sum = latency total`);
    t.deepEqual(await queryVector(prom.url, `${proto}_probe_rtt_seconds_bucket`), [], 'no classic series once native');
    // Veth RTTs are tens of microseconds; native buckets resolve them within 10 %.
    const p50 = await queryVector(prom.url, `histogram_quantile(0.5, ${proto}_probe_rtt_seconds)`);
    t.is(p50.length, expected);
    for (const q of p50) {
      t.true(q.value > 1e-6 && q.value < 2e-3, `${proto} median ${q.value}`);
    }
  }
});
