/** Programmatic use, in the lab: the prober without HTTP, and the exporter started from code. */
import test from 'ava';
import { Lab } from './helpers/lab.js';

const INDEX = new URL('../dist/index.js', import.meta.url).pathname;

// The script waits for states, not for time: \`until\` polls a read until a condition holds
// (and gives up after 30 s with what it last read, which the test then shows).
const SCRIPT = `
import { Prober, startExporter, BadRequestError } from ${JSON.stringify(INDEX)};
async function until(read, done, what) {
  const end = Date.now() + 30000;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > end) throw new Error('gave up waiting for ' + what + '; last seen: ' + JSON.stringify(v));
    await new Promise((r) => setTimeout(r, 50));
  }
}
const prober = Prober.start({ intervalMs: 20, timeoutMs: 300 });
const icmp = await prober.add('198.18.128.70');
const tcp = await prober.add('2001:2:0:8000::70', { tcpPort: 9 });
const sized = await prober.add('198.18.128.70', { probe: { size: 200, ttl: 9 } });
const bounds = prober.histogramBounds();
let refused = '';
try { await prober.add('224.0.0.1'); } catch (e) { refused = e instanceof BadRequestError ? e.message : 'wrong type'; }
const stats = await until(() => prober.stats(), (all) => all.length === 3 && all.every((s) => s.sent > 10), 'more than 10 probes of each target');
prober.remove(icmp);
const afterRemove = await prober.stats();
await prober.stop();
const exporter = await startExporter({ host: '127.0.0.1', port: 0, intervalMs: 20 });
await fetch(exporter.url + '/probe?target=198.18.128.71');
const body = await until(async () => (await fetch(exporter.url + '/probe?target=198.18.128.71')).text(), (b) => /^icmp_probe_packets_recv_total\\{[^}]*\\} [1-9]/m.test(b), 'an answered probe');
await exporter.close();
console.log(JSON.stringify({ icmp, tcp, sized, bounds, refused, stats, afterRemove: afterRemove.length, body }));
`;

test('Prober: add by address, ICMP and TCP, read stats, remove, stop; startExporter from code', async (t) => {
  const lab = Lab.create(t);
  const out = JSON.parse(lab.exec(lab.prober, process.execPath, ['--input-type=module', '-e', SCRIPT])) as {
    icmp: unknown;
    tcp: unknown;
    sized: unknown;
    bounds: number[];
    refused: string;
    stats: Array<{
      address: string;
      protocol: string;
      port: number;
      sent: number;
      received: number;
      closed: number;
      windowLossRatio?: number;
      options?: unknown;
      buckets: number[];
      native?: { schema: number; zeroCount: number; buckets: Array<[number, number]> };
    }>;
    afterRemove: number;
    body: string;
  };
  t.deepEqual(out.icmp, [{ address: '198.18.128.70', protocol: 'icmp', port: 0 }]);
  t.deepEqual(out.tcp, [{ address: '2001:2:0:8000::70', protocol: 'tcp', port: 9 }]);
  t.regex(out.refused, /cannot probe 224\.0\.0\.1/);
  t.deepEqual(out.sized, [{ address: '198.18.128.70', protocol: 'icmp', port: 0, options: { size: 200, ttl: 9 } }]);
  t.is(out.bounds[0], 1e-5, 'the default buckets start at 10 µs');
  const icmp = out.stats.find((s) => s.protocol === 'icmp' && s.options === undefined);
  const withOptions = out.stats.find((s) => s.protocol === 'icmp' && s.options !== undefined);
  t.deepEqual(withOptions?.options, { size: 200, ttl: 9 });
  for (const s of [icmp, withOptions]) {
    // Histograms as plain arrays: every answer within the last bound, all in native buckets.
    t.is(s?.buckets.length, out.bounds.length);
    t.is(s?.buckets[s.buckets.length - 1], s?.received);
    t.is((s?.native?.buckets ?? []).reduce((n, [, c]) => n + c, s?.native?.zeroCount ?? 0), s?.received ?? -1);
  }
  const tcp = out.stats.find((s) => s.protocol === 'tcp');
  t.true((icmp?.sent ?? 0) > 10 && icmp?.received === icmp?.sent, JSON.stringify(icmp));
  t.is(icmp?.windowLossRatio, 0);
  t.true((tcp?.sent ?? 0) > 10 && tcp?.closed === tcp?.sent, `a closed port answers RST: ${JSON.stringify(tcp)}`);
  t.is(out.afterRemove, 2);
  t.regex(out.body, /^icmp_probe_packets_recv_total\{ip="198\.18\.128\.71"\} [1-9]/m);
});
