/**
 * netsim under load: 1,000 hosts at once, and a receive buffer flooded on purpose. These load
 * the machine (thousands of probes a second, a stopped engine with 40,000 answers coming), so
 * they run in the heavy profile (ava.heavy.config.js), one test at a time and never beside
 * the timing-sensitive tests of the main run.
 */
import test from 'ava';
import { Lab } from '../helpers/lab.js';
import { freezeSends, metrics, scrape, targets, waitForProbes, waitSettled } from '../helpers/probing.js';
import { value } from '../helpers/prom.js';
import { waitFor } from '../helpers/wait.js';

test.serial("1,000 simulated hosts at once: every host's counters match its truth", async (t) => {
  const lab = Lab.create(t);
  // 1,024 addresses in four ranges with different loss and delay.
  const ranges = [
    { prefix: '198.18.204.0/24', delay_ms: 1, loss: 0 },
    { prefix: '198.18.205.0/24', delay_ms: 5, jitter_ms: 1, loss: 0.1 },
    { prefix: '198.18.206.0/24', delay_ms: 20, jitter_ms: 5, loss: 0.5 },
    { prefix: '198.18.207.0/24', delay_ms: 2, loss: 0.02, duplicate: 0.1 },
  ];
  const sim = await lab.startNetsim({ seed: 3, hosts: ranges });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '250', '-timeout', '500']);
  const ips = Array.from({ length: 1000 }, (_, i) => `198.18.${204 + (i >> 8)}.${i & 0xff}`);
  const batches = Array.from({ length: 4 }, (_, b) => targets(ips.slice(b * 250, (b + 1) * 250)));
  for (const batch of batches) await scrape(exporter, batch);
  // A few seconds of probing: every host has at least 10 final probes.
  for (const batch of batches) await waitForProbes(exporter, batch, 10, { timeoutMs: 60_000 });
  freezeSends(lab, ['198.18.204.0/22']);
  const { truth, samples } = await waitSettled(exporter, sim, batches, 'icmp', { timeoutMs: 60_000 });
  let checked = 0;
  for (const ip of ips) {
    const v = (name: string) => value(samples, `icmp_probe_${name}`, { ip }) ?? -1;
    const h = truth.hosts[ip];
    if (!h || v('packets_recv_total') !== h.replies || v('packets_sent_total') - v('packets_recv_total') - v('send_errors_total') !== h.dropped) {
      t.fail(`${ip}: exporter sent ${v('packets_sent_total')} recv ${v('packets_recv_total')} send errors ${v('send_errors_total')}; truth ${JSON.stringify(h)}`);
      return;
    }
    checked += 1;
  }
  t.is(checked, 1000);
  const m = await metrics(exporter);
  t.is(value(m, 'icmp_active_probes'), 1000);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
});

/** Per raw socket of the prober namespace (from /proc/net/raw): bytes queued for reading, and packets dropped. */
function rawSockets(lab: Lab): Array<{ rxQueue: number; drops: number }> {
  return lab
    .exec(lab.prober, 'cat', ['/proc/net/raw'])
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const f = l.trim().split(/\s+/);
      // sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ref pointer drops
      return { rxQueue: parseInt((f[4] ?? '0:0').split(':')[1] ?? '0', 16), drops: Number(f.at(-1)) };
    });
}

test.serial('answers the kernel drops for a full receive buffer are counted apart, and every answer is accounted for', async (t) => {
  const lab = Lab.create(t);
  // 20,000 probes a second with answers 2 s away: ~40,000 in flight, far more than the socket buffer holds.
  const sim = await lab.startNetsim({ seed: 5, hosts: [{ prefix: '198.18.192.0/18', delay_ms: 2000 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '250', '-timeout', '5000', '-maxpps', '30000']);
  const ips = Array.from({ length: 5000 }, (_, i) => `198.18.${192 + (i >> 8)}.${i & 0xff}`);
  const batches: string[] = [];
  for (let i = 0; i < ips.length; i += 250) batches.push(targets(ips.slice(i, i + 250)));
  for (const batch of batches) await scrape(exporter, batch);
  // Answers have started to come (2 s after the first probes): tens of thousands are on their way.
  await waitFor(() => metrics(exporter), (m) => (value(m, 'icmp_packets_recv_total') ?? 0) >= 1000, {
    what: 'the first 1,000 answers (2 s after the first probes left)',
    timeoutMs: 60_000,
    show: (m) => `recv ${value(m, 'icmp_packets_recv_total')}, sent ${value(m, 'icmp_packets_sent_total')}`,
  });
  // The engine stops reading while the answers keep coming, until the kernel has dropped a
  // few thousand of them for want of room (the socket's own drop count, in /proc/net/raw).
  const pid = exporter.child.pid ?? 0;
  const dropsBefore = rawSockets(lab).reduce((n, s) => n + s.drops, 0);
  process.kill(pid, 'SIGSTOP');
  try {
    await waitFor(() => rawSockets(lab).reduce((n, s) => n + s.drops, 0) - dropsBefore, (d) => d >= 2000, {
      what: '2,000 answers dropped by the kernel for the stopped engine (/proc/net/raw)',
      timeoutMs: 60_000,
    });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  freezeSends(lab, ['198.18.192.0/18']);
  // Every probe sent is final (answered, or past its timeout), netsim has written every
  // answer, and the engine's receive queue is empty: each answer was read or dropped.
  await waitSettled(exporter, sim, batches, 'icmp', { timeoutMs: 60_000, matchRequests: false });
  await waitFor(() => rawSockets(lab), (socks) => socks.every((s) => s.rxQueue === 0), {
    what: 'the receive queues to be read empty',
    show: (socks) => JSON.stringify(socks),
  });
  const truth = await sim.truth();
  const replies = Object.values(truth.hosts).reduce((n, h) => n + h.replies, 0);
  const m = await metrics(exporter);
  const drops = value(m, 'icmp_receive_queue_drops_total') ?? -1;
  const read = value(m, 'icmp_packets_recv_total') ?? -1;
  t.log(`${replies} answers: ${read} read, ${drops} dropped`);
  t.true(drops > 1000, `the buffer overflowed: ${drops} dropped`);
  t.is(read + drops, replies, `netsim answered ${replies}: ${read} read, ${drops} dropped in the socket buffer`);
  t.is(value(m, 'tcp_receive_queue_drops_total') ?? 0, 0);
});
