/** More ground truth from netsim: a step change in loss, late replies, TCP ports, and 1,000 hosts at once. */
import test from 'ava';
import { Lab, type ExporterProcess } from './helpers/lab.js';
import { parseSamples, sleep, value, type Sample } from './helpers/prom.js';

const probe = async (e: ExporterProcess, query: string): Promise<Sample[]> => {
  const r = await e.get(`/probe?${query}`);
  if (r.status !== 200) throw new Error(`${query.slice(0, 80)}: ${r.status} ${r.body}`);
  return parseSamples(r.body);
};

test('a step change in loss narrows the window gauges to the samples after it', async (t) => {
  const lab = Lab.create(t);
  const ip = '198.18.203.1';
  const t0 = Date.now(); // netsim's clock starts a little after this
  const until = (ms: number) => sleep(Math.max(0, t0 + ms - Date.now()));
  await lab.startNetsim({ hosts: [{ prefix: `${ip}/32`, delay_ms: 1 }], changes: [{ at_ms: 5000, prefix: `${ip}/32`, loss: 1 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '100']);
  await probe(exporter, `target=${ip}`);
  await until(4000);
  const before = await probe(exporter, `target=${ip}`);
  t.is(value(before, 'icmp_probe_loss_ratio', { ip }), 0);
  t.is(value(before, 'icmp_probe_samples_count', { ip }), 250, 'a full window before the change');
  await until(6400); // the change comes at 5 s; over a hundred probes fail after it
  const after = await probe(exporter, `target=${ip}`);
  const n = value(after, 'icmp_probe_samples_count', { ip }) ?? 0;
  t.is(value(after, 'icmp_probe_loss_ratio', { ip }), 1, 'the gauges cover only the samples after the change');
  t.true(n >= 25 && n < 250, `${n} samples in the window`);
  t.is(value(after, 'icmp_probe_latency_seconds', { ip }), undefined, 'no latency without replies');
  const sent = value(after, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
  const recv = value(after, 'icmp_probe_packets_recv_total', { ip }) ?? 0;
  t.true(Math.abs(sent - recv - n) <= 3, `the window is the ${sent - recv} probes lost since the change (±3)`);
});

test('replies later than the timeout are loss, and never disturb a later probe or another target', async (t) => {
  const lab = Lab.create(t);
  const [slow, fast] = ['198.18.203.10', '198.18.203.11'];
  await lab.startNetsim({ hosts: [{ prefix: `${slow}/32`, delay_ms: 250 }, { prefix: `${fast}/32`, delay_ms: 1 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '100']);
  const query = `target=${slow}&target=${fast}`;
  await probe(exporter, query);
  await sleep(2500);
  const s = await probe(exporter, query);
  const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? -1;
  t.true(v('packets_sent_total', slow) > 50);
  t.is(v('packets_recv_total', slow), 0, 'every reply came after its timeout');
  t.is(v('loss_ratio', slow), 1);
  t.is(v('packets_recv_total', fast), v('packets_sent_total', fast), 'the other target lost nothing');
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.true((value(m, 'icmp_replies_ignored_total', { reason: 'late' }) ?? 0) >= v('packets_sent_total', slow) - 15, 'counted as late');
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
});

test('TCP SYN: open, closed and filtered ports against the truth', async (t) => {
  const lab = Lab.create(t);
  const [v4, v6] = ['198.18.203.20', '2001:2:0:c000::20'];
  const tcp = { '80': 'synack', '81': 'rst', '82': 'silence' };
  const sim = await lab.startNetsim({
    hosts: [
      { prefix: `${v4}/32`, delay_ms: 3, jitter_ms: 0.5, tcp },
      { prefix: `${v6}/128`, delay_ms: 3, jitter_ms: 0.5, tcp },
    ],
  });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const query = `target=${v4}&target=${v6}&tcp_port=80&tcp_port=81&tcp_port=82`;
  await probe(exporter, query);
  await sleep(2500);
  for (const ip of [v4, v6]) lab.exec(lab.prober, 'ip', [ip.includes(':') ? '-6' : '-4', 'route', 'add', 'unreachable', ip]);
  await sleep(500);
  const truth = await sim.truth();
  const s = await probe(exporter, query);
  for (const ip of [v4, v6]) {
    const v = (name: string, port: number) => value(s, `tcp_probe_${name}`, { ip, tcp_port: String(port) }) ?? -1;
    const h = truth.hosts[ip];
    if (!h) return t.fail(`no truth for ${ip}`);
    const sent = [80, 81, 82].reduce((n, p) => n + v('packets_sent_total', p) - v('send_errors_total', p), 0);
    t.is(sent, h.requests, `${ip}: every SYN the host saw is a probe`);
    t.is(v('packets_recv_total', 80) + v('packets_recv_total', 81), h.replies, `${ip}: SYN-ACKs and RSTs`);
    t.is(v('closed_total', 81), v('packets_recv_total', 81), `${ip}: the RSTs are closed`);
    t.is(v('closed_total', 80), 0);
    t.is(v('packets_recv_total', 82), 0, `${ip}: silence is loss`);
    t.is(v('packets_sent_total', 82) - v('send_errors_total', 82), h.dropped, `${ip}: as many as the host dropped`);
    const mean = v('latency_seconds_total', 80) / v('packets_recv_total', 80);
    t.true(mean > 0.0025 && mean < 0.0045, `${ip}: SYN-ACK RTT ${mean} for 3 ms ± 0.5 ms applied`);
  }
});

test('1,000 simulated hosts at once: every host\'s counters match its truth', async (t) => {
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
  const batches = Array.from({ length: 4 }, (_, b) => ips.slice(b * 250, (b + 1) * 250));
  for (const batch of batches) await probe(exporter, batch.map((ip) => `target=${ip}`).join('&'));
  await sleep(4000);
  lab.exec(lab.prober, 'ip', ['route', 'add', 'unreachable', '198.18.204.0/22']);
  await sleep(800);
  const truth = await sim.truth();
  let checked = 0;
  for (const batch of batches) {
    const s = await probe(exporter, batch.map((ip) => `target=${ip}`).join('&'));
    for (const ip of batch) {
      const v = (name: string) => value(s, `icmp_probe_${name}`, { ip }) ?? -1;
      const h = truth.hosts[ip];
      if (!h || v('packets_recv_total') !== h.replies || v('packets_sent_total') - v('packets_recv_total') - v('send_errors_total') !== h.dropped) {
        t.fail(`${ip}: exporter sent ${v('packets_sent_total')} recv ${v('packets_recv_total')} send errors ${v('send_errors_total')}; truth ${JSON.stringify(h)}`);
        return;
      }
      checked += 1;
    }
  }
  t.is(checked, 1000);
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.is(value(m, 'icmp_active_probes'), 1000);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
});

test('reordered replies are each matched to their own probe', async (t) => {
  const lab = Lab.create(t);
  const ip = '198.18.203.30';
  const sim = await lab.startNetsim({ seed: 4, hosts: [{ prefix: `${ip}/32`, delay_ms: 2, reorder: 0.3, reorder_ms: 25 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '300']);
  await probe(exporter, `target=${ip}`);
  await sleep(2500);
  lab.exec(lab.prober, 'ip', ['route', 'add', 'unreachable', ip]);
  await sleep(400);
  const truth = await sim.truth();
  const s = await probe(exporter, `target=${ip}`);
  const h = truth.hosts[ip] as { replies: number; reordered: number; delay_sum_ns: number } | undefined;
  if (!h) return t.fail('no truth');
  t.true(h.reordered > 30, `${h.reordered} answers overtaken`);
  const recv = value(s, 'icmp_probe_packets_recv_total', { ip }) ?? -1;
  t.is(recv, h.replies);
  const mean = (value(s, 'icmp_probe_latency_seconds_total', { ip }) ?? 0) / recv;
  const trueMean = h.delay_sum_ns / h.replies / 1e9;
  t.true(Math.abs(mean - trueMean) < 1e-3, `each reply timed against its own probe: ${mean} vs ${trueMean}`);
});

test('answers the kernel drops for a full receive buffer are counted apart, and every answer is accounted for', async (t) => {
  const lab = Lab.create(t);
  // 20,000 probes a second with answers 2 s away: ~40,000 in flight, far more than the socket buffer holds.
  const sim = await lab.startNetsim({ seed: 5, hosts: [{ prefix: '198.18.192.0/18', delay_ms: 2000 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '250', '-timeout', '5000', '-maxpps', '30000']);
  const ips = Array.from({ length: 5000 }, (_, i) => `198.18.${192 + (i >> 8)}.${i & 0xff}`);
  for (let i = 0; i < ips.length; i += 250) await probe(exporter, ips.slice(i, i + 250).map((ip) => `target=${ip}`).join('&'));
  await sleep(2500);
  // The engine stops reading while the answers keep coming.
  const pid = exporter.child.pid ?? 0;
  process.kill(pid, 'SIGSTOP');
  await sleep(2500);
  process.kill(pid, 'SIGCONT');
  await sleep(1000);
  lab.exec(lab.prober, 'ip', ['route', 'replace', 'unreachable', '198.18.192.0/18']);
  await sleep(7500); // every probe sent is now final: answered, or past delay and timeout
  const truth = await sim.truth();
  const replies = Object.values(truth.hosts).reduce((n, h) => n + h.replies, 0);
  const m = parseSamples((await exporter.get('/metrics')).body);
  const drops = value(m, 'icmp_receive_queue_drops_total') ?? -1;
  const read = value(m, 'icmp_packets_recv_total') ?? -1;
  t.log(`${replies} answers: ${read} read, ${drops} dropped`);
  t.true(drops > 1000, `the buffer overflowed: ${drops} dropped`);
  t.is(read + drops, replies, `netsim answered ${replies}: ${read} read, ${drops} dropped in the socket buffer`);
  t.is(value(m, 'tcp_receive_queue_drops_total') ?? 0, 0);
});
