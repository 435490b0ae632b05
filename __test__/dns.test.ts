/** Hostnames, answered by a DNS server in the lab: every address is its own series. */
import test from 'ava';
import { Lab } from './helpers/lab.js';
import { waitForProbes } from './helpers/probing.js';
import { parseSamples, value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

test('a name with A and AAAA records gives one series per address; ip_version filters them', async (t) => {
  const lab = Lab.create(t);
  lab.startDns({
    'dual.lab.test': ['198.18.129.5', '2001:2:0:8000::5'],
    'v4only.lab.test': ['198.18.129.6'],
  });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  // dnsmasq may take a moment to listen (a failed lookup is not cached).
  const first = await waitFor(() => exporter.get('/probe?target=dual.lab.test'), (r) => r.status === 200, {
    what: 'the name to resolve (dnsmasq listening)',
    everyMs: 250,
    show: (r) => `${r.status} ${r.body}`,
  });
  t.is(first.status, 200, first.body);
  t.is(first.headers.get('x-target-count'), '2');
  const both = await waitForProbes(exporter, 'target=dual.lab.test', 6);
  for (const ip of ['198.18.129.5', '2001:2:0:8000::5']) {
    const sent = value(both, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 5, `${ip} probed`);
    t.is(value(both, 'icmp_probe_packets_recv_total', { ip }), sent);
  }
  const v6 = parseSamples((await exporter.get('/probe?target=dual.lab.test&ip_version=6')).body);
  t.deepEqual([...new Set(v6.map((s) => s.labels.ip))], ['2001:2:0:8000::5']);
  const v4 = await exporter.get('/probe?target=v4only.lab.test&ip_version=6');
  t.is(v4.status, 400);
  t.regex(v4.body, /unable to resolve target="v4only.lab.test": no IPv6 address/);
  const missing = await exporter.get('/probe?target=dual.lab.test&target=nothing.lab.test');
  t.is(missing.status, 400);
  t.regex(missing.body, /unable to resolve target="nothing.lab.test"/);
});

test('/etc/hosts comes first and is never asked of DNS; the search list completes short names', async (t) => {
  const lab = Lab.create(t);
  const dns = lab.startDns(
    { 'short.lab.test': ['198.18.129.7'] },
    { search: ['nowhere.test', 'lab.test'], hosts: { '198.18.129.8': 'hostsonly.example alias.example' } },
  );
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const short = await waitFor(() => exporter.get('/probe?target=short'), (r) => r.status === 200, {
    what: '"short" to resolve through the search list (dnsmasq listening)',
    everyMs: 250,
    show: (r) => `${r.status} ${r.body}`,
  });
  t.deepEqual([...new Set(parseSamples(short.body).map((s) => s.labels.ip))], ['198.18.129.7']);
  // Tried in the order of the list: the first domain has no such name (dnsmasq's log may
  // trail the answers).
  const asked = await waitFor(() => dns.queried().filter((n) => n.startsWith('short')), (q) => q.includes('short.lab.test'), {
    what: 'the queries in the DNS server log',
  });
  t.deepEqual(asked.slice(0, 2), ['short.nowhere.test', 'short.nowhere.test']);
  for (const name of ['hostsonly.example', 'ALIAS.example']) {
    const r = await exporter.get(`/probe?target=${name}`);
    t.is(r.status, 200, r.body);
    t.deepEqual([...new Set(parseSamples(r.body).map((s) => s.labels.ip))], ['198.18.129.8']);
  }
  t.false(dns.queried().some((n) => n.includes('example')), dns.queried().join(' '));
});

test('a zone whose server never answers holds up no other name: dozens of hanging lookups, healthy names and literals answered meanwhile', async (t) => {
  const lab = Lab.create(t);
  const dns = lab.startDns({ 'healthy.lab.test': ['198.18.129.9'], 'warmup.lab.test': ['198.18.129.10'] }, { silentZone: 'slow.lab.test' });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await waitFor(() => exporter.get('/probe?target=warmup.lab.test'), (r) => r.status === 200, { what: 'dnsmasq listening', everyMs: 250 });
  // 64 requests, each stuck in the lookup of its own name in the silent zone.
  let settled = 0;
  const stuck = Array.from({ length: 64 }, (_, i) =>
    exporter.get(`/probe?target=h${i}.slow.lab.test`).finally(() => {
      settled += 1;
    }),
  );
  await waitFor(
    () => new Set(dns.queried().filter((n) => n.endsWith('.slow.lab.test'))).size,
    (n) => n >= 64,
    { what: 'all 64 names asked of the DNS server' },
  );
  // Meanwhile a name never looked up before and a literal are answered, while every stuck
  // request is still waiting for its lookup.
  const healthy = await exporter.get('/probe?target=healthy.lab.test');
  t.is(healthy.status, 200, healthy.body);
  const literal = await exporter.get('/probe?target=198.18.129.11');
  t.is(literal.status, 200);
  t.is(settled, 0, 'no stuck request had ended when the healthy ones were answered');
  // The stuck ones end at their deadline, each with a clear error.
  for (const r of await Promise.all(stuck)) {
    t.is(r.status, 400);
    t.regex(r.body, /unable to resolve target="h\d+\.slow\.lab\.test": timed out after 5000 ms/);
  }
});

test('requests for a name being looked up share its lookup', async (t) => {
  const lab = Lab.create(t);
  const dns = lab.startDns({ 'shared.lab.test': ['198.18.129.12'], 'warmup.lab.test': ['198.18.129.13'] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await waitFor(() => exporter.get('/probe?target=warmup.lab.test'), (r) => r.status === 200, { what: 'dnsmasq listening', everyMs: 250 });
  const all = await Promise.all(Array.from({ length: 20 }, () => exporter.get('/probe?target=shared.lab.test')));
  t.true(all.every((r) => r.status === 200));
  // One A and one AAAA query, not one pair per request (dnsmasq's log may trail the answers;
  // a later line would only add to it).
  const asked = await waitFor(() => dns.queried().filter((n) => n === 'shared.lab.test'), (q) => q.length >= 2, { what: 'the queries in the DNS server log' });
  t.deepEqual(asked, ['shared.lab.test', 'shared.lab.test']);
});
