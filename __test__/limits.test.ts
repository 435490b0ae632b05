/**
 * Limits that refuse before anything is sent: `-target-allow` (CIDRs and hostname globs, 403),
 * `-max-targets` (429, all protocols), and the per-request cap counted before any lookup. A
 * refused request starts nothing: no probe leaves for it (counted on the peer), no DNS query
 * for a name the globs refuse (dnsmasq's log), and the targets already probed keep their numbers.
 */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { metrics, scrape, targets } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test('-target-allow: addresses outside the ranges and names outside the globs are 403, before any packet or lookup', async (t) => {
  const lab = Lab.create(t);
  // The peer answers 198.18.128.0/17; what it receives for the refused addresses is counted.
  lab.nft(
    lab.peer,
    `table inet lab {
      counter refused {}
      chain input {
        type filter hook input priority 0; policy accept;
        ip daddr { 198.18.129.9, 198.18.130.7 } counter name "refused"
        ip6 daddr 2001:2:0:8000::9 counter name "refused"
      }
    }`,
  );
  const dns = lab.startDns({
    'ok.allowed.lab.test': ['198.18.128.20'],
    'outside.allowed.lab.test': ['198.18.130.7'],
    'other.lab.test': ['198.18.128.21'],
  });
  const exporter = await lab.startExporter([
    '-i-wont-be-evil',
    '-interval',
    '20',
    '-timeout',
    '300',
    '-target-allow',
    '198.18.128.0/24',
    '--target-allow=*.allowed.lab.test',
  ]);
  // An allowed literal is probed.
  const kept = '198.18.128.10';
  await scrape(exporter, `target=${kept}`);

  const refusedLiteral = await exporter.get('/probe?target=198.18.129.9');
  t.is(refusedLiteral.status, 403);
  t.regex(refusedLiteral.body, /198\.18\.129\.9 is not allowed: it lies in no -target-allow range \(198\.18\.128\.0\/24, \*\.allowed\.lab\.test\)/);
  const refusedV6 = await exporter.get('/probe?target=[2001:2:0:8000::9]');
  t.is(refusedV6.status, 403);
  // One refused target refuses the request: the allowed one in it is not started either.
  const mixed = await exporter.get(`/probe?target=198.18.128.11&target=198.18.129.9`);
  t.is(mixed.status, 403);

  // A name the globs refuse is never looked up.
  const refusedName = await exporter.get('/probe?target=other.lab.test');
  t.is(refusedName.status, 403);
  t.regex(refusedName.body, /target="other\.lab\.test" is not allowed: it matches no -target-allow hostname/);
  // A name the globs allow is looked up (dnsmasq may take a moment to listen) and probed...
  const ok = await waitFor(() => exporter.get('/probe?target=ok.allowed.lab.test'), (r) => r.status === 200, {
    what: 'the allowed name to resolve',
    everyMs: 250,
    show: (r) => `${r.status} ${r.body}`,
  });
  t.is(ok.headers.get('x-target-count'), '1');
  // ...but one that resolves outside the ranges is refused, naming the address.
  const outside = await exporter.get('/probe?target=outside.allowed.lab.test');
  t.is(outside.status, 403);
  t.regex(outside.body, /198\.18\.130\.7 \(an address of target="outside\.allowed\.lab\.test"\) is not allowed/);

  const active = value(await metrics(exporter), 'icmp_active_probes');
  t.is(active, 2, `only ${kept} and ok.allowed.lab.test are probed`);
  // A literal outside the ranges refuses the request before the name beside it is looked up.
  const literalFirst = await exporter.get('/probe?target=198.18.129.9&target=late.allowed.lab.test');
  t.is(literalFirst.status, 403);
  // dnsmasq's log may trail its answers: ask for a sentinel name last, wait for it, then look.
  await exporter.get('/probe?target=sentinel.allowed.lab.test');
  const asked = await waitFor(() => dns.queried(), (q) => q.includes('ok.allowed.lab.test') && q.includes('sentinel.allowed.lab.test'), {
    what: 'the allowed names in the DNS log',
  });
  t.false(asked.includes('other.lab.test'), `queried: ${asked.join(' ')}`);
  t.false(asked.includes('late.allowed.lab.test'), `queried: ${asked.join(' ')}`);
  // The kept target went on meanwhile, none lost; nothing ever left for a refused address.
  const s = await scrape(exporter, `target=${kept}`);
  const sent = value(s, 'icmp_probe_packets_sent_total', { ip: kept }) ?? 0;
  t.true(sent > 0);
  t.is(value(s, 'icmp_probe_packets_recv_total', { ip: kept }), sent);
  t.is(lab.nftCounters(lab.peer).refused, 0);
});

test('-max-targets: a request that would pass it is 429 and starts nothing; targets already probed count against it once', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300', '-max-targets', '3']);
  await scrape(exporter, targets(['198.18.128.30', '198.18.128.31']));
  const over = await exporter.get(`/probe?${targets(['198.18.128.31', '198.18.128.32', '198.18.128.33'])}`);
  t.is(over.status, 429);
  t.regex(over.body, /-max-targets 3: 2 targets are being probed and this request would add 2/);
  t.is(value(await metrics(exporter), 'icmp_active_probes'), 2, 'the refused request started nothing');
  // TCP targets count against the same limit.
  const tcp = await exporter.get('/probe?target=198.18.128.30&tcp_port=80&tcp_port=81');
  t.is(tcp.status, 429);
  // Literals alone past the limit are refused before the names beside them are looked up
  // (the lookup would fail here: no DNS server is configured, and the answer would be a 400).
  const literalsOver = await exporter.get(`/probe?${targets(['198.18.128.40', '198.18.128.41', 'some.name.lab.test'])}`);
  t.is(literalsOver.status, 429);
  // Asking again for probed targets plus one new fits.
  await scrape(exporter, targets(['198.18.128.30', '198.18.128.31', '198.18.128.32']));
  const m = await metrics(exporter);
  t.is((value(m, 'icmp_active_probes') ?? 0) + (value(m, 'tcp_active_probes') ?? 0), 3);
});

test('more than 256 names in one request: 400 before any lookup', async (t) => {
  const lab = Lab.create(t);
  const dns = lab.startDns({ 'one.lab.test': ['198.18.128.40'] });
  const exporter = await lab.startExporter();
  const names = Array.from({ length: 257 }, (_, i) => `n${i}.lab.test`);
  const r = await exporter.get(`/probe?${targets(names)}`);
  t.is(r.status, 400);
  t.regex(r.body, /too many targets: 257 targets, at most 256 probes per request/);
  const ports = await exporter.get(`/probe?${targets(names.slice(0, 130))}&tcp_port=1&tcp_port=2`);
  t.is(ports.status, 400);
  t.regex(ports.body, /130 targets × 2 ports/);
  // A name asked last shows in the DNS log once the log has caught up: none before it.
  await waitFor(() => exporter.get('/probe?target=one.lab.test'), (r) => r.status === 200, { what: 'dnsmasq answering', everyMs: 250 });
  const asked = await waitFor(() => dns.queried(), (q) => q.includes('one.lab.test'), { what: 'the sentinel in the DNS log' });
  t.deepEqual(asked.filter((n) => n !== 'one.lab.test'), []);
});
