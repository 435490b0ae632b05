/**
 * monitoring/: the rules pass promtool's checks and unit tests; in the lab, two exporters
 * share targets through Prometheus' hashmod relabelling (every target probed by exactly one),
 * and every query of the dashboard and the rules works across both: each dashboard query is
 * valid on a Prometheus reading classic buckets and on one reading native histograms, and
 * answered by the one it is for; the percentile rules are answered by both.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { Lab, SYSTEM_ENV, type ExporterProcess } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';
import { probeJob, queryVector, startPrometheus } from './helpers/prometheus.js';
import { waitFor } from './helpers/wait.js';

const MONITORING = fileURLToPath(new URL('../monitoring/', import.meta.url));

function promtool(...args: string[]): { status: number | null; said: string } {
  const r = spawnSync('promtool', args, { cwd: MONITORING, encoding: 'utf8', env: SYSTEM_ENV });
  return { status: r.status, said: `${r.stdout}${r.stderr}` };
}

test('the rules pass promtool check rules and their unit tests', (t) => {
  const check = promtool('check', 'rules', 'rules.yml');
  t.is(check.status, 0, check.said);
  const unit = promtool('test', 'rules', 'rules.test.yml');
  t.is(unit.status, 0, unit.said);
  t.regex(unit.said, /SUCCESS/);
});

interface Dashboard {
  panels: Array<{ type: string; title: string; datasource?: unknown; targets?: Array<{ expr: string; refId: string }> }>;
  templating: { list: Array<{ name: string; query: string | { query: string } }> };
}

const dashboard = JSON.parse(readFileSync(`${MONITORING}dashboard.json`, 'utf8')) as Dashboard;

/** A dashboard query as Grafana would send it with every variable at "All". */
const instantiate = (expr: string) => expr.replace(/\$__rate_interval/g, '10s').replace(/\$(job|instance|exporter)\b/g, '.*');

test('the dashboard: every panel has a Prometheus query with a data source', (t) => {
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  t.true(panels.length >= 15);
  for (const p of panels) {
    t.true((p.targets ?? []).length > 0, p.title);
    t.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, p.title);
  }
  t.deepEqual(
    dashboard.templating.list.map((v) => v.name),
    ['datasource', 'job', 'instance', 'exporter'],
  );
});

/** Prometheus' hashmod: the last 8 bytes of the value's MD5, big-endian, modulo n. */
const hashmod = (value: string, n: number) => Number(BigInt(`0x${createHash('md5').update(value).digest('hex').slice(16)}`) % BigInt(n));

const TARGETS = Array.from({ length: 12 }, (_, i) => `198.18.128.${i + 1}`);

/**
 * ICMP targets split between the exporters by hashmod. TCP goes to the first alone: two
 * exporters in one network namespace cannot both probe TCP (the first holds the probe ports),
 * so a TCP shard needs an exporter per host, as sharding does anyway.
 */
function config(exporters: ExporterProcess[]): string {
  const hosts = exporters.map((e) => new URL(e.url).host);
  return [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    'rule_files: [rules.yml]',
    'scrape_configs:',
    probeJob('icmp', TARGETS, hosts),
    probeJob('tcp', TARGETS.slice(0, 3), hosts.slice(0, 1), ["    params: { tcp_port: ['9'] }"]),
    '  - job_name: icmp_exporter',
    `    static_configs: [{ targets: [${hosts.map((h) => `'${h}'`).join(', ')}] }]`,
    '',
  ].join('\n');
}

