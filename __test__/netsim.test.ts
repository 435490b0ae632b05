/**
 * Accuracy against ground truth: netsim answers for simulated hosts with known loss, delay,
 * jitter, duplicates and ICMP errors, and counts what it did; the exporter's numbers must
 * match. Tolerances are statistical bounds, never timings. Each test probes until it has the
 * samples it needs, then freezes the sends (unreachable routes) and waits until every probe
 * either side knows of is final before it compares. Serial: the latency test compares
 * microseconds, and the three are the same kind of load.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { freezeSends, metrics, scrape, targets, waitForProbes, waitSettled } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test.serial('loss: counters match the truth exactly; the gauge is within a binomial bound', async (t) => {
  const lab = Lab.create(t);
  const shares = [0, 0.01, 0.05, 0.3, 1];
  const ips = shares.map((_, i) => `198.18.200.${i + 1}`);
  const sim = await lab.startNetsim({
    seed: 11,
    hosts: shares.map((loss, i) => ({ prefix: `${ips[i]}/32`, delay_ms: 1, loss })),
  });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '300']);
  const query = targets(ips);
  await scrape(exporter, query);
  // More than 300 requests per host; the window gauges are read on that scrape, while probing runs.
  const running = await waitForProbes(exporter, query, 301);
  freezeSends(lab, ips);
  const { truth, samples: final } = await waitSettled(exporter, sim, [query]);
  shares.forEach((share, i) => {
    const ip = ips[i] as string;
    const h = truth.hosts[ip];
    if (!h) return t.fail(`no truth for ${ip}`);
    const v = (name: string) => value(final, `icmp_probe_${name}`, { ip }) ?? -1;
    t.true(h.requests > 300, `${ip}: ${h.requests} requests`);
    t.is(v('packets_recv_total'), h.replies, `${ip}: every answered request is a received probe`);
    t.is(v('packets_sent_total') - v('packets_recv_total') - v('send_errors_total'), h.dropped, `${ip}: every drop is a lost probe`);
    const n = value(running, 'icmp_probe_samples_count', { ip }) ?? 0;
    const gauge = value(running, 'icmp_probe_loss_ratio', { ip }) ?? -1;
    const bound = 5 * Math.sqrt((share * (1 - share)) / n);
    t.true(Math.abs(gauge - share) <= bound, `${ip}: loss ratio ${gauge} within ${share} ± ${bound.toFixed(4)} over ${n} samples`);
  });
  t.is(truth.malformed, 0, 'the exporter sent nothing malformed');
});

test.serial('latency: mean and standard deviation, gauges and PromQL over counters, match the applied delays', async (t) => {
  const lab = Lab.create(t);
  const profiles = [
    { ip: '198.18.201.1', delay_ms: 1, jitter_ms: 0.2 },
    { ip: '198.18.201.2', delay_ms: 20, jitter_ms: 2 },
    { ip: '2001:2:0:c000::3', delay_ms: 200, jitter_ms: 20 },
  ];
  const ips = profiles.map((p) => p.ip);
  const sim = await lab.startNetsim({
    seed: 5,
    hosts: profiles.map((p) => ({ prefix: p.ip.includes(':') ? `${p.ip}/128` : `${p.ip}/32`, delay_ms: p.delay_ms, jitter_ms: p.jitter_ms, jitter: 'normal' })),
  });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '1000']);
  const query = targets(ips);
  await scrape(exporter, query);
  // The window gauges are read while probing runs, on a full window (after the freeze the
  // window holds failed sends).
  const running = await waitForProbes(exporter, query, 250);
  freezeSends(lab, ips);
  // netsim books an answer's delay when it writes it: the truth's sums are whole once its queue is empty.
  const { truth, samples: s } = await waitSettled(exporter, sim, [query]);
  for (const p of profiles) {
    const h = truth.hosts[p.ip];
    if (!h) return t.fail(`no truth for ${p.ip}`);
    const v = (name: string) => value(s, `icmp_probe_${name}`, { ip: p.ip }) ?? NaN;
    const recv = v('packets_recv_total');
    t.is(recv, h.replies);
    const trueMean = h.delay_sum_ns / h.replies / 1e9;
    const trueSd = Math.sqrt(Math.max(0, h.delay_sq_sum_ns2 / h.replies - (h.delay_sum_ns / h.replies) ** 2)) / 1e9;
    // PromQL over the counters (the README's formulas with increase() over the whole life).
    const mean = v('latency_seconds_total') / recv;
    const sd = Math.sqrt(v('latency_squared_seconds_total') / recv - mean ** 2);
    // The truth holds the delay each answer really got inside netsim (its scheduling lateness
    // included); the kernel and the TUN device add tens of microseconds on top.
    t.log(p.ip, 'mean − truth (µs)', ((mean - trueMean) * 1e6).toFixed(1), 'sd', (sd * 1e6).toFixed(1), (trueSd * 1e6).toFixed(1), 'late', truth.late_sum_ns / truth.sent / 1e3, truth.late_max_ns / 1e3);
    // What the truth cannot see is how late netsim reads each request, which the exporter
    // rightly measures. netsim does measure how late it writes (the same thread's wake-up
    // latency, on the same machine at the same time): that bounds the allowance.
    const lateMean = truth.late_sum_ns / truth.sent / 1e9;
    const lateSd = Math.sqrt(Math.max(0, truth.late_sq_sum_ns2 / truth.sent / 1e18 - lateMean ** 2));
    const READ_SLACK = 3 * lateMean + 100e-6;
    t.true(mean - trueMean >= 0 && mean - trueMean < READ_SLACK, `${p.ip}: mean ${mean} vs applied ${trueMean}`);
    const expectedSd = Math.sqrt(trueSd ** 2 + lateSd ** 2);
    t.true(sd > 0.95 * trueSd - 50e-6 && sd < 1.05 * expectedSd + 2 * lateSd + 50e-6, `${p.ip}: sd ${sd} vs applied ${trueSd} (+ netsim's ${lateSd})`);
    // The window gauges (last samples of the same distribution): within 5 standard errors.
    const g = (name: string) => value(running, `icmp_probe_${name}`, { ip: p.ip }) ?? NaN;
    const n = g('samples_count');
    const gaugeMean = g('latency_seconds');
    t.true(Math.abs(gaugeMean - trueMean) < (5 * trueSd) / Math.sqrt(n) + READ_SLACK, `${p.ip}: gauge mean ${gaugeMean} over ${n}`);
    const gaugeSd = g('standard_deviation_seconds');
    // The window is the last few seconds: it may miss the rare late outliers in the whole-run
    // truth, so its floor is the configured jitter (netsim's lateness only adds to it).
    const configuredSd = p.jitter_ms / 1000;
    t.true(gaugeSd > 0.75 * configuredSd && gaugeSd < 1.25 * expectedSd + 2 * lateSd + 50e-6, `${p.ip}: gauge sd ${gaugeSd} (configured ${configuredSd}, truth ${trueSd})`);
  }
});

test.serial('duplicates never count twice; ICMP errors are never replies', async (t) => {
  const lab = Lab.create(t);
  const [dup, err, err6] = ['198.18.202.1', '198.18.202.2', '2001:2:0:c000::22'];
  const sim = await lab.startNetsim({
    seed: 9,
    hosts: [
      { prefix: `${dup}/32`, delay_ms: 2, duplicate: 0.5 },
      { prefix: `${err}/32`, delay_ms: 2, icmp_error: 0.4 },
      { prefix: `${err6}/128`, delay_ms: 2, icmp_error: 0.4, error: 'time_exceeded' },
    ],
  });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '300']);
  const ips = [dup, err, err6];
  const query = targets(ips);
  await scrape(exporter, query);
  // 250 probes each: about 125 duplicated answers, and about 100 errors per error host.
  await waitForProbes(exporter, query, 250);
  freezeSends(lab, ips);
  const { truth, samples: s } = await waitSettled(exporter, sim, [query]);
  const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? -1;
  const d = truth.hosts[dup];
  if (!d) return t.fail('no truth');
  t.true(d.duplicates > 50);
  t.is(v('packets_recv_total', dup), d.replies, 'each answer once, whatever its copies');
  for (const ip of [err, err6]) {
    const h = truth.hosts[ip];
    if (!h) return t.fail('no truth');
    t.true(h.errors > 50, `${ip}: ${h.errors} errors`);
    t.is(v('icmp_errors_total', ip), h.errors, `${ip}: every ICMP error ended its probe`);
    t.is(v('packets_recv_total', ip), h.replies, `${ip}: and none counted as a reply`);
  }
  // netsim has written every copy (waitSettled); wait for the engine to have read them all.
  const duplicates = (m: Awaited<ReturnType<typeof metrics>>) => value(m, 'icmp_replies_ignored_total', { reason: 'duplicate' }) ?? 0;
  const m = await waitFor(() => metrics(exporter), (m) => duplicates(m) >= d.duplicates, {
    what: `the ${d.duplicates} copies netsim sent to be counted as duplicates`,
    show: (m) => `duplicate ${duplicates(m)}, late ${value(m, 'icmp_replies_ignored_total', { reason: 'late' })}`,
  });
  t.is(duplicates(m), d.duplicates, 'every copy counted once as a duplicate');
});
