/** Failures on the prober's side are counted outcomes: the process lives on and recovers. */
import test from 'ava';
import { Lab, PEER_V4 } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const TARGET = '198.18.128.60';

test('the source address goes away and comes back: send errors, then replies again', async (t) => {
  const lab = Lab.create(t);
  const INTERVAL_MS = 20;
  const TIMEOUT_MS = 300;
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', String(INTERVAL_MS), '-timeout', String(TIMEOUT_MS)]);
  const read = async () => {
    const r = await exporter.get(`/probe?target=${TARGET}`);
    t.is(r.status, 200, r.body);
    const s = parseSamples(r.body);
    const get = (name: string) => value(s, name, { ip: TARGET }) ?? 0;
    return {
      sent: get('icmp_probe_packets_sent_total'),
      recv: get('icmp_probe_packets_recv_total'),
      sendErrors: get('icmp_probe_send_errors_total'),
    };
  };
  type Counts = Awaited<ReturnType<typeof read>>;
  const until = (what: string, done: (c: Counts) => boolean) => waitFor(read, done, { what, show: (c) => JSON.stringify(c) });
  await read();
  const before = await until('6 answered probes', (c) => c.recv > 5);
  t.true(before.recv > 5);

  // Deleting the address also removes the default route through it.
  lab.exec(lab.prober, 'ip', ['addr', 'del', '198.18.0.1/24', 'dev', lab.proberLink]);
  // From the first refused send on, no probe leaves: replies can come only for probes
  // already in flight then, at most one per interval of the timeout.
  const refused = await until('a refused send', (c) => c.sendErrors > 0);
  const gone = await until('more than 10 send errors', (c) => c.sendErrors > 10);
  t.true(gone.sendErrors > 10, `send errors while the address is gone: ${gone.sendErrors}`);
  const inFlight = Math.ceil(TIMEOUT_MS / INTERVAL_MS) + 1;
  t.true(gone.recv - refused.recv <= inFlight, `no replies without an address (only those already in flight): ${gone.recv - refused.recv}`);

  lab.exec(lab.prober, 'ip', ['addr', 'add', '198.18.0.1/24', 'dev', lab.proberLink]);
  lab.exec(lab.prober, 'ip', ['route', 'replace', 'default', 'via', PEER_V4]);
  const back = await until('more than 10 replies after the address came back', (c) => c.recv - gone.recv > 10);
  t.true(back.recv - gone.recv > 10, `replies again: ${gone.recv} -> ${back.recv}`);
  // At most the one probe in flight at the moment the address went away can be lost on the wire.
  t.true(back.sent - back.recv - back.sendErrors <= 1, `lost beyond refused sends: ${back.sent - back.recv - back.sendErrors}`);
  t.is(exporter.child.exitCode, null, 'still running');
});

test('SIGTERM stops the exporter cleanly', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter();
  await exporter.get('/probe?target=198.18.128.61');
  const exited = new Promise<number | null>((resolve) => exporter.child.once('close', (code) => resolve(code)));
  // `ip netns exec` execs node, so the child is the exporter itself.
  exporter.child.kill('SIGTERM');
  t.is(await exited, 0);
  t.regex(exporter.stderr, /msg="Shutting down" signal=SIGTERM/);
  t.regex(exporter.stderr, /msg=Stopped/);
});
