/** The /probe exposition writers (pure): samples, omissions, escaping, promtool's verdict, protobuf bytes. */
import test from 'ava';
import { defaultBuckets } from '../src/buckets.js';
import { formatBound, nativeSpans, renderProbe, renderProbeProtobuf, wantsProtobuf } from '../src/render.js';
import type { TargetStats } from '../src/snapshot.js';
import { parseSamples, promtoolProblems, value } from './helpers/prom.js';
import { all, delimited, fields, one, sub, text, zigzag } from './helpers/protowire.js';

const stats = {
  sent: 4,
  received: 3,
  closed: 1,
  latencySecondsTotal: 0.000123,
  latencySquaredSecondsTotal: 1e-8,
  sendErrors: 0,
  icmpErrors: 1,
  windowSamples: 4,
  windowLossRatio: 0.25,
  windowLatencySeconds: 0.000041,
  windowStddevSeconds: undefined,
  buckets: new Float64Array(),
};

test('tcp: every series per target, labelled ip and tcp_port; undefined gauges left out', (t) => {
  const { body, contentType } = renderProbe('tcp', [
    { address: '198.18.0.1', port: 80, stats },
    { address: '2001:2::1', port: 443, stats: { ...stats, windowStddevSeconds: 0.000002 } },
  ]);
  t.true(contentType.startsWith('text/plain; version=0.0.4'));
  t.is(promtoolProblems(body), '');
  const m = parseSamples(body);
  t.is(value(m, 'tcp_probe_packets_sent_total', { ip: '198.18.0.1', tcp_port: '80' }), 4);
  t.is(value(m, 'tcp_probe_closed_total', { ip: '2001:2::1', tcp_port: '443' }), 1);
  t.is(value(m, 'tcp_probe_standard_deviation_seconds', { ip: '198.18.0.1' }), undefined);
  t.is(value(m, 'tcp_probe_standard_deviation_seconds', { ip: '2001:2::1' }), 0.000002);
  t.is(m.filter((s) => s.name === 'tcp_probe_loss_ratio').length, 2);
});

test('icmp: no tcp_port label and no closed counter; label values are escaped', (t) => {
  const { body } = renderProbe('icmp', [{ address: 'a"b\\c\nd', port: 0, stats }]);
  t.is(promtoolProblems(body), '');
  t.true(body.includes('icmp_probe_packets_recv_total{ip="a\\"b\\\\c\\nd"} 3'));
  t.false(body.includes('closed_total'));
  t.false(body.includes('tcp_port'));
});

const BOUNDS = [1e-5, 5e-5, 0.0001, 0.3];
const answered: TargetStats = {
  ...stats,
  windowStddevSeconds: 0.000001,
  buckets: Float64Array.from([0, 2, 3, 3]),
  // Buckets -106, -105 (contiguous) and -100 at schema 3: two spans.
  native: { schema: 3, zeroCount: 0, buckets: Float64Array.from([-106, 1, -105, 1, -100, 1]) },
};

test('histogram text: cumulative buckets, +Inf and _count are the answers, _sum the latency total', (t) => {
  const { body } = renderProbe('icmp', [{ address: '198.18.0.1', port: 0, stats: answered }], BOUNDS);
  t.is(promtoolProblems(body), '');
  const m = parseSamples(body);
  const bucket = (le: string) => value(m, 'icmp_probe_rtt_seconds_bucket', { ip: '198.18.0.1', le });
  t.deepEqual(['1e-05', '5e-05', '0.0001', '0.3', '+Inf'].map(bucket), [0, 2, 3, 3, 3]);
  t.is(value(m, 'icmp_probe_rtt_seconds_count', { ip: '198.18.0.1' }), value(m, 'icmp_probe_packets_recv_total'));
  t.is(value(m, 'icmp_probe_rtt_seconds_sum', { ip: '198.18.0.1' }), value(m, 'icmp_probe_latency_seconds_total'));
  const tcp = renderProbe('tcp', [{ address: '2001:2::1', port: 443, stats: answered }], BOUNDS).body;
  t.is(promtoolProblems(tcp), '');
  t.is(value(parseSamples(tcp), 'tcp_probe_rtt_seconds_bucket', { ip: '2001:2::1', tcp_port: '443', le: '+Inf' }), 3);
  const none = renderProbe('icmp', [{ address: '198.18.0.1', port: 0, stats: answered }], []).body;
  t.is(promtoolProblems(none), '');
  t.deepEqual(parseSamples(none).filter((s) => s.name.endsWith('_bucket')).map((s) => s.labels.le), ['+Inf']);
});

test('bucket bounds are labelled as Prometheus clients write them', (t) => {
  t.deepEqual([1e-5, 2e-5, 5e-5, 0.0001, 0.3, 1, 2.5, 3600, 1e-9].map(formatBound), ['1e-05', '2e-05', '5e-05', '0.0001', '0.3', '1', '2.5', '3600', '1e-09']);
  t.deepEqual([999999, 1e6, 2.5e7].map(formatBound), ['999999', '1e+06', '2.5e+07'], "Go's switch to exponents at 1e6");
  t.deepEqual(defaultBuckets(3000), [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]);
  t.deepEqual(defaultBuckets(10).slice(-2), [0.005, 0.01]);
  t.deepEqual(defaultBuckets(40_000).slice(-3), [10, 20, 50]);
});

