/** Packets from the network that are not answers to our probes never change a target's numbers. */
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { metrics, scrape, targets, waitForProbes } from './helpers/probing.js';
import { value, type Sample } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const FORGE = fileURLToPath(new URL('helpers/forge.py', import.meta.url));
const RESPONDER = fileURLToPath(new URL('helpers/responder.py', import.meta.url));
const TARGET = '198.18.128.50';

test('forged, truncated and corrupted replies and errors are counted and ignored', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const query = `target=${TARGET}`;
  await scrape(exporter, query);
  await waitForProbes(exporter, query, 1);
  // Spoofed from the very address being probed, with the exporter's own identifier.
  const forged = 200;
  lab.exec(lab.peer, 'python3', [FORGE, TARGET, '198.18.0.1', String(exporter.identifier), String(forged)]);
  // Five packets per round: a reply, the same with a bad checksum, a truncated one, an
  // unreachable and a time exceeded, in that order. All five of every round count in the
  // counters below (the truncated reply as malformed): once 5 × forged are counted, the engine
  // has read them all. (Waiting for 4 ×, as when truncated replies counted nowhere, read the
  // counters early: under stress-ng, 176 of 200 foreign replies.)
  const handled = (m: Sample[]) =>
    (value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }) ?? 0) +
    (value(m, 'icmp_packets_malformed_total') ?? 0) +
    (value(m, 'icmp_error_messages_total', { matched: 'false' }) ?? 0) +
    (value(m, 'icmp_error_messages_total', { matched: 'true' }) ?? 0);
  const m = await waitFor(() => metrics(exporter), (m) => handled(m) >= 5 * forged, {
    what: `the engine to count the ${5 * forged} forged packets that pass its socket filter`,
    show: (m) => `foreign, malformed and error messages: ${handled(m)}`,
  });
  const samples = await waitForProbes(exporter, query, 21);
  const sent = value(samples, 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  t.true(sent > 20);
  t.is(value(samples, 'icmp_probe_packets_recv_total', { ip: TARGET }), sent, 'nothing forged counted as a reply');
  t.is(value(samples, 'icmp_probe_icmp_errors_total', { ip: TARGET }), 0, 'no forged error ended a probe');
  t.is(value(samples, 'icmp_probe_loss_ratio', { ip: TARGET }), 0);
  const mean = value(samples, 'icmp_probe_latency_seconds', { ip: TARGET }) ?? 1;
  t.true(mean < 0.001, `mean ${mean}`);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), forged);
  t.is(value(m, 'icmp_packets_malformed_total'), 2 * forged, 'bad checksums, and replies cut too short to carry a key');
  t.is(value(m, 'icmp_error_messages_total', { matched: 'false' }), 2 * forged);
  t.is(value(m, 'icmp_error_messages_total', { matched: 'true' }), 0);
  t.is(value(m, 'icmp_engine_up'), 1);
  const later = await metrics(exporter);
  t.is(handled(later), handled(m), 'and nothing else came of them');
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
  const query = targets([TARGET, '2001:2:0:8000::50']);
  await scrape(exporter, query);
  const samples = await waitForProbes(exporter, query, 21);
  let received = 0;
  for (const ip of [TARGET, '2001:2:0:8000::50']) {
    const sent = value(samples, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 20, ip);
    t.is(value(samples, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: each probe once`);
    received += sent;
  }
  // Each copy comes right behind its reply: wait for the copies of the replies counted above.
  const duplicates = (m: Sample[]) => value(m, 'icmp_replies_ignored_total', { reason: 'duplicate' }) ?? 0;
  const m = await waitFor(() => metrics(exporter), (m) => duplicates(m) >= received, {
    what: `a duplicate for each of the ${received} replies`,
    show: (m) => `${duplicates(m)} duplicates`,
  });
  t.true(duplicates(m) >= received, `${duplicates(m)} duplicates for ${received} replies`);
});

test('replies after the timeout are late: counted as such, never as replies', async (t) => {
  const lab = Lab.create(t);
  lab.exec(lab.peer, 'sysctl', ['-qw', 'net.ipv4.icmp_echo_ignore_all=1']);
  // Each reply 250 ms late, with probes every 100 ms and a 30 ms timeout: by the time a reply
  // comes its probe has ended and its in-flight slot serves a newer probe.
  // (120 s is a backstop: the lab's teardown ends it.)
  const responder = lab.spawn(lab.peer, 'python3', [RESPONDER, '250', '120']);
  let out = '';
  responder.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out, (o) => o.includes('ready'), { what: 'the responder to listen' });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '30']);
  const query = `target=${TARGET}`;
  await scrape(exporter, query);
  const samples = await waitForProbes(exporter, query, 10);
  const sent = value(samples, 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  t.true(sent >= 10, `${sent}`);
  t.is(value(samples, 'icmp_probe_packets_recv_total', { ip: TARGET }), 0);
  t.is(value(samples, 'icmp_probe_loss_ratio', { ip: TARGET }), 1);
  // Each of those probes gets its reply 250 ms after it left: wait until all are counted late.
  const late = (m: Sample[]) => value(m, 'icmp_replies_ignored_total', { reason: 'late' }) ?? 0;
  const m = await waitFor(() => metrics(exporter), (m) => late(m) >= sent, {
    what: `the late replies to the ${sent} probes`,
    show: (m) => `${late(m)} late`,
  });
  // And never more than one per probe that had ended (the scrape comes after /metrics).
  const ended = value(await scrape(exporter, query), 'icmp_probe_packets_sent_total', { ip: TARGET }) ?? 0;
  t.true(late(m) >= sent && late(m) <= ended, `${late(m)} late replies for ${sent}…${ended} probes`);
  t.is(value(m, 'icmp_replies_ignored_total', { reason: 'foreign' }), 0);
});
