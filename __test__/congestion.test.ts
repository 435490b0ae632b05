/**
 * Local congestion is not network loss: a probe this host has no room to send (a full queueing
 * discipline: ENOBUFS) waits and goes again, and is never counted as sent and lost.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test('a full queueing discipline defers probes: none counted lost, none sent twice', async (t) => {
  const lab = Lab.create(t);
  // The prober's link drains at 200 kbit/s (about 250 probes a second) with room for about 30
  // packets; the exporter is asked for 1,000 probes a second. Without IP_RECVERR the kernel
  // drops the excess silently and sendmsg says nothing: those probes would read as lost.
  lab.exec(lab.prober, 'tc', ['qdisc', 'add', 'dev', lab.proberLink, 'root', 'tbf', 'rate', '200kbit', 'burst', '1600', 'limit', '3000']);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '50', '-timeout', '1000', '-maxpps', '100000']);
  const ips = Array.from({ length: 50 }, (_, i) => `198.18.128.${100 + i}`);
  const query = `/probe?${ips.map((ip) => `target=${ip}`).join('&')}`;
  const s = await waitFor(
    async () => parseSamples((await exporter.get(query)).body),
    (now) => ips.every((ip) => (value(now, 'icmp_probe_packets_sent_total', { ip }) ?? 0) >= 20),
    { what: '20 final probes of each target', timeoutMs: 60_000, everyMs: 200, show: (now) => ips.map((ip) => value(now, 'icmp_probe_packets_sent_total', { ip }) ?? 0).join(' ') },
  );
  const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? 0;
  const m = parseSamples((await exporter.get('/metrics')).body);
  const deferred = value(m, 'icmp_send_deferred_total') ?? 0;
  t.true(deferred > 0, `the queue was full: ${deferred} sends deferred`);
  for (const ip of ips) {
    if (v('packets_recv_total', ip) !== v('packets_sent_total', ip) || v('send_errors_total', ip) !== 0) {
      return t.fail(`${ip}: sent ${v('packets_sent_total', ip)}, received ${v('packets_recv_total', ip)}, send errors ${v('send_errors_total', ip)}`);
    }
  }
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'duplicate' }), 0, 'no probe went twice');
  t.pass();
});
