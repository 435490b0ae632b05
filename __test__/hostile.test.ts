/** Packets from the network that are not answers to our probes never change a target's numbers. */
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { parseSamples, sleep, value } from './helpers/prom.js';

const FORGE = fileURLToPath(new URL('helpers/forge.py', import.meta.url));
const RESPONDER = fileURLToPath(new URL('helpers/responder.py', import.meta.url));
const TARGET = '198.18.128.50';

test('forged, truncated and corrupted replies and errors are counted and ignored', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await exporter.get(`/probe?target=${TARGET}`);
  await sleep(300);
  // Spoofed from the very address being probed, with the exporter's own identifier.
  const forged = 200;
  lab.exec(lab.peer, 'python3', [FORGE, TARGET, '198.18.0.1', String(exporter.identifier), String(forged)]);
  await sleep(700);
  const samples = parseSamples((await exporter.get(`/probe?target=${TARGET}`)).body);
  const sent = value(samples, 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  t.true(sent > 20);
  t.is(value(samples, 'icmp_probe_packets_recv_total', { ip: TARGET }), sent, 'nothing forged counted as a reply');
  t.is(value(samples, 'icmp_probe_icmp_errors_total', { ip: TARGET }), 0, 'no forged error ended a probe');
  t.is(value(samples, 'icmp_probe_loss_ratio', { ip: TARGET }), 0);
  const mean = value(samples, 'icmp_probe_latency_seconds', { ip: TARGET }) ?? 1;
  t.true(mean < 0.001, `mean ${mean}`);
  const m = parseSamples((await exporter.get('/metrics')).body);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), forged);
  t.is(value(m, 'icmp_packets_malformed_total'), 2 * forged, 'bad checksums, and replies cut too short to carry a key');
  t.is(value(m, 'icmp_error_messages_total', { matched: 'false' }), 2 * forged);
  t.is(value(m, 'icmp_error_messages_total', { matched: 'true' }), 0);
  t.is(value(m, 'icmp_engine_up'), 1);
});

test('duplicated replies count once', async (t) => {
  const lab = Lab.create(t);
  lab.nft(
    lab.peer,
    // `dup` exists in the ip and ip6 families only.
    `table ip lab4 {
      chain output {
        type filter hook output priority 0; policy accept;
        ip daddr 198.18.0.1 icmp type echo-reply dup to 198.18.0.1 device "${lab.peerLink}"
      }
    }
    table ip6 lab6 {
      chain output {
        type filter hook output priority 0; policy accept;
        ip6 daddr 2001:2::1 icmpv6 type echo-reply dup to 2001:2::1 device "${lab.peerLink}"
      }
    }`,
  );
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const query = `/probe?target=${TARGET}&target=2001:2:0:8000::50`;
  await exporter.get(query);
  await sleep(1000);
  const samples = parseSamples((await exporter.get(query)).body);
  let received = 0;
  for (const ip of [TARGET, '2001:2:0:8000::50']) {
    const sent = value(samples, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 20, ip);
    t.is(value(samples, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: each probe once`);
    received += sent;
  }
  const m = parseSamples((await exporter.get('/metrics')).body);
  const duplicates = value(m, 'icmp_replies_ignored_total', { reason: 'duplicate' }) ?? 0;
  t.true(duplicates >= received, `${duplicates} duplicates for ${received} replies`);
});

test('replies after the timeout are late: counted as such, never as replies', async (t) => {
  const lab = Lab.create(t);
  lab.exec(lab.peer, 'sysctl', ['-qw', 'net.ipv4.icmp_echo_ignore_all=1']);
  // Each reply 250 ms late, with probes every 100 ms and a 30 ms timeout: by the time a reply
  // comes its probe has ended and its in-flight slot serves a newer probe.
  lab.spawn(lab.peer, 'python3', [RESPONDER, '250', '10']);
  await sleep(200);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '30']);
  await exporter.get(`/probe?target=${TARGET}`);
  await sleep(2000);
  const samples = parseSamples((await exporter.get(`/probe?target=${TARGET}`)).body);
  const sent = value(samples, 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  t.true(sent >= 10, `${sent}`);
  t.is(value(samples, 'icmp_probe_packets_recv_total', { ip: TARGET }), 0);
  t.is(value(samples, 'icmp_probe_loss_ratio', { ip: TARGET }), 1);
  const m = parseSamples((await exporter.get('/metrics')).body);
  const late = value(m, 'icmp_replies_ignored_total', { reason: 'late' }) ?? 0;
  t.true(late >= sent - 3, `${late} late replies for ${sent} probes`);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
});
