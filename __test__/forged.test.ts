/** Answers only this process could have sent count; forged ICMPv6 and TCP answers never do. */
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { parseSamples, value, type Sample } from './helpers/prom.js';
import { waitUntil } from './helpers/wait.js';

const FORGE6 = fileURLToPath(new URL('helpers/forge6.py', import.meta.url));
const FORGE_TCP = fileURLToPath(new URL('helpers/forge_tcp.py', import.meta.url));

test('forged ICMPv6 replies and errors from the probed address are counted and change nothing', async (t) => {
  const lab = Lab.create(t);
  const target = '2001:2:0:8000::51';
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const probe = async () => parseSamples((await exporter.get(`/probe?target=${target}`)).body);
  await probe();
  const forged = 200;
  // Spoofed from the very address being probed, with the exporter's own identifier.
  lab.exec(lab.peer, 'python3', [FORGE6, target, '2001:2::1', String(exporter.identifier), String(forged)]);
  let m: Sample[] = [];
  await waitUntil('every forged packet counted', 10_000, async () => {
    m = parseSamples((await exporter.get('/metrics')).body);
    const seen = (value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }) ?? 0) + (value(m, 'icmp_packets_malformed_total') ?? 0);
    return [seen >= 2 * forged, `${seen} of ${2 * forged}`];
  });
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), forged, 'replies with a token of nobody\'s probe');
  t.is(value(m, 'icmp_packets_malformed_total'), forged, 'replies too short to carry a key and token');
  t.is(value(m, 'icmp_error_messages_total', { matched: 'false' }), forged, 'errors quoting no probe of ours');
  t.is(value(m, 'icmp_error_messages_total', { matched: 'true' }), 0);
  let s: Sample[] = [];
  await waitUntil('50 final probes', 10_000, async () => {
    s = await probe();
    const sent = value(s, 'icmp_probe_packets_sent_total', { ip: target }) ?? 0;
    return [sent >= 50, `${sent}`];
  });
  const sent = value(s, 'icmp_probe_packets_sent_total', { ip: target });
  t.is(value(s, 'icmp_probe_packets_recv_total', { ip: target }), sent, 'nothing forged counted as a reply or lost a probe');
  t.is(value(s, 'icmp_probe_icmp_errors_total', { ip: target }), 0);
  t.true((value(s, 'icmp_probe_latency_seconds', { ip: target }) ?? 1) < 0.001);
});

test('SYN-ACKs that acknowledge a probe but come from another address or port, or go to another of our ports, are foreign', async (t) => {
  const lab = Lab.create(t);
  const [target, other] = ['198.18.128.90', '198.18.128.91'];
  const count = 100;
  const forger = lab.spawn(lab.peer, 'python3', [FORGE_TCP, target, other, '198.18.0.1', String(count)]);
  let out = '';
  forger.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitUntil('the forger to listen', 10_000, async () => [out.includes('listening'), out]);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  // Port 9 on the kernel peer is closed: every real answer is a RST.
  const query = `/probe?target=${target}&tcp_port=9`;
  await exporter.get(query);
  await waitUntil('the forger to answer 100 probes', 20_000, async () => [/forged \d+/.test(out), out]);
  const forged = Number(/forged (\d+)/.exec(out)?.[1]);
  t.is(forged, 3 * count);
  let m: Sample[] = [];
  await waitUntil('every forged SYN-ACK counted', 10_000, async () => {
    m = parseSamples((await exporter.get('/metrics')).body);
    const foreign = value(m, 'tcp_replies_ignored_total', { reason: 'foreign' }) ?? 0;
    return [foreign >= forged, `${foreign} of ${forged}`];
  });
  t.is(value(m, 'tcp_replies_ignored_total', { reason: 'foreign' }), forged);
  const s = parseSamples((await exporter.get(query)).body);
  const v = (name: string) => value(s, `tcp_probe_${name}`, { ip: target, tcp_port: '9' }) ?? -1;
  t.true(v('packets_sent_total') >= count);
  t.is(v('packets_recv_total'), v('packets_sent_total'), 'every probe answered (by the kernel peer)');
  t.is(v('closed_total'), v('packets_recv_total'), 'and only by its RSTs: no forged SYN-ACK counted as open');
});