test('native buckets become spans and deltas', (t) => {
  t.deepEqual(nativeSpans([-106, 1, -105, 1, -100, 5, -99, 2]), {
    spans: [
      [-106, 2],
      [4, 2],
    ],
    deltas: [1, 0, 4, -3],
  });
  t.deepEqual(nativeSpans([]), { spans: [], deltas: [] });
});

test('protobuf: delimited MetricFamily messages with the same values, and the native histogram', (t) => {
  const { body, contentType } = renderProbeProtobuf('tcp', [{ address: '198.18.0.1', port: 80, stats: answered }], BOUNDS);
  t.is(contentType, 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited');
  const families = delimited(body).map(fields);
  const byName = new Map(families.map((f) => [text(one(f, 1)), f]));
  const textBody = renderProbe('tcp', [{ address: '198.18.0.1', port: 80, stats: answered }], BOUNDS).body;
  t.deepEqual([...byName.keys()], [...textBody.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]), 'the families of the text format, in its order');
  const recv = byName.get('tcp_probe_packets_recv_total') as ReturnType<typeof fields>;
  t.is(one(recv, 3), 0n, 'COUNTER');
  const metric = sub(one(recv, 4));
  const labels = all(metric, 1).map(sub).map((l) => `${text(one(l, 1))}=${text(one(l, 2))}`);
  t.deepEqual(labels, ['ip=198.18.0.1', 'tcp_port=80']);
  t.is(one(sub(one(metric, 3)), 1), 3);
  const loss = byName.get('tcp_probe_loss_ratio') as ReturnType<typeof fields>;
  t.is(one(loss, 3), 1n, 'GAUGE');
  t.is(one(sub(one(sub(one(loss, 4)), 2)), 1), 0.25);
  const rtt = byName.get('tcp_probe_rtt_seconds') as ReturnType<typeof fields>;
  t.is(one(rtt, 3), 4n, 'HISTOGRAM');
  const h = sub(one(sub(one(rtt, 4)), 7));
  t.is(one(h, 1), 3n, 'sample_count = received');
  t.is(one(h, 2), 0.000123, 'sample_sum = latency total');
  t.deepEqual(all(h, 3).map(sub).map((b) => [Number(one(b, 1)), one(b, 2)]), [
    [0, 1e-5],
    [2, 5e-5],
    [3, 0.0001],
    [3, 0.3],
  ]);
  t.is(zigzag(one(h, 5) as bigint), 3, 'schema');
  t.true((one(h, 6) as number) > 0, 'a zero threshold: native');
  t.is(one(h, 7), 0n);
  t.deepEqual(all(h, 12).map(sub).map((s) => [zigzag(one(s, 1) as bigint), Number(one(s, 2))]), [
    [-106, 2],
    [4, 1],
  ]);
  t.deepEqual(all(h, 13).map((d) => zigzag(d as bigint)), [1, 0, 0], 'deltas');
});

test('protobuf: a target with no answer yet is still a native histogram (one empty span)', (t) => {
  const fresh: TargetStats = { ...stats, received: 0, latencySecondsTotal: 0, buckets: new Float64Array(4), native: { schema: 3, zeroCount: 0, buckets: new Float64Array() } };
  const families = delimited(renderProbeProtobuf('icmp', [{ address: '198.18.0.1', port: 0, stats: fresh }], BOUNDS).body).map(fields);
  const rtt = families.find((f) => text(one(f, 1)) === 'icmp_probe_rtt_seconds') as ReturnType<typeof fields>;
  const h = sub(one(sub(one(rtt, 4)), 7));
  t.deepEqual(all(h, 12).map(sub).map((s) => [zigzag(one(s, 1) as bigint), Number(one(s, 2))]), [[0, 0]]);
  t.deepEqual(all(h, 13), []);
  const classicOnly = delimited(renderProbeProtobuf('icmp', [{ address: '198.18.0.1', port: 0, stats: answered }].map((r) => ({ ...r, stats: { ...r.stats, native: undefined } })), BOUNDS).body).map(fields);
  const c = sub(one(sub(one(classicOnly.find((f) => text(one(f, 1)) === 'icmp_probe_rtt_seconds') as ReturnType<typeof fields>, 4)), 7));
  t.is(one(c, 5), undefined, 'no schema without a native histogram');
});

test('the protobuf format only when the scraper prefers it', (t) => {
  const prometheusNative =
    'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
  t.true(wantsProtobuf(prometheusNative));
  t.false(wantsProtobuf('application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'));
  t.false(wantsProtobuf(undefined));
  t.false(wantsProtobuf('*/*'));
  t.false(wantsProtobuf('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text'));
  t.false(wantsProtobuf('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,text/plain;q=0.5'));
  t.false(wantsProtobuf('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0'));
  t.true(wantsProtobuf('application/vnd.google.protobuf; proto="io.prometheus.client.MetricFamily"; encoding="delimited"'), 'quoted values');
  t.false(wantsProtobuf('application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,text/plain;q=7'), 'q past 1 is 1');
});