test('two exporters share the targets by hashmod, each probed by exactly one; the dashboard and rules work across both', async (t) => {
  const lab = Lab.create(t);
  const exporters = [await lab.startExporter(['-i-wont-be-evil', '-interval', '200']), await lab.startExporter(['-i-wont-be-evil', '-interval', '200'])];
  const rules = readFileSync(`${MONITORING}rules.yml`, 'utf8');
  const classic = await startPrometheus(lab, () => config(exporters), (f) => t.teardown(f), { files: { 'rules.yml': rules } });
  const native = await startPrometheus(lab, () => config(exporters), (f) => t.teardown(f), {
    files: { 'rules.yml': rules },
    flags: ['--enable-feature=native-histograms'],
    port: 9091,
  });
  const answered = await waitFor(
    () => queryVector(classic.url, 'icmp_probe_packets_recv_total > 0 or tcp_probe_packets_recv_total > 0'),
    (v) => v.length === TARGETS.length + 3,
    {
      what: 'every target answered through one exporter or the other, ICMP and TCP',
      timeoutMs: 60_000,
      everyMs: 500,
      show: (v) => v.map((s) => `${s.labels.job} ${s.labels.instance}`).sort().join(', '),
    },
  );
  t.is(answered.length, TARGETS.length + 3);
  // The second exporter on this host says why it cannot take TCP targets.
  const tcpOnSecond = await exporters[1]?.get('/probe?target=198.18.128.1&tcp_port=9');
  t.is(tcpOnSecond?.status, 400);
  t.regex(tcpOnSecond?.body ?? '', /TCP SYN probing is not available: holding source ports .*Address already in use/);

  // Each exporter probes exactly its shard: the counts add up to every target, and each is the
  // share hashmod gives it (a target probed twice would count twice).
  const shares = exporters.map((_, i) => TARGETS.filter((a) => hashmod(a, exporters.length) === i).length);
  t.true(shares.every((n) => n > 0), `both shards hold targets: ${shares.join(', ')}`);
  const active = await Promise.all(
    exporters.map(async (e) => {
      const m = parseSamples((await e.get('/metrics')).body);
      return [value(m, 'icmp_active_probes') ?? -1, value(m, 'tcp_active_probes') ?? -1];
    }),
  );
  t.deepEqual(
    active,
    shares.map((n, i) => [n, i === 0 ? 3 : 0]),
  );
  const perTarget = await queryVector(classic.url, 'count by (instance) (icmp_probe_packets_sent_total)');
  t.deepEqual(perTarget.map((s) => s.value), Array(TARGETS.length).fill(1));

  // Every dashboard query: valid on both servers; answered by the one it is for.
  const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => ({ panel: p.title, expr: instantiate(q.expr) })));
  for (const { panel, expr } of queries) {
    const forNative = /_rtt_seconds[{[]/.test(expr);
    for (const [server, wanted] of [
      [classic, !forNative],
      [native, forNative],
    ] as const) {
      const result = await waitFor(
        () => queryVector(server.url, expr),
        (v) => !wanted || v.length > 0,
        { what: `"${panel}": ${expr} on ${server === classic ? 'the classic' : 'the native'} Prometheus`, timeoutMs: 60_000, everyMs: 500 },
      );
      if (wanted) t.true(result.length > 0, `${panel}: ${expr}`);
    }
  }
  // The dashboard's variables (Grafana's label_values(selector, label)), as Grafana asks them.
  for (const v of dashboard.templating.list) {
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const m = /^label_values\((.*), *([a-z_]+)\)$/.exec(q);
    if (!m) continue;
    const selector = instantiate(m[1] as string);
    const res = await fetch(`${classic.url}/api/v1/label/${m[2]}/values?match[]=${encodeURIComponent(selector)}`);
    const values = ((await res.json()) as { data?: string[] }).data ?? [];
    t.true(values.length > 0, `variable ${v.name}: ${q} gave ${JSON.stringify(values)}`);
  }
  // Across both exporters: the loss panel shows every target, the health panels both exporters.
  const loss = dashboard.panels.find((p) => p.title === 'Loss (from the counters)')?.targets?.[0]?.expr ?? '';
  t.is((await queryVector(classic.url, instantiate(loss))).filter((s) => s.labels.job === 'icmp').length, TARGETS.length);
  t.is((await queryVector(classic.url, 'icmp_engine_up')).length, exporters.length);
  // The rules evaluate over both exporters' targets too.
  const recorded = await waitFor(
    () => queryVector(classic.url, 'target:icmp_probe_loss:ratio_5m'),
    (v) => v.length === TARGETS.length,
    { what: 'the loss recording rule for every target', timeoutMs: 30_000, everyMs: 500 },
  );
  t.deepEqual(recorded.map((s) => s.value), Array(TARGETS.length).fill(0));
  // The percentiles from classic buckets on one server, from native histograms on the other.
  for (const server of [classic, native]) {
    const p99 = await waitFor(
      () => queryVector(server.url, 'target:icmp_probe_rtt_seconds:quantile_5m{quantile="0.99"}'),
      (v) => v.length === TARGETS.length,
      { what: `the p99 recording rule for every target on the ${server === classic ? 'classic' : 'native'} Prometheus`, timeoutMs: 30_000, everyMs: 500 },
    );
    t.true(p99.every((s) => s.value > 0 && s.value < 0.01), p99.map((s) => s.value).join(', '));
  }
});
