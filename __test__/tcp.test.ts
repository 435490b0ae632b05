/** TCP SYN probes on the wire: open, closed, filtered and rejected ports against a kernel peer. */
import test from 'ava';
import { PEER_V4 } from './helpers/lab.js';
import { metrics, scrape, waitForProbes } from './helpers/probing.js';
import { parseSamples, promtoolProblems, value } from './helpers/prom.js';
import { CLOSED, FILTERED, OPEN, REJECTED, startTcpLab, tcpSeries as get, V4, V6 } from './helpers/tcp-peer.js';
import { sleep, waitFor } from './helpers/wait.js';

test('open, closed, filtered and rejected ports over IPv4 and IPv6, several in one request', async (t) => {
  const { lab, exporter } = await startTcpLab(t);
  const query = `target=${V4}&target=${V6}&tcp_port=${OPEN}&tcp_port=${CLOSED}&tcp_port=${FILTERED}&tcp_port=${REJECTED}&tcp_port=${OPEN}`;
  const first = await exporter.get(`/probe?${query}`);
  t.is(first.status, 200, first.body);
  // 11 final probes on each of the 8 series: more than 80 SYNs in all, more than 40 answered.
  await waitForProbes(exporter, query, 11, { proto: 'tcp' });
  const { body } = await exporter.get(`/probe?${query}`);
  t.is(promtoolProblems(body), '');
  t.notRegex(body, /^icmp_/m, 'a TCP request returns TCP series only');
  t.notRegex(body, /NaN/);
  const s = parseSamples(body);
  t.is(new Set(s.filter((x) => x.name === 'tcp_probe_packets_sent_total').map((x) => `${x.labels.ip}:${x.labels.tcp_port}`)).size, 8);
  for (const ip of [V4, V6]) {
    const open = get(s, 'packets_sent_total', ip, OPEN);
    t.true(open >= 10, `${ip}:${OPEN} probed ${open} times`);
    t.is(get(s, 'packets_recv_total', ip, OPEN), open, `${ip}: open port answers every SYN`);
    t.is(get(s, 'closed_total', ip, OPEN), 0);
    t.is(get(s, 'loss_ratio', ip, OPEN), 0);
    const rtt = get(s, 'latency_seconds', ip, OPEN);
    t.true(rtt > 0 && rtt < 0.001, `${ip}: SYN-ACK RTT ${rtt}`);

    const closed = get(s, 'packets_sent_total', ip, CLOSED);
    t.true(closed >= 10);
    t.is(get(s, 'packets_recv_total', ip, CLOSED), closed, `${ip}: a RST is an answer`);
    t.is(get(s, 'closed_total', ip, CLOSED), closed, `${ip}: and counted as closed`);
    t.true(get(s, 'latency_seconds', ip, CLOSED) > 0, 'with its RTT');

    const filtered = get(s, 'packets_sent_total', ip, FILTERED);
    t.true(filtered >= 5);
    t.is(get(s, 'packets_recv_total', ip, FILTERED), 0);
    t.is(get(s, 'loss_ratio', ip, FILTERED), 1, `${ip}: silence is loss`);
    t.is(value(s, 'tcp_probe_latency_seconds', { ip, tcp_port: String(FILTERED) }), undefined);

    const rejected = get(s, 'packets_sent_total', ip, REJECTED);
    t.true(rejected >= 5);
    t.is(get(s, 'packets_recv_total', ip, REJECTED), 0, `${ip}: an ICMP error is not an answer`);
    t.is(get(s, 'icmp_errors_total', ip, REJECTED), rejected, `${ip}: every SYN ended by its ICMP error`);
  }
  const m = await metrics(exporter);
  t.is(value(m, 'tcp_active_probes'), 8);
  t.is(value(m, 'icmp_active_probes'), 0);
  t.true((value(m, 'tcp_packets_sent_total') ?? 0) > 80);
  t.true((value(m, 'tcp_packets_recv_total') ?? 0) > 40);
  t.is(value(m, 'tcp_packets_error_total'), 0);
  t.is(value(m, 'tcp_timestamp_fallback_total', { reason: 'tx_missing' }), 0, 'RTTs from kernel stamps');
  t.is(value(m, 'tcp_timestamp_fallback_total', { reason: 'rx_missing' }), 0);
  // The prober's kernel reset every SYN-ACK: the peer saw the RSTs and keeps no half-open connection.
  await waitFor(() => lab.nftCounters(lab.peer).resets ?? 0, (n) => n > 10, { what: 'more than 10 RSTs at the peer' });
  // A SYN-RECV lives for the microseconds between the SYN and our kernel's RST; one that is
  // still there a moment later is a half-open connection kept.
  const synRecv = () => new Set(lab.exec(lab.peer, 'ss', ['-Htan', 'state', 'syn-recv']).split('\n').filter((l) => l.trim() !== ''));
  for (let i = 0; i < 3; i++) {
    const earlier = synRecv();
    await sleep(200);
    const kept = [...synRecv()].filter((l) => earlier.has(l));
    t.deepEqual(kept, [], 'no SYN-RECV stays on the peer');
  }
});

