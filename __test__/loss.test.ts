/**
 * Loss against the truth: the peer drops a known share of echo requests (nftables numgen)
 * and counts what it dropped and what it answered; the exporter's counters must match exactly.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { freezeSends, metrics, scrape, targets, waitAllFinal, waitForProbes, waitForScrape } from './helpers/probing.js';
import { value } from './helpers/prom.js';

const TARGET = '198.18.130.1';
const SHARE = 0.3;

test('loss between 0 and 1 matches what the peer dropped, exactly', async (t) => {
  const lab = Lab.create(t);
  lab.nft(
    lab.peer,
    `table inet lab {
      counter dropped {}
      counter answered {}
      chain input {
        type filter hook input priority 0; policy accept;
        ip daddr ${TARGET} icmp type echo-request numgen random mod 100 < ${SHARE * 100} counter name "dropped" drop
        ip daddr ${TARGET} icmp type echo-request counter name "answered"
      }
    }`,
  );
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '10', '-timeout', '300']);
  const query = `target=${TARGET}`;
  await scrape(exporter, query);
  // A full window (and more than 200 probes for the share below).
  const running = await waitForProbes(exporter, query, 250);

  // Window gauge: a binomial bound (5 standard deviations) around the share, over the samples it covers.
  const n = value(running, 'icmp_probe_samples_count', { ip: TARGET }) ?? 0;
  const gauge = value(running, 'icmp_probe_loss_ratio', { ip: TARGET }) ?? -1;
  t.true(n >= 25, `window of ${n} samples`);
  const bound = 5 * Math.sqrt((SHARE * (1 - SHARE)) / n);
  t.true(Math.abs(gauge - SHARE) <= bound, `loss ratio ${gauge} within ${SHARE} ± ${bound.toFixed(3)} (n=${n})`);

  // Freeze: the prober can no longer send to the target (each attempt ends at once as a send
  // error). Once a send has been refused, wait until every probe that left is final. The
  // peer counts a request when it arrives, before the exporter can see its answer or its
  // timeout: its counters are complete by then.
  freezeSends(lab, [TARGET]);
  await waitForScrape(exporter, query, (s) => (value(s, 'icmp_probe_send_errors_total', { ip: TARGET }) ?? 0) > 0, { what: 'a send refused after the freeze' });
  const { samples } = await waitAllFinal(exporter, [query]);
  const truth = lab.nftCounters(lab.peer);
  const sent = value(samples, 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  const recv = value(samples, 'icmp_probe_packets_recv_total', { ip: TARGET }) ?? 0;
  const sendErrors = value(samples, 'icmp_probe_send_errors_total', { ip: TARGET }) ?? 0;
  const dropped = truth.dropped ?? -1;
  const answered = truth.answered ?? -1;
  t.true(sendErrors > 0, 'the freeze shows as send errors');
  t.is(recv, answered, 'every answered request is a received probe');
  t.is(sent - recv - sendErrors, dropped, 'every dropped request is a lost probe');
  const total = dropped + answered;
  const observed = dropped / total;
  t.true(total > 200, `${total} probes`);
  t.true(Math.abs(observed - SHARE) <= 5 * Math.sqrt((SHARE * (1 - SHARE)) / total), `dropped share ${observed}`);
  t.is(value(samples, 'icmp_probe_icmp_errors_total', { ip: TARGET }), 0);
  t.is(value(await metrics(exporter), 'icmp_replies_ignored_total', { reason: 'late' }), 0);
});

test('ICMP errors end probes as lost, never as replies', async (t) => {
  const lab = Lab.create(t);
  const v4 = '198.18.131.1';
  const v6 = '2001:2:0:8000::99';
  // The peer's kernel would otherwise rate-limit its ICMP errors (most probes would time out).
  lab.exec(lab.peer, 'sysctl', ['-qw', 'net.ipv4.icmp_ratelimit=0', 'net.ipv6.icmp.ratelimit=0']);
  lab.nft(
    lab.peer,
    `table inet lab {
      chain input {
        type filter hook input priority 0; policy accept;
        ip daddr ${v4} icmp type echo-request reject with icmp type host-unreachable
        ip6 daddr ${v6} icmpv6 type echo-request reject with icmpv6 type addr-unreachable
      }
    }`,
  );
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const query = targets([v4, v6]);
  await scrape(exporter, query);
  const samples = await waitForProbes(exporter, query, 11);
  for (const ip of [v4, v6]) {
    const sent = value(samples, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 10, `${ip}: ${sent}`);
    t.is(value(samples, 'icmp_probe_packets_recv_total', { ip }), 0);
    t.is(value(samples, 'icmp_probe_icmp_errors_total', { ip }), sent, `${ip}: every probe ended by its ICMP error`);
    t.is(value(samples, 'icmp_probe_loss_ratio', { ip }), 1);
  }
  const m = await metrics(exporter);
  t.true((value(m, 'icmp_error_messages_total', { matched: 'true' }) ?? 0) > 20);
  t.is(value(m, 'icmp_error_messages_total', { matched: 'false' }), 0);
});
