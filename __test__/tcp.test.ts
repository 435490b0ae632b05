/** TCP SYN probes on the wire: open, closed, filtered and rejected ports against a kernel peer. */
import test from 'ava';
import { Lab, PEER_V4 } from './helpers/lab.js';
import { parseSamples, promtoolProblems, sleep, value, type Sample } from './helpers/prom.js';

const V4 = '198.18.128.80';
const V6 = '2001:2:0:8000::80';
const OPEN = 8080;
const CLOSED = 8081;
const FILTERED = 8082;
const REJECTED = 8083;

/** A listener on every address of the peer (AnyIP ranges included) that never accepts. */
const LISTEN = `
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", ${OPEN}))
s.listen(1024)
time.sleep(120)
`;

function peerFirewall(lab: Lab): void {
  lab.nft(
    lab.peer,
    `table inet lab {
      counter resets {}
      chain input {
        type filter hook input priority 0; policy accept;
        tcp dport ${FILTERED} drop
        tcp dport ${REJECTED} meta nfproto ipv4 reject with icmp type admin-prohibited
        tcp dport ${REJECTED} meta nfproto ipv6 reject with icmpv6 type admin-prohibited
        tcp dport ${OPEN} tcp flags rst counter name "resets"
      }
    }`,
  );
  lab.exec(lab.peer, 'sysctl', ['-qw', 'net.ipv4.icmp_ratelimit=0', 'net.ipv6.icmp.ratelimit=0']);
}

async function startLab(t: Parameters<typeof Lab.create>[0], interval = '50') {
  const lab = Lab.create(t);
  peerFirewall(lab);
  lab.spawn(lab.peer, 'python3', ['-c', LISTEN]);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', interval, '-timeout', '300']);
  return { lab, exporter };
}

const get = (samples: Sample[], name: string, ip: string, port: number) =>
  value(samples, `tcp_probe_${name}`, { ip, tcp_port: String(port) }) ?? 0;

test('open, closed, filtered and rejected ports over IPv4 and IPv6, several in one request', async (t) => {
  const { lab, exporter } = await startLab(t);
  const query = `/probe?target=${V4}&target=${V6}&tcp_port=${OPEN}&tcp_port=${CLOSED}&tcp_port=${FILTERED}&tcp_port=${REJECTED}&tcp_port=${OPEN}`;
  const first = await exporter.get(query);
  t.is(first.status, 200, first.body);
  await sleep(1500);
  const { body } = await exporter.get(query);
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
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.is(value(m, 'tcp_active_probes'), 8);
  t.is(value(m, 'icmp_active_probes'), 0);
  t.true((value(m, 'tcp_packets_sent_total') ?? 0) > 80);
  t.true((value(m, 'tcp_packets_recv_total') ?? 0) > 40);
  t.is(value(m, 'tcp_packets_error_total'), 0);
  t.is(value(m, 'tcp_timestamp_fallback_total', { reason: 'tx_missing' }), 0, 'RTTs from kernel stamps');
  t.is(value(m, 'tcp_timestamp_fallback_total', { reason: 'rx_missing' }), 0);
  // The prober's kernel reset every SYN-ACK: the peer saw the RSTs and keeps no half-open connection.
  t.true((lab.nftCounters(lab.peer).resets ?? 0) > 10, 'RSTs reached the peer');
  for (let i = 0; i < 3; i++) {
    t.is(lab.exec(lab.peer, 'ss', ['-Htan', 'state', 'syn-recv']).trim(), '', 'no SYN-RECV on the peer');
    await sleep(100);
  }
});

test('a busy TCP flow through the prober does not disturb SYN probes', async (t) => {
  const { lab, exporter } = await startLab(t, '20');
  // A sink in the peer and a sender in the prober moving data as fast as they can.
  lab.spawn(lab.peer, 'python3', [
    '-c',
    'import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(1)\nc,_=s.accept()\nwhile c.recv(1<<20): pass',
  ]);
  await sleep(300);
  lab.spawn(lab.prober, 'python3', [
    '-c',
    `import socket, time\ns=socket.create_connection(("${PEER_V4}", 9000))\nend=time.time()+4\nb=b"x"*(1<<16)\nwhile time.time()<end: s.sendall(b)`,
  ]);
  const txBytes = () =>
    (JSON.parse(lab.exec(lab.prober, 'ip', ['-j', '-s', 'link', 'show', 'dev', lab.proberLink])) as Array<{
      stats64: { tx: { bytes: number } };
    }>)[0]?.stats64.tx.bytes ?? 0;
  const before = txBytes();
  const query = `/probe?target=${V4}&target=${V6}&tcp_port=${OPEN}`;
  await exporter.get(query);
  await sleep(2500);
  t.true(txBytes() - before > 50e6, `the flow moved ${((txBytes() - before) / 1e6).toFixed(0)} MB meanwhile`);
  const s = parseSamples((await exporter.get(query)).body);
  for (const ip of [V4, V6]) {
    const sent = get(s, 'packets_sent_total', ip, OPEN);
    t.true(sent >= 50, `${ip}: ${sent}`);
    t.is(get(s, 'packets_recv_total', ip, OPEN), sent, `${ip}: no loss beside the flow`);
  }
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.is(value(m, 'tcp_replies_ignored_total', { reason: 'foreign' }), 0, 'the flow never reached the engine');
  t.is(value(m, 'tcp_packets_malformed_total'), 0);
});

test('a retransmitted SYN-ACK (our RST lost) counts once and does not inflate the RTT', async (t) => {
  const { lab, exporter } = await startLab(t, '200');
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
  const query = `/probe?target=${V4}&tcp_port=${OPEN}`;
  await exporter.get(query);
  await sleep(3000);
  const s = parseSamples((await exporter.get(query)).body);
  const sent = get(s, 'packets_sent_total', V4, OPEN);
  t.true(sent >= 10, `${sent}`);
  t.is(get(s, 'packets_recv_total', V4, OPEN), sent, 'each probe answered once');
  const mean = get(s, 'latency_seconds_total', V4, OPEN) / sent;
  t.true(mean < 0.001, `mean RTT ${mean} s: retransmissions did not stretch it`);
  const m = parseSamples((await exporter.get('/metrics')).body);
  const ignored = ['foreign', 'duplicate', 'late'].reduce((n, reason) => n + (value(m, 'tcp_replies_ignored_total', { reason }) ?? 0), 0);
  t.true(ignored >= 5, `${ignored} retransmitted SYN-ACKs ignored`);
  t.true((lab.nftCounters(lab.prober).dropped_resets ?? 0) >= 5);
});

test('IPv4 SYNs follow a change of the source address the kernel routes from', async (t) => {
  const { lab, exporter } = await startLab(t);
  const query = `/probe?target=${V4}&tcp_port=${CLOSED}`;
  const counts = async () => {
    const s = parseSamples((await exporter.get(query)).body);
    return { sent: get(s, 'packets_sent_total', V4, CLOSED), recv: get(s, 'packets_recv_total', V4, CLOSED) };
  };
  await exporter.get(query);
  await sleep(600);
  const before = await counts();
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
  await sleep(7000); // the looked-up source is trusted for 5 s
  const mid = await counts();
  await sleep(1000);
  const after = await counts();
  t.true(after.sent - mid.sent >= 10, `${after.sent - mid.sent} probes in a second`);
  t.is(after.recv - mid.recv, after.sent - mid.sent, 'answered again from the new address');
  t.true((lab.nftCounters(lab.peer).from_new ?? 0) >= after.sent - mid.sent, 'and they came from it');
});
