/**
 * A failed engine thread (a bug: a panic) never takes the process down: /metrics says
 * icmp_engine_up 0 and /probe answers 503 with the reason. The failure is injected with
 * ICMP_EXPORTER_TEST_ENGINE_PANIC_MS, which makes the engine thread panic as a bug would.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test('a panicking engine thread: icmp_engine_up 0, /probe 503 with the reason, the process still serves', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], {
    env: { ICMP_EXPORTER_TEST_ENGINE_PANIC_MS: '1500' },
  });
  const before = await exporter.get('/probe?target=198.18.128.80');
  t.is(before.status, 200, 'running at first');
  const up = async () => value(parseSamples((await exporter.get('/metrics')).body), 'icmp_engine_up');
  await waitFor(up, (v) => v === 0, { what: 'icmp_engine_up 0' });
  const after = await exporter.get('/probe?target=198.18.128.80');
  t.is(after.status, 503);
  t.regex(after.body, /the probing engine failed: engine thread panicked: injected failure/);
  t.is((await exporter.get('/metrics')).status, 200, '/metrics still served');
  t.is(exporter.child.exitCode, null, 'the process is still running');
});

test('a failing wait (ppoll) is counted and retried: the engine goes on probing', async (t) => {
  const lab = Lab.create(t);
  // The first 200 waits fail as with ENOMEM (ICMP_EXPORTER_TEST_POLL_FAILURES).
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], {
    env: { ICMP_EXPORTER_TEST_POLL_FAILURES: '200' },
  });
  const target = '198.18.128.81';
  const read = async () => parseSamples((await exporter.get(`/probe?target=${target}`)).body);
  const s = await waitFor(read, (now) => (value(now, 'icmp_probe_packets_sent_total', { ip: target }) ?? 0) >= 50, {
    what: '50 final probes',
  });
  t.is(value(s, 'icmp_probe_packets_recv_total', { ip: target }), value(s, 'icmp_probe_packets_sent_total', { ip: target }), 'none lost');
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.is(value(m, 'icmp_engine_poll_errors_total'), 200, 'every failed wait counted');
  t.is(value(m, 'icmp_engine_up'), 1);
});
