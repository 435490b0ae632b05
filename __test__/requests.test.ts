/** Bad requests get a 400 and change nothing; targets in one or several requests stay independent. */
import test from 'ava';
import { Lab, SILENT_V4 } from './helpers/lab.js';
import { metrics, scrape, waitForProbes, waitForScrape } from './helpers/probing.js';
import { value, type Sample } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const FAST = ['-i-wont-be-evil', '-interval', '20', '-timeout', '300'];
const LIVE = '198.18.128.10';

const probeSamples = scrape;

test('every bad request gets a 400 with a message, and changes no other target', async (t) => {
  const lab = Lab.create(t);
  lab.startDns({ 'known.lab.test': ['198.18.129.1'] });
  const exporter = await lab.startExporter(FAST);
  await exporter.get(`/probe?target=${LIVE}`);
  const before = await waitForProbes(exporter, `target=${LIVE}`, 1);

  const tooMany = Array.from({ length: 257 }, (_, i) => `target=198.18.${128 + (i >> 8)}.${i & 0xff}`).join('&');
  const cases: Array<[string, RegExp]> = [
    ['', /missing parameter target/],
    ['target=', /empty target/],
    [`target=${LIVE}&ip_version=5`, /invalid ip_version/],
    [`target=${LIVE}&ip_version=4&ip_version=6`, /ip_version may be given once/],
    [`target=${LIVE}&module=icmp`, /unknown parameter "module"/],
    [`target=${LIVE}&tcp_port=0`, /invalid tcp_port="0"/],
    [`target=${LIVE}&tcp_port=99999`, /invalid tcp_port="99999"/],
    ['target=bad..name', /neither an IP address nor a valid hostname/],
    ['target=missing.lab.test', /unable to resolve target="missing.lab.test"/],
    [`target=2001:2::5&ip_version=4`, /IPv6 address but ip_version=4/],
    // Counted before any lookup: 257 names or addresses are too many whatever they resolve to.
    [tooMany, /too many targets: 257 targets, at most 256 probes/],
    [`target=${LIVE}&target=198.18.128.11&${Array.from({ length: 129 }, (_, i) => `tcp_port=${i + 1}`).join('&')}`, /2 targets × 129 ports, at most 256/],
    // All or nothing: the valid target in the same request must not start probing.
    ['target=198.18.128.77&target=224.0.0.1', /cannot probe 224.0.0.1/],
    ['target=0.0.0.0', /cannot probe 0.0.0.0/],
    ['target=ff02::1', /cannot probe ff02::1/],
  ];
  for (const [query, message] of cases) {
    const r = await exporter.get(`/probe?${query}`);
    t.is(r.status, 400, `?${query.slice(0, 60)} -> ${r.body}`);
    t.regex(r.body, message);
    t.notRegex(r.body, /^# TYPE/m, 'no metrics in an error');
  }
  t.is((await exporter.get('/nowhere')).status, 404);

  const m = await metrics(exporter);
  t.is(value(m, 'icmp_active_probes'), 1, 'no refused request started a probe');
  t.is(value(m, 'icmp_packets_error_total'), 0);
  const sent = (s: Sample[]) => value(s, 'icmp_probe_packets_sent_total', { ip: LIVE }) ?? 0;
  const recv = (s: Sample[]) => value(s, 'icmp_probe_packets_recv_total', { ip: LIVE }) ?? 0;
  const after = await waitForScrape(exporter, `target=${LIVE}`, (s) => sent(s) > sent(before), { what: 'more probes of the live target' });
  t.true(sent(after) > sent(before), 'the live target kept being probed');
  t.is(recv(after), sent(after), 'and lost nothing');
  t.is(value(after, 'icmp_probe_loss_ratio', { ip: LIVE }), 0);
});

test('targets asked together or apart do not disturb each other; counters never decrease', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(FAST);
  const other = '198.18.128.11';
  const history: Sample[][] = [];
  const record = async (query: string) => {
    const s = await probeSamples(exporter, query);
    history.push(s);
    return s;
  };
  const both = await record(`target=${LIVE}&target=${SILENT_V4}&target=${LIVE}`);
  t.deepEqual([...new Set(both.map((s) => s.labels.ip))].sort(), [SILENT_V4, LIVE].sort(), 'duplicates merged');
  history.push(await waitForProbes(exporter, `target=${LIVE}&target=${SILENT_V4}`, 11));
  const alone = await record(`target=${LIVE}`);
  t.deepEqual([...new Set(alone.map((s) => s.labels.ip))], [LIVE], 'only the asked target');
  await record(`target=${other}`);
  history.push(await waitForProbes(exporter, `target=${other}`, 11));
  await record(`target=${SILENT_V4}`);
  const last = await record(`target=${LIVE}&target=${SILENT_V4}&target=${other}`);

  for (const ip of [LIVE, other]) {
    const sent = value(last, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    t.true(sent > 10, `${ip} probed (${sent})`);
    t.is(value(last, 'icmp_probe_packets_recv_total', { ip }), sent, `${ip} lost nothing next to a silent target`);
  }
  t.is(value(last, 'icmp_probe_packets_recv_total', { ip: SILENT_V4 }), 0);
  t.is(value(last, 'icmp_probe_loss_ratio', { ip: SILENT_V4 }), 1);

  // Every counter of every target only ever grows from one scrape to the next.
  const counters = ['icmp_probe_packets_sent_total', 'icmp_probe_packets_recv_total', 'icmp_probe_latency_seconds_total', 'icmp_probe_latency_squared_seconds_total'];
  const seen = new Map<string, number>();
  for (const samples of history) {
    for (const s of samples.filter((x) => counters.includes(x.name))) {
      const key = `${s.name}/${s.labels.ip}`;
      t.true(s.value >= (seen.get(key) ?? 0), `${key} went from ${seen.get(key)} to ${s.value}`);
      seen.set(key, s.value);
    }
  }
  const literal = await record('target=2001:2:0:8000:0:0:0:1&target=2001:2:0:8000::1');
  t.deepEqual([...new Set(literal.map((s) => s.labels.ip))], ['2001:2:0:8000::1'], 'one canonical series per address');
});

test('a target nobody asks for expires; one that is asked for stays', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter([...FAST, '-expiry', '1200']);
  const kept = '198.18.128.20';
  const dropped = '198.18.128.21';
  await exporter.get(`/probe?target=${kept}&target=${dropped}`);
  // Asked for every 300 ms (well within the 1.2 s expiry) until the other one has expired
  // and this one has more than 50 probes behind it.
  const sentKept = (s: Sample[]) => value(s, 'icmp_probe_packets_sent_total', { ip: kept }) ?? 0;
  let lastKept: Sample[] = [];
  const m = await waitFor(
    async () => {
      lastKept = await probeSamples(exporter, `target=${kept}`);
      return metrics(exporter);
    },
    (m) => value(m, 'icmp_active_probes') === 1 && sentKept(lastKept) > 50,
    { what: 'the unrequested target to expire while the requested one goes on', everyMs: 300, show: (m) => `${value(m, 'icmp_active_probes')} active, kept sent ${sentKept(lastKept)}` },
  );
  t.is(value(m, 'icmp_active_probes'), 1, 'the unrequested target expired');
  t.true(sentKept(lastKept) > 50, 'the requested one kept its history');
  const again = await probeSamples(exporter, `target=${dropped}`);
  t.true((value(again, 'icmp_probe_packets_sent_total', { ip: dropped }) ?? 99) < 5, 'an expired target starts afresh');
});
