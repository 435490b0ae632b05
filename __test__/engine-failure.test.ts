/**
 * A failed engine thread (a bug: a panic) is not a process that answers 503 for ever: the
 * command logs why and exits non-zero (3), so systemd or a container runtime restarts it;
 * until then, and for a program that embeds the exporter, `/-/ready` and `/probe` answer 503
 * with the reason, `/-/healthy` 200 and `/metrics` says icmp_engine_up 0. The failure is
 * injected with ICMP_EXPORTER_TEST_ENGINE_PANIC_MS, which makes the engine thread panic as a
 * bug would.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const INDEX = new URL('../dist/index.js', import.meta.url).pathname;

test('the command: ready while the engine runs, then a panicking engine thread ends the process with status 3 and says why', async (t) => {
  const lab = Lab.create(t);
  // Ready while running: an exporter with no failure injected (the injected one fails at a
  // moment on the clock, which a loaded machine may reach before the first request).
  const running = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  t.is((await running.get('/probe?target=198.18.128.80')).status, 200, 'running at first');
  t.deepEqual(await running.get('/-/ready').then((r) => [r.status, r.body]), [200, 'Ready.\n']);
  t.deepEqual(await running.get('/-/healthy').then((r) => [r.status, r.body]), [200, 'Healthy.\n']);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], {
    env: { ICMP_EXPORTER_TEST_ENGINE_PANIC_MS: '1500' },
  });
  const exited = new Promise<number | null>((resolve) => exporter.child.once('close', (code) => resolve(code)));
  t.is(await exited, 3);
  t.regex(exporter.stderr, /the probing engine failed: engine thread panicked: injected failure.*; exiting/);
});

// Embedded: the program decides what to do; the exporter keeps serving and says it is not ready.
const SCRIPT = `
import { startExporter } from ${JSON.stringify(INDEX)};
const exporter = await startExporter({ host: '127.0.0.1', port: 0, intervalMs: 20, timeoutMs: 300 });
const reason = new Promise((resolve) => exporter.onEngineFailure(resolve));
// Asked before the failure: ready, unless a loaded machine got to the failure first.
const ready = await fetch(exporter.url + '/-/ready').then(async (r) => [r.status, await r.text()]);
await reason;
const get = async (path) => { const r = await fetch(exporter.url + path); return [r.status, await r.text()]; };
const after = { ready: await get('/-/ready'), healthy: await get('/-/healthy'), probe: await get('/probe?target=198.18.128.80'), metrics: await get('/metrics') };
await exporter.close();
console.log(JSON.stringify({ ready, reason: await reason, after }));
`;

test('embedded: onEngineFailure tells the program; /-/ready and /probe 503 with the reason, /-/healthy 200, icmp_engine_up 0', async (t) => {
  const lab = Lab.create(t);
  const out = JSON.parse(
    lab.exec(lab.prober, 'env', ['ICMP_EXPORTER_TEST_ENGINE_PANIC_MS=1000', process.execPath, '--input-type=module', '-e', SCRIPT]),
  ) as { ready: [number, string]; reason: string; after: Record<'ready' | 'healthy' | 'probe' | 'metrics', [number, string]> };
  // Either answer is true at its moment: ready, or not ready because the engine failed.
  t.true(out.ready[0] === 200 || (out.ready[0] === 503 && /the probing engine failed/.test(out.ready[1])), out.ready.join(' '));
  t.regex(out.reason, /engine thread panicked: injected failure/);
  t.is(out.after.ready[0], 503);
  t.regex(out.after.ready[1], /^Not ready: the probing engine failed: engine thread panicked: injected failure/);
  t.is(out.after.healthy[0], 200);
  t.is(out.after.probe[0], 503);
  t.regex(out.after.probe[1], /the probing engine failed: engine thread panicked: injected failure/);
  t.is(out.after.metrics[0], 200, '/metrics still served');
  t.is(value(parseSamples(out.after.metrics[1]), 'icmp_engine_up'), 0);
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
