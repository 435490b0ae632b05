/**
 * More ground truth from netsim: a step change in loss, late replies, TCP ports, reordering.
 * (The heavy ones, 1,000 hosts and a flooded receive buffer, are in heavy/netsim-load.test.ts.)
 * Each test waits for the state it judges (counters reached, every probe final) instead of
 * sleeping. The step-change test is serial: it is the one that cares about timing, because
 * netsim's change comes at a fixed time after netsim starts.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { freezeSends, metrics, scrape, targets, waitForProbes, waitForScrape, waitSettled } from './helpers/probing.js';
import { value, type Sample } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test.serial('reading never changes the window: a target scraped every 50 ms and one read only at the end show the same gauges', async (t) => {
  const lab = Lab.create(t);
  // Two hosts with the same profile, probed by one exporter: 250+ answered, then 120 lost (loss
  // on from 5 s to 6.2 s of netsim's clock), then answered again. Scraped often, the window's
  // split of more than 100 lost sticks; a target read only at the end must show the same
  // numbers (they used to depend on when someone read: once, at the end, the split came out
  // over 150 samples with loss 0.8 instead of 30 with loss 0).
  const [often, once] = ['198.18.203.40', '198.18.203.41'];
  const prefix = '198.18.203.40/31';
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '100']);
  await lab.startNetsim({
    hosts: [{ prefix, delay_ms: 1 }],
    changes: [
      { at_ms: 5000, prefix, loss: 1 },
      { at_ms: 6200, prefix, loss: 0 },
    ],
  });
  // Both start together (one request); from then on only `often` is read, every 50 ms.
  await scrape(exporter, targets([often, once]));
  const v = (s: Sample[], name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? -1;
  const lost = (s: Sample[]) => v(s, 'packets_sent_total', often) - v(s, 'packets_recv_total', often);
  const full = await waitForScrape(exporter, `target=${often}`, (s) => v(s, 'samples_count', often) === 250 || lost(s) > 0, {
    what: 'a full window before netsim turns loss on at 5 s',
    everyMs: 50,
  });
  t.is(lost(full), 0, 'nothing lost before the change');
  const lossPhase = await waitForScrape(exporter, `target=${often}`, (s) => lost(s) >= 110 && v(s, 'loss_ratio', often) === 0, {
    what: 'the loss phase over and answers coming again',
    everyMs: 50,
  });
  const recvBack = v(lossPhase, 'packets_recv_total', often);
  await waitForScrape(exporter, `target=${often}`, (s) => v(s, 'packets_recv_total', often) >= recvBack + 30, {
    what: '30 answers since the loss phase',
    everyMs: 50,
  });
  const both = await scrape(exporter, targets([often, once]));
  for (const name of ['samples_count', 'loss_ratio']) {
    const [a, b] = [v(both, name, often), v(both, name, once)];
    // The two hosts' probes go 5 ms apart, so one probe either side of a change may differ.
    t.true(Math.abs(a - b) <= (name === 'samples_count' ? 2 : 0.07), `${name}: ${a} read often, ${b} read once`);
  }
  t.true(v(both, 'samples_count', once) < 100, `the split after the loss phase sticks for the target read once too (${v(both, 'samples_count', once)})`);
});

test.serial('a step change in loss narrows the window gauges to the samples after it', async (t) => {
  const lab = Lab.create(t);
  const ip = '198.18.203.1';
  const query = `target=${ip}`;
  const v = (s: Sample[], name: string) => value(s, `icmp_probe_${name}`, { ip });
  // netsim switches the host to 100 % loss 5 s after it starts (its only way to change a
  // profile): the exporter starts first, so that the probes start with netsim's clock and
  // 250 probes at 10 ms (2.5 s) fill the window well before the change.
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '100']);
  await lab.startNetsim({ hosts: [{ prefix: `${ip}/32`, delay_ms: 1 }], changes: [{ at_ms: 5000, prefix: `${ip}/32`, loss: 1 }] });
  await scrape(exporter, query);
  // A window full of answered probes. Should the machine be too slow to fill it before the
  // change, losses come first and this wait fails (saying so) rather than judge a partial window.
  const before = await waitForScrape(exporter, query, (s) => v(s, 'samples_count') === 250 || (v(s, 'packets_sent_total') ?? 0) !== v(s, 'packets_recv_total'), {
    what: 'a full window (250 samples) before netsim turns loss on at 5 s',
  });
  t.is(v(before, 'packets_recv_total'), v(before, 'packets_sent_total'), 'nothing lost before the change');
  t.is(v(before, 'loss_ratio'), 0);
  t.is(v(before, 'samples_count'), 250, 'a full window before the change');
  // Judged on the first scrape that shows at least 100 probes lost (all of them after the
  // change): the window then covers them, and stays narrower than the whole 250.
  const after = await waitForScrape(exporter, query, (s) => (v(s, 'packets_sent_total') ?? 0) - (v(s, 'packets_recv_total') ?? 0) >= 100, {
    what: '≥ 100 probes lost since the change',
  });
  const n = v(after, 'samples_count') ?? 0;
  t.is(v(after, 'loss_ratio'), 1, 'the gauges cover only the samples after the change');
  t.true(n >= 100 && n < 250, `${n} samples in the window`);
  t.is(v(after, 'latency_seconds'), undefined, 'no latency without replies');
  const lost = (v(after, 'packets_sent_total') ?? 0) - (v(after, 'packets_recv_total') ?? 0);
  // Exact: answers take 1 ms and a loss is final only at the 100 ms timeout, so every answered
  // probe is recorded before the first lost one and the outcomes form a clean step; the change
  // rule's split is exact, and the counters and the window come from one snapshot.
  t.is(n, lost, `the window is the ${lost} probes lost since the change`);
});

test('replies later than the timeout are loss, and never disturb a later probe or another target', async (t) => {
  const lab = Lab.create(t);
  const [slow, fast] = ['198.18.203.10', '198.18.203.11'];
  await lab.startNetsim({ hosts: [{ prefix: `${slow}/32`, delay_ms: 250 }, { prefix: `${fast}/32`, delay_ms: 1 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '100']);
  const query = targets([slow, fast]);
  await scrape(exporter, query);
  const s = await waitForProbes(exporter, query, 51);
  const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? -1;
  const slowSent = v('packets_sent_total', slow);
  t.true(slowSent > 50);
  t.is(v('packets_recv_total', slow), 0, 'every reply came after its timeout');
  t.is(v('loss_ratio', slow), 1);
  t.is(v('packets_recv_total', fast), v('packets_sent_total', fast), 'the other target lost nothing');
  // netsim answers every probe of the slow host 250 ms after it left: each of the probes
  // final at that scrape gets its answer, late. Wait for all of them to be counted.
  const late = (m: Sample[]) => value(m, 'icmp_replies_ignored_total', { reason: 'late' }) ?? 0;
  const m = await waitFor(() => metrics(exporter), (m) => late(m) >= slowSent, {
    what: `the late answers of the ${slowSent} slow probes to be counted as late`,
    show: (m) => `late ${late(m)}`,
  });
  // And no more late answers than slow probes that had ended by then (/metrics was read first).
  const slowLater = value(await scrape(exporter, query), 'icmp_probe_packets_sent_total', { ip: slow }) ?? 0;
  t.true(late(m) >= slowSent && late(m) <= slowLater, `${late(m)} late replies for ${slowSent}…${slowLater} slow probes`);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
  const fastNow = await scrape(exporter, query);
  t.is(value(fastNow, 'icmp_probe_packets_recv_total', { ip: fast }), value(fastNow, 'icmp_probe_packets_sent_total', { ip: fast }), 'the late answers disturbed no probe of the other target');
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
  await scrape(exporter, query);
  await waitForProbes(exporter, query, 50, { proto: 'tcp' });
  freezeSends(lab, [v4, v6]);
  const { truth, samples: s } = await waitSettled(exporter, sim, [query], 'tcp');
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

test('reordered replies are each matched to their own probe', async (t) => {
  const lab = Lab.create(t);
  const ip = '198.18.203.30';
  const sim = await lab.startNetsim({ seed: 4, hosts: [{ prefix: `${ip}/32`, delay_ms: 2, reorder: 0.3, reorder_ms: 25 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '300']);
  const query = `target=${ip}`;
  await scrape(exporter, query);
  // 200 probes: about 60 held back (30 %).
  await waitForProbes(exporter, query, 200);
  freezeSends(lab, [ip]);
  const { truth, samples: s } = await waitSettled(exporter, sim, [query]);
  const h = truth.hosts[ip];
  if (!h) return t.fail('no truth');
  t.true(h.reordered > 30, `${h.reordered} answers overtaken`);
  const recv = value(s, 'icmp_probe_packets_recv_total', { ip }) ?? -1;
  t.is(recv, h.replies);
  const mean = (value(s, 'icmp_probe_latency_seconds_total', { ip }) ?? 0) / recv;
  const trueMean = h.delay_sum_ns / h.replies / 1e9;
  t.true(Math.abs(mean - trueMean) < 1e-3, `each reply timed against its own probe: ${mean} vs ${trueMean}`);
});
