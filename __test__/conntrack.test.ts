/**
 * The host's connection-tracking table: probes from raw sockets are tracked like any other
 * traffic, so silent TCP targets leave a SYN_SENT entry per source port for two minutes. The
 * rules `icmp-exporter notrack` prints keep every probe and answer out of it, and the answers
 * still arrive under a firewall that drops invalid packets. Counted in the prober namespace's
 * own table.
 */
import test from 'ava';
import { CLI, type Lab } from './helpers/lab.js';
import { scrape } from './helpers/probing.js';
import { CLOSED, FILTERED, OPEN, REJECTED, startTcpLab, tcpSeries } from './helpers/tcp-peer.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

/** A firewall as hardened hosts have one: it makes the namespace track connections. */
function hostFirewall(lab: Lab): void {
  lab.nft(
    lab.prober,
    `table inet lab {
      counter invalid {}
      chain input {
        type filter hook input priority 0; policy accept;
        ct state invalid counter name "invalid" drop
      }
    }`,
  );
}

/** The prober namespace's conntrack entries. */
const entries = (lab: Lab) => lab.exec(lab.prober, 'cat', ['/proc/net/nf_conntrack']).split('\n').filter((l) => l !== '');

const TARGETS = Array.from({ length: 20 }, (_, i) => `198.18.131.${i + 1}`);

test('without the rules: every silent TCP target leaves SYN_SENT entries, one per source port used', async (t) => {
  const { lab, exporter } = await startTcpLab(t, '20');
  hostFirewall(lab);
  const query = `${TARGETS.map((ip) => `target=${ip}`).join('&')}&tcp_port=${FILTERED}`;
  await scrape(exporter, query);
  const synSent = await waitFor(
    () => entries(lab).filter((l) => l.includes('SYN_SENT') && l.includes(`dport=${FILTERED}`)).length,
    (n) => n >= TARGETS.length * 20,
    { what: 'conntrack entries piling up for silent targets' },
  );
  t.log(`${synSent} SYN_SENT entries for ${TARGETS.length} silent targets a moment after they were added (each lasts 120 s)`);
  t.true(synSent >= TARGETS.length * 20);
});

test('with the rules icmp-exporter notrack prints: no entry for any probe, and every answer still arrives', async (t) => {
  const { lab, exporter } = await startTcpLab(t, '20');
  hostFirewall(lab);
  // Printed in the prober namespace: its own ip_local_port_range decides the ports.
  lab.nft(lab.prober, lab.exec(lab.prober, process.execPath, [CLI, 'notrack']));
  const icmp = TARGETS.slice(0, 5);
  await scrape(exporter, icmp.map((ip) => `target=${ip}`).join('&'));
  const tcpQuery = `target=198.18.131.30&tcp_port=${OPEN}&tcp_port=${CLOSED}&tcp_port=${FILTERED}`;
  await scrape(exporter, tcpQuery);
  const tcp = await waitFor(
    () => scrape(exporter, tcpQuery),
    (s) => tcpSeries(s, 'packets_sent_total', '198.18.131.30', OPEN) >= 20 && tcpSeries(s, 'packets_sent_total', '198.18.131.30', CLOSED) >= 20,
    { what: '20 final probes of the open and the closed port' },
  );
  for (const port of [OPEN, CLOSED]) {
    t.is(tcpSeries(tcp, 'packets_recv_total', '198.18.131.30', port), tcpSeries(tcp, 'packets_sent_total', '198.18.131.30', port), `port ${port}: every SYN answered`);
  }
  const pings = await scrape(exporter, icmp.map((ip) => `target=${ip}`).join('&'));
  for (const ip of icmp) {
    const sent = value(pings, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 0);
    t.is(value(pings, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip}: every echo answered`);
  }
  const ours = entries(lab).filter((l) => l.includes('198.18.131.'));
  t.deepEqual(ours, [], 'no conntrack entry for a probe');
  t.is(lab.nftCounters(lab.prober).invalid, 0, 'no answer dropped as invalid');

  // An ICMP error quoting an untracked probe is invalid to conntrack: dropped here, so the
  // probe ends as lost at its timeout, not at the error (README, Connection tracking).
  const rejected = `target=198.18.131.31&tcp_port=${REJECTED}`;
  await scrape(exporter, rejected);
  const r = await waitFor(() => scrape(exporter, rejected), (s) => tcpSeries(s, 'packets_sent_total', '198.18.131.31', REJECTED) >= 10, {
    what: '10 final probes of the rejected port',
  });
  t.is(tcpSeries(r, 'packets_recv_total', '198.18.131.31', REJECTED), 0);
  t.is(tcpSeries(r, 'icmp_errors_total', '198.18.131.31', REJECTED), 0);
  t.true((lab.nftCounters(lab.prober).invalid ?? 0) >= 10, 'the errors were dropped as invalid');
});
