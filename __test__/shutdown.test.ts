/**
 * Shutdown and the log: SIGTERM lets a request being answered finish, then exits 0; a second
 * signal exits at once; `-log.format json` and `-log.level` shape every line. The slow request
 * is a lookup the lab's DNS server never answers (its queries are dropped and counted).
 */
import test from 'ava';
import { CLI, Lab, type ExporterProcess } from './helpers/lab.js';
import { logMessages } from './helpers/log.js';
import { waitFor } from './helpers/wait.js';

// Processes are awaited on 'close', not 'exit': 'exit' can come before their stderr has been
// read to the end, and these tests read it.

/** An exporter whose DNS server never answers, and a request stuck in a lookup. */
async function stuckRequest(lab: Lab): Promise<{ exporter: ExporterProcess; response: Promise<Response>; exited: Promise<number | null> }> {
  lab.startDns({ 'silent.lab.test': ['198.18.128.90'] });
  lab.nft(
    lab.peer,
    `table inet lab {
      counter dns {}
      chain input {
        type filter hook input priority -10; policy accept;
        udp dport 53 counter name "dns" drop
      }
    }`,
  );
  const exporter = await lab.startExporter();
  const exited = new Promise<number | null>((resolve) => exporter.child.once('close', (code) => resolve(code)));
  const response = fetch(`${exporter.url}/probe?target=silent.lab.test`);
  response.catch(() => undefined); // awaited by the test; cut off in one of them
  await waitFor(() => lab.nftCounters(lab.peer).dns ?? 0, (n) => n > 0, { what: 'the lookup to be under way (a DNS query dropped)' });
  return { exporter, response, exited };
}

test('SIGTERM: the request being answered gets its answer, then the process exits 0', async (t) => {
  const lab = Lab.create(t);
  const { exporter, response, exited } = await stuckRequest(lab);
  exporter.child.kill('SIGTERM');
  const r = await response;
  t.is(r.status, 400);
  t.regex(await r.text(), /unable to resolve target="silent.lab.test"/);
  t.is(await exited, 0);
  const order = ['msg="Shutting down" signal=SIGTERM', 'msg=Stopped'].map((m) => exporter.stderr.indexOf(m));
  t.true(order[0] !== undefined && order[0] >= 0 && (order[1] ?? -1) > order[0], exporter.stderr);
});

test('a second signal exits at once, without waiting for the request', async (t) => {
  const lab = Lab.create(t);
  const { exporter, response, exited } = await stuckRequest(lab);
  exporter.child.kill('SIGTERM');
  await waitFor(() => exporter.stderr, (e) => e.includes('msg="Shutting down"'), { what: 'the first signal taken' });
  exporter.child.kill('SIGINT');
  t.is(await exited, 1);
  t.regex(exporter.stderr, /msg="SIGINT again: exiting at once"/);
  await t.throwsAsync(response, undefined, 'the request was cut off');
});

test('-log.format json -log.level warn: info lines left out, every line one JSON object', async (t) => {
  const lab = Lab.create(t);
  // Listening on a fixed port (the namespace's own), as no info line says where.
  const child = lab.spawn(lab.prober, process.execPath, [CLI, '-listen', `${lab.httpAddress}:9116`, '-log.format', 'json', '-log.level', 'warn', '-interface4', 'nosuch0']);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  t.is(code, 1, 'a missing interface stops the start');
  const lines = stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(lines.map((l) => l.level), ['error'], stderr);
  t.regex(String(lines[0]?.msg), /interface "nosuch0" \(-interface4\) does not exist/);
  t.regex(String(lines[0]?.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

  const ok = lab.spawn(lab.prober, process.execPath, [CLI, '-listen', `${lab.httpAddress}:9116`, '-log.format', 'json']);
  let log = '';
  ok.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  await waitFor(() => fetch(`http://${lab.httpAddress}:9116/-/healthy`).then((r) => r.status), (s) => s === 200, { what: 'the exporter to serve' });
  const exit = new Promise<number | null>((resolve) => ok.once('close', resolve));
  ok.kill('SIGTERM');
  t.is(await exit, 0);
  const msgs = log.trim().split('\n').map((l) => (JSON.parse(l) as { msg: string }).msg);
  t.deepEqual(msgs, ['Starting icmp-exporter', 'Listening', 'Shutting down', 'Stopped']);
});

test('an engine thread that hangs when told to stop: the process still exits, with status 1, saying so', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter([], { env: { ICMP_EXPORTER_TEST_ENGINE_HANG_ON_STOP: '1' } });
  const exited = new Promise<number | null>((resolve) => exporter.child.once('close', (code) => resolve(code)));
  exporter.child.kill('SIGTERM');
  t.is(await exited, 1);
  t.regex(exporter.stderr, /msg="Shutting down" signal=SIGTERM/);
  t.regex(logMessages(exporter.stderr), /stopping failed: .*the engine thread did not stop within 5 s/);
});
