/** The /probe exposition writer (pure): samples, omissions, escaping, and promtool's verdict. */
import test from 'ava';
import { renderProbe } from '../src/render.js';
import { parseSamples, promtoolProblems, value } from './helpers/prom.js';

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
