/**
 * `-interface4/6 auto` learns route changes from netlink: on a host with a full BGP table the
 * engine thread must not read the whole table once a second (it used to read /proc/net/route).
 */
import { readdirSync, readFileSync } from 'node:fs';
import test from 'ava';
import { Lab, PEER_V6 } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

/** Bytes the exporter's engine thread ("netprobe") has read through read(2) and friends. */
function engineReadBytes(pid: number): number {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'netprobe') continue;
    const io = readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8');
    return Number(/^rchar: (\d+)$/m.exec(io)?.[1] ?? NaN);
  }
  throw new Error('no engine thread');
}

test('with 50,000 routes, following the default route reads no route table', async (t) => {
  const lab = Lab.create(t);
  // 50,000 more specific routes (what a full table looks like to /proc/net/ipv6_route: one line
  // each), inside the lab's 2001:2::/48.
  const routes = Array.from({ length: 50_000 }, (_, i) => `route add 2001:2:0:1000:${i.toString(16)}::/80 via ${PEER_V6}`);
  lab.exec(lab.prober, 'ip', ['-6', '-batch', '-'], `${routes.join('\n')}\n`);
  const exporter = await lab.startExporter(['-interface4', 'auto', '-interface6', 'auto', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const target = '198.18.128.70';
  const sent = async () => value(parseSamples((await exporter.get(`/probe?target=${target}`)).body), 'icmp_probe_packets_sent_total', { ip: target }) ?? 0;
  await sent();
  const pid = exporter.child.pid ?? 0;
  const before = engineReadBytes(pid);
  // At least 3 s of probing (150 probes at 20 ms), counted, not slept.
  await waitFor(sent, (n) => n >= 150, { what: '150 final probes' });
  const read = engineReadBytes(pid) - before;
  // /proc/net/ipv6_route is 149 bytes a route: one read of this table is 7.5 MB.
  t.true(read < 100_000, `the engine thread read ${read} bytes while probing`);
  const s = parseSamples((await exporter.get(`/probe?target=${target}`)).body);
  t.is(value(s, 'icmp_probe_packets_recv_total', { ip: target }), value(s, 'icmp_probe_packets_sent_total', { ip: target }), 'probing as usual');
});
