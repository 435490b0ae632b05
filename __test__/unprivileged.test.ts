/** Without CAP_NET_RAW: unprivileged ICMP datagram sockets where ping_group_range allows them. */
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { logMessages } from './helpers/log.js';
import { CLI, Lab, NOBODY, SYSTEM_ENV } from './helpers/lab.js';
import { metrics, waitForProbes } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test('as nobody, with ping_group_range open: ICMP over v4 and v6 with kernel stamps; tcp_port is a 400', async (t) => {
  const lab = Lab.create(t);
  lab.exec(lab.prober, 'sysctl', ['-qw', 'net.ipv4.ping_group_range=0 2147483647']);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], { unprivileged: true });
  const notice = /no CAP_NET_RAW: ICMP probes use unprivileged datagram sockets/;
  // stderr may trail stdout
  await waitFor(() => exporter.stderr, (e) => notice.test(e), { what: 'the datagram-socket notice on stderr' });
  t.regex(exporter.stderr, notice, 'the mode is logged');
  const query = 'target=198.18.128.30&target=2001:2:0:8000::30';
  t.is((await exporter.get(`/probe?${query}`)).status, 200);
  const s = await waitForProbes(exporter, query, 11);
  for (const ip of ['198.18.128.30', '2001:2:0:8000::30']) {
    const sent = value(s, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 10, `${ip}: ${sent}`);
    t.is(value(s, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: no loss`);
    const mean = value(s, 'icmp_probe_latency_seconds', { ip }) ?? 1;
    t.true(mean > 0 && mean < 0.001, `${ip}: ${mean}`);
  }
  const m = await metrics(exporter);
  t.is(value(m, 'icmp_socket_mode_info', { mode: 'datagram' }), 1, 'the mode is exported');
  t.is(value(m, 'icmp_timestamp_fallback_total', { reason: 'tx_missing' }), 0, 'kernel TX stamps on ping sockets too');
  t.is(value(m, 'icmp_timestamp_fallback_total', { reason: 'rx_missing' }), 0);
  const tcp = await exporter.get('/probe?target=198.18.128.30&tcp_port=80');
  t.is(tcp.status, 400);
  t.regex(tcp.body, /SYN probing needs CAP_NET_RAW/);
});

test('answers whose transmit stamp never comes count, with the monotonic RTT: never loss', async (t) => {
  const lab = Lab.create(t);
  // Without CAP_NET_RAW and with net.core.tstamp_allow_data 0, the kernel gives a ping socket
  // no transmit stamp that carries the packet's copy: on the packet path (as before Linux 6.13)
  // no probe ever gets its transmit stamp.
  lab.exec(lab.prober, 'sysctl', ['-qw', 'net.ipv4.ping_group_range=0 2147483647', 'net.core.tstamp_allow_data=0']);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], {
    unprivileged: true,
    env: { ICMP_EXPORTER_NO_TS_OPT_ID: '1' },
  });
  const query = 'target=198.18.128.31&target=2001:2:0:8000::31';
  const s = await waitForProbes(exporter, query, 30);
  let answered = 0;
  for (const ip of ['198.18.128.31', '2001:2:0:8000::31']) {
    const sent = value(s, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.is(value(s, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: every probe answered, none lost`);
    const mean = value(s, 'icmp_probe_latency_seconds', { ip }) ?? 1;
    t.true(mean > 0 && mean < 0.01, `${ip}: monotonic RTT ${mean} s`);
    answered += sent;
  }
  const m = await metrics(exporter);
  const missing = value(m, 'icmp_timestamp_fallback_total', { reason: 'tx_missing' }) ?? 0;
  t.true(missing >= answered, `${missing} answers without a transmit stamp for ${answered} probes`);
  t.is(value(m, 'icmp_rtt_clock_total', { clock: 'software' }), 0, 'no kernel pair');
  t.true((value(m, 'icmp_rtt_clock_total', { clock: 'monotonic' }) ?? 0) >= answered);
});

test('as nobody, with ping_group_range closed: a start-up error naming the capability and the sysctl', (t) => {
  const lab = Lab.create(t);
  // Closed is a new namespace's default; said here so that nothing else decides it.
  lab.exec(lab.prober, 'sysctl', ['-qw', 'net.ipv4.ping_group_range=1 0']);
  const r = spawnSync('ip', ['netns', 'exec', lab.prober, 'setpriv', ...NOBODY, process.execPath, CLI, '-listen', '127.0.0.1:0'], {
    encoding: 'utf8',
    env: SYSTEM_ENV,
    timeout: 20_000,
  });
  t.is(r.status, 1, r.stderr);
  t.regex(logMessages(r.stderr), /raw ICMP sockets need CAP_NET_RAW/);
  t.regex(logMessages(r.stderr), /net\.ipv4\.ping_group_range is "1 0", which does not include group 65534/);
});

test('as nobody: probe options reach the wire from ping sockets too (IPv4 and IPv6)', async (t) => {
  const lab = Lab.create(t);
  lab.exec(lab.prober, 'sysctl', ['-qw', 'net.ipv4.ping_group_range=0 2147483647']);
  lab.nft(
    lab.peer,
    `table inet lab {
      counter ttl5_tos8_size200 {}
      counter hop5_tclass8_size200 {}
      chain pre {
        type filter hook prerouting priority -500;
        ip daddr 198.18.128.32 icmp type echo-request ip ttl 5 @nh,8,8 8 ip length 228 counter name ttl5_tos8_size200
        ip6 daddr 2001:2:0:8000::32 icmpv6 type echo-request ip6 hoplimit 5 @nh,4,8 8 ip6 length 208 counter name hop5_tclass8_size200
      }
    }`,
  );
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300'], { unprivileged: true });
  const query = 'target=198.18.128.32&target=2001:2:0:8000::32&ttl=5&tos=8&size=200';
  const s = await waitForProbes(exporter, query, 11);
  const nft = lab.nftCounters(lab.peer);
  for (const [ip, counter] of [
    ['198.18.128.32', 'ttl5_tos8_size200'],
    ['2001:2:0:8000::32', 'hop5_tclass8_size200'],
  ] as const) {
    const sent = value(s, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.is(value(s, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: answered`);
    t.true((nft[counter] ?? 0) >= sent && sent > 10, `${ip}: ${nft[counter]} packets with the options for ${sent} probes`);
  }
});