test('a retransmitted SYN-ACK (our RST lost) counts once and does not inflate the RTT', async (t) => {
  const { lab, exporter } = await startTcpLab(t, '200');
  // The prober's RSTs never leave: the peer retransmits each SYN-ACK about a second later.
  lab.nft(
    lab.prober,
    `table inet lab {
      counter dropped_resets {}
      chain output {
        type filter hook output priority 0; policy accept;
        tcp sport 1024-65535 tcp flags rst counter name "dropped_resets" drop
      }
    }`,
  );
  const query = `target=${V4}&tcp_port=${OPEN}`;
  await scrape(exporter, query);
  const ignoredOf = (m: Awaited<ReturnType<typeof metrics>>) =>
    ['foreign', 'duplicate', 'late'].reduce((n, reason) => n + (value(m, 'tcp_replies_ignored_total', { reason }) ?? 0), 0);
  // Ten probes, and five retransmitted SYN-ACKs back (the first comes about a second after its SYN).
  const { s, m, dropped } = await waitFor(
    async () => ({ s: await scrape(exporter, query), m: await metrics(exporter), dropped: lab.nftCounters(lab.prober).dropped_resets ?? 0 }),
    ({ s, m, dropped }) => get(s, 'packets_sent_total', V4, OPEN) >= 10 && ignoredOf(m) >= 5 && dropped >= 5,
    {
      what: '10 probes, 5 retransmitted SYN-ACKs ignored and 5 RSTs dropped',
      show: ({ s, m, dropped }) => `sent ${get(s, 'packets_sent_total', V4, OPEN)}, ignored ${ignoredOf(m)}, RSTs dropped ${dropped}`,
    },
  );
  const sent = get(s, 'packets_sent_total', V4, OPEN);
  t.true(sent >= 10, `${sent}`);
  t.is(get(s, 'packets_recv_total', V4, OPEN), sent, 'each probe answered once');
  const mean = get(s, 'latency_seconds_total', V4, OPEN) / sent;
  t.true(mean < 0.001, `mean RTT ${mean} s: retransmissions did not stretch it`);
  t.true(ignoredOf(m) >= 5, `${ignoredOf(m)} retransmitted SYN-ACKs ignored`);
  t.true(dropped >= 5);
});

test('IPv4 SYNs follow a change of the source address the kernel routes from', async (t) => {
  const { lab, exporter } = await startTcpLab(t);
  const query = `target=${V4}&tcp_port=${CLOSED}`;
  const counts = async () => {
    const s = await scrape(exporter, query);
    return { sent: get(s, 'packets_sent_total', V4, CLOSED), recv: get(s, 'packets_recv_total', V4, CLOSED) };
  };
  await scrape(exporter, query);
  const s0 = await waitForProbes(exporter, query, 6, { proto: 'tcp' });
  const before = { sent: get(s0, 'packets_sent_total', V4, CLOSED), recv: get(s0, 'packets_recv_total', V4, CLOSED) };
  t.true(before.recv > 5 && before.recv === before.sent, `answered from the first address: ${JSON.stringify(before)}`);
  // The kernel now writes 198.18.0.3 into the IP header; the SYN's checksum (ours) must cover it.
  lab.exec(lab.prober, 'ip', ['addr', 'add', '198.18.0.3/24', 'dev', lab.proberLink]);
  lab.exec(lab.prober, 'ip', ['route', 'replace', 'default', 'via', PEER_V4, 'src', '198.18.0.3']);
  lab.nft(
    lab.peer,
    `table inet lab {
      counter from_new {}
      chain count {
        type filter hook input priority -10;
        ip saddr 198.18.0.3 tcp dport ${CLOSED} counter name "from_new"
      }
    }`,
  );
  // The looked-up source is trusted for 5 s; then every SYN is answered again. Wait for a
  // second, after the change, in which at least 10 probes ended and every one was answered.
  let previous = await counts();
  const { mid, after } = await waitFor(
    async () => {
      const now = await counts();
      const pair = { mid: previous, after: now };
      previous = now;
      return pair;
    },
    ({ mid, after }) => after.sent - mid.sent >= 10 && after.recv - mid.recv === after.sent - mid.sent,
    { what: 'a second with at least 10 probes, all answered, after the source changed', everyMs: 1000, timeoutMs: 60_000, show: (p) => JSON.stringify(p) },
  );
  t.true(after.sent - mid.sent >= 10, `${after.sent - mid.sent} probes in a second`);
  t.is(after.recv - mid.recv, after.sent - mid.sent, 'answered again from the new address');
  t.true((lab.nftCounters(lab.peer).from_new ?? 0) >= after.sent - mid.sent, 'and they came from it');
});
