/**
 * Exact on every kernel: each test runs twice, with transmit stamps tied to probes by
 * SCM_TS_OPT_ID (Linux >= 6.13) and by the copy of the packet (what older kernels get, forced
 * with ICMP_EXPORTER_NO_TS_OPT_ID=1). Every wait is for a condition, with a deadline.
 */
import test from 'ava';
import { Lab, STAMP_PATHS, type ExporterProcess } from './helpers/lab.js';
import { parseSamples, sleep, value, type Sample } from './helpers/prom.js';
import { waitUntil } from './helpers/wait.js';

async function probe(e: ExporterProcess, query: string): Promise<Sample[]> {
  const r = await e.get(`/probe?${query}`);
  if (r.status !== 200) throw new Error(`${query.slice(0, 80)}: ${r.status} ${r.body}`);
  return parseSamples(r.body);
}

async function metrics(e: ExporterProcess): Promise<Sample[]> {
  return parseSamples((await e.get('/metrics')).body);
}

for (const [path, env] of STAMP_PATHS) {
  test(`${path}: a target whose sends the firewall refuses leaves every other target's stamps exact`, async (t) => {
    const lab = Lab.create(t);
    const exact = ['198.18.128.50', '2001:2:0:8000::50'];
    const refused = ['198.18.128.99', '2001:2:0:8000::99'];
    // Refused in OUTPUT: sendmsg fails with EPERM after the kernel took the probe's stamp id
    // (what made the old counter mirror give every later stamp to the wrong probe).
    lab.nft(
      lab.prober,
      `table inet lab {
        chain output {
          type filter hook output priority 0; policy accept;
          ip daddr ${refused[0]} counter drop
          ip6 daddr ${refused[1]} counter reject
        }
      }`,
    );
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], { env });
    const query = [...exact, ...refused].map((ip) => `target=${ip}`).join('&');
    let s: Sample[] = [];
    const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? 0;
    await waitUntil('150 final probes of each target', 30_000, async () => {
      s = await probe(exporter, query);
      const counts = [...exact, ...refused].map((ip) => v('packets_sent_total', ip));
      return [counts.every((n) => n >= 150), counts.join(' ')];
    });
    for (const ip of refused) {
      t.is(v('send_errors_total', ip), v('packets_sent_total', ip), `${ip}: every send refused`);
      t.is(v('packets_recv_total', ip), 0);
    }
    for (const ip of exact) {
      const sent = v('packets_sent_total', ip);
      t.is(v('packets_recv_total', ip), sent, `${ip}: nothing lost`);
      t.is(v('send_errors_total', ip), 0);
      const mean = v('latency_seconds_total', ip) / sent;
      t.true(mean > 0 && mean < 0.001, `${ip}: mean RTT ${mean} s against a kernel peer`);
    }
    const m = await metrics(exporter);
    t.is(value(m, 'icmp_tx_timestamp_matching_info', { method: env.ICMP_EXPORTER_NO_TS_OPT_ID ? 'packet' : 'opt_id' }), 1);
    t.is(value(m, 'icmp_tx_timestamps_unmatched_total'), 0, 'every stamp found its own probe');
    for (const reason of ['tx_missing', 'rx_missing', 'inconsistent']) {
      t.is(value(m, 'icmp_timestamp_fallback_total', { reason }), 0, `no ${reason} fallback`);
    }
    const answered = exact.reduce((n, ip) => n + v('packets_recv_total', ip), 0);
    t.true((value(m, 'icmp_rtt_clock_total', { clock: 'software' }) ?? 0) >= answered, 'every RTT from the kernel pair');
  });

  test(`${path}: a deadline never ends a later probe that reuses its in-flight slot`, async (t) => {
    // The case: 2 targets every 10 ms with a 20,480 ms timeout read 13 % loss after
    // 40 s, when the 12-bit generation of a slot's key wrapped onto a newer probe.
    const lab = Lab.create(t);
    const ips = ['198.18.128.60', '198.18.128.61'];
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '20480'], { env });
    const query = ips.map((ip) => `target=${ip}`).join('&');
    let s: Sample[] = [];
    const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? 0;
    // Past the first deadlines (20.5 s) by as many probes again: 4,096 more through the slot.
    await waitUntil('2,600 final probes of each target', 60_000, async () => {
      s = await probe(exporter, query);
      const counts = ips.map((ip) => v('packets_sent_total', ip));
      return [counts.every((n) => n >= 2600), counts.join(' ')];
    });
    for (const ip of ips) {
      t.is(v('packets_recv_total', ip), v('packets_sent_total', ip), `${ip}: no probe lost`);
    }
    const m = await metrics(exporter);
    t.is(value(m, 'icmp_replies_ignored_total', { reason: 'late' }), 0, 'no reply counted late');
  });

  test(`${path}: an engine that stops reading for longer than the timeout loses no answer that came in time`, async (t) => {
    const lab = Lab.create(t);
    // 500 hosts 100 ms away, each probed every 100 ms: 500 answers on their way at any moment,
    // more than one loop turn reads of a socket (256).
    const sim = await lab.startNetsim({ seed: 9, hosts: [{ prefix: '198.18.192.0/18', delay_ms: 100 }] });
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '300'], { env });
    const ips = Array.from({ length: 500 }, (_, i) => `198.18.${192 + (i >> 8)}.${i & 0xff}`);
    const batches = [ips.slice(0, 250), ips.slice(250)].map((b) => b.map((ip) => `target=${ip}`).join('&'));
    const all = async () => (await Promise.all(batches.map((q) => probe(exporter, q)))).flat();
    let s: Sample[] = [];
    const v = (name: string, ip: string) => value(s, `icmp_probe_${name}`, { ip }) ?? 0;
    await waitUntil('10 final probes of every host', 30_000, async () => {
      s = await all();
      const least = Math.min(...ips.map((ip) => v('packets_sent_total', ip)));
      return [least >= 10, `fewest ${least}`];
    });
    // The engine stands still (a busy host, a debugger) while the answers keep coming.
    const pid = exporter.child.pid ?? 0;
    process.kill(pid, 'SIGSTOP');
    await sleep(1000);
    process.kill(pid, 'SIGCONT');
    await waitUntil('10 more final probes of every host', 30_000, async () => {
      s = await all();
      const least = Math.min(...ips.map((ip) => v('packets_sent_total', ip)));
      return [least >= 20, `fewest ${least}`];
    });
    // No more probes reach the hosts; then every probe the hosts saw must end.
    lab.exec(lab.prober, 'ip', ['route', 'replace', 'unreachable', '198.18.192.0/18']);
    let truth = await sim.truth();
    await waitUntil('every probe the hosts saw to be final', 30_000, async () => {
      truth = await sim.truth();
      s = await all();
      const behind = ips.filter((ip) => v('packets_sent_total', ip) - v('send_errors_total', ip) !== truth.hosts[ip]?.requests);
      return [behind.length === 0, `${behind.length} hosts behind, e.g. ${behind[0]}`];
    });
    for (const ip of ips) {
      const h = truth.hosts[ip];
      if (!h || v('packets_recv_total', ip) !== h.replies) {
        t.fail(`${ip}: received ${v('packets_recv_total', ip)} of ${h?.replies} answers (${h?.requests} requests)`);
        return;
      }
    }
    const m = await metrics(exporter);
    t.is(value(m, 'icmp_replies_ignored_total', { reason: 'late' }), 0, 'no answer counted late');
    t.is(value(m, 'icmp_receive_queue_drops_total'), 0, 'the receive buffer held them');
  });
}
