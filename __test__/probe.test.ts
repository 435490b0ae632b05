/** /probe end to end, on the wire: the exporter in a lab namespace, a kernel peer answering. */
import test from 'ava';
import { Lab, SILENT_V4, SILENT_V6 } from './helpers/lab.js';
import { metrics, scrape, targets, waitForProbes } from './helpers/probing.js';
import { parseSamples, promtoolProblems, promtoolVerdict, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const FAST = ['-i-wont-be-evil', '-interval', '20', '-timeout', '500'];

const PROBE_METRICS = [
  'icmp_probe_packets_sent_total',
  'icmp_probe_packets_recv_total',
  'icmp_probe_latency_seconds_total',
  'icmp_probe_latency_squared_seconds_total',
  'icmp_probe_latency_seconds',
  'icmp_probe_standard_deviation_seconds',
  'icmp_probe_loss_ratio',
  'icmp_probe_samples_count',
];

test('a live peer over IPv4 and IPv6: no loss, sub-millisecond RTT, valid exposition', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(FAST);
  const path = '/probe?target=198.18.128.1&target=2001:2:0:8000::1';
  const first = await exporter.get(path);
  t.is(first.status, 200, first.body);
  t.is(first.headers.get('x-target-count'), '2');
  // The exporter's own time on the request, for operators and the bench.
  t.regex(first.headers.get('server-timing') ?? '', /^probe;dur=\d+\.\d{3}$/);
  await waitForProbes(exporter, path.slice('/probe?'.length), 20);
  const { body } = await exporter.get(path);
  t.is(promtoolProblems(body), '');
  for (const name of PROBE_METRICS) {
    t.regex(body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has a HELP text`);
  }
  t.regex(body, /^# TYPE icmp_probe_packets_sent_total counter$/m);
  t.regex(body, /^# TYPE icmp_probe_loss_ratio gauge$/m);
  const samples = parseSamples(body);
  t.notRegex(body, /NaN/);
  for (const ip of ['198.18.128.1', '2001:2:0:8000::1']) {
    const sent = value(samples, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    const recv = value(samples, 'icmp_probe_packets_recv_total', { ip }) ?? 0;
    t.true(sent >= 20, `${ip}: ${sent} probes`);
    t.is(recv, sent, `${ip}: no loss`);
    t.is(value(samples, 'icmp_probe_loss_ratio', { ip }), 0);
    const mean = value(samples, 'icmp_probe_latency_seconds', { ip }) ?? -1;
    t.true(mean > 0 && mean < 0.001, `${ip}: mean RTT ${mean} s`);
    const total = value(samples, 'icmp_probe_latency_seconds_total', { ip }) ?? -1;
    t.true(Math.abs(total / recv - mean) < 0.001);
    t.true((value(samples, 'icmp_probe_standard_deviation_seconds', { ip }) ?? -1) >= 0);
    t.is(value(samples, 'icmp_probe_samples_count', { ip }), Math.min(250, sent));
  }
  const m = await metrics(exporter);
  t.is(value(m, 'icmp_timestamp_fallback_total', { reason: 'tx_missing' }), 0, 'every RTT from kernel stamps');
  t.is(value(m, 'icmp_timestamp_fallback_total', { reason: 'rx_missing' }), 0);
  t.true((value(m, 'icmp_rtt_clock_total', { clock: 'software' }) ?? 0) >= 40, 'kernel software stamps');
  t.is(value(m, 'icmp_rtt_clock_total', { clock: 'hardware' }), 0, 'no NIC clock without -hard');
  t.is(value(m, 'icmp_rtt_clock_total', { clock: 'monotonic' }), 0);
});

test('an address nobody answers: loss 1 and no latency gauges', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '200']);
  const query = targets([SILENT_V4, SILENT_V6]);
  await scrape(exporter, query);
  await waitForProbes(exporter, query, 10);
  const { body } = await exporter.get(`/probe?${query}`);
  t.is(promtoolProblems(body), '');
  const samples = parseSamples(body);
  for (const ip of [SILENT_V4, SILENT_V6]) {
    const sent = value(samples, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent >= 10, `${ip}: ${sent}`);
    t.is(value(samples, 'icmp_probe_packets_recv_total', { ip }), 0);
    t.is(value(samples, 'icmp_probe_loss_ratio', { ip }), 1);
    t.is(value(samples, 'icmp_probe_latency_seconds', { ip }), undefined, 'omitted, not NaN');
    t.is(value(samples, 'icmp_probe_standard_deviation_seconds', { ip }), undefined);
  }
  t.notRegex(body, /NaN/);
});

test('/metrics: engine counters typed as counters, process and HTTP metrics; / says what this is', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(FAST);
  await exporter.get('/probe?target=198.18.128.1');
  await waitFor(() => metrics(exporter), (m) => (value(m, 'icmp_packets_sent_total') ?? 0) > 0, { what: 'a first probe sent' });
  const index = await exporter.get('/');
  t.is(index.status, 200);
  t.regex(index.headers.get('content-type') ?? '', /text\/html/);
  t.regex(index.body, /href="\/metrics"/);
  t.regex(index.body, /href="\/probe\?target=/);
  const { status, body } = await exporter.get('/metrics');
  t.is(status, 200);
  // Clean as promtool has it: no lint accepted (prom-client's `nodejs_active_*_total` gauges were).
  t.deepEqual(promtoolVerdict(body), { status: 0, said: '' });
  for (const name of ['icmp_packets_sent_total', 'icmp_packets_recv_total', 'icmp_packets_error_total']) {
    t.regex(body, new RegExp(`^# TYPE ${name} counter$`, 'm'));
  }
  t.regex(body, /^# TYPE icmp_active_probes gauge$/m);
  const m = parseSamples(body);
  t.is(value(m, 'icmp_active_probes'), 1);
  t.true((value(m, 'icmp_packets_sent_total') ?? 0) > 0);
  t.true((value(m, 'process_resident_memory_bytes') ?? 0) > 0);
  t.not(value(m, 'nodejs_eventloop_lag_seconds'), undefined);
  // Lag, not the 100 ms sampling period an idle loop read as its lag before.
  t.true((value(m, 'nodejs_eventloop_lag_p50_seconds') ?? 1) < 0.05, `event loop lag p50 ${value(m, 'nodejs_eventloop_lag_p50_seconds')} s`);
  t.true((value(m, 'http_request_duration_seconds_count', { path: '/probe', method: 'GET', status: '200' }) ?? 0) >= 1);
  // Only this /metrics request is in flight: the ones to / before it (served by h3) ended
  // (each was counted in twice and out once before).
  t.is(value(m, 'http_requests_inflight'), 1);
  // How late probes leave against their schedule: a mean (counter) and the worst (gauge).
  t.regex(body, /^# TYPE icmp_send_schedule_delay_seconds_total counter$/m);
  const worst = value(m, 'icmp_send_schedule_delay_max_seconds') ?? -1;
  t.true(worst >= 0 && worst < 1, `worst send delay ${worst} s`);
  // Probes beyond each lateness threshold: nested counts, none beyond what left at all.
  const late = ['0.0001', '0.001', '0.01'].map((over) => value(m, 'icmp_send_schedule_late_total', { over }) ?? -1);
  t.true(late.every((n) => n >= 0), `late counts ${late}`);
  t.true(late[0]! >= late[1]! && late[1]! >= late[2]! && late[0]! <= (value(m, 'icmp_packets_sent_total') ?? 0));
});
