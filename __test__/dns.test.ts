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
