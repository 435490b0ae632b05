/** A real Prometheus (Debian's) in a lab's prober namespace, for tests and the bench. */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Lab } from './lab.js';
import { waitFor } from './wait.js';

export const PROMETHEUS = '/usr/bin/prometheus';
const PROMETHEUS_PORT = 9090;

export interface PrometheusProcess {
  child: ChildProcess;
  /** Its HTTP API, e.g. `http://198.19.0.2:9090`. */
  url: string;
}

/**
 * Starts Prometheus in the lab's prober namespace, its data in a temporary directory;
 * `config(dir)` is its configuration, and `files` (name -> contents) are written into that
 * directory first (CA certificates, password files, rules); `flags` are added to its command
 * line; `port` (default 9090) lets two run in one lab. `onTeardown` gets what kills it and
 * removes the directory. Resolves once it is ready (its log in the error otherwise).
 */
export async function startPrometheus(
  lab: Lab,
  config: (dir: string) => string,
  onTeardown: (f: () => void) => void,
  opts: { files?: Record<string, string>; flags?: readonly string[]; port?: number } = {},
): Promise<PrometheusProcess> {
  const { files = {}, flags = [], port = PROMETHEUS_PORT } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'lab-prometheus-'));
  onTeardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, contents] of Object.entries(files)) writeFileSync(join(dir, name), contents);
  writeFileSync(join(dir, 'prometheus.yml'), config(dir));
  const listen = `${lab.httpAddress}:${port}`;
  const child = lab.spawn(lab.prober, PROMETHEUS, [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=${listen}`,
    '--log.level=warn',
    ...flags,
  ]);
  // Killed before its directory goes (teardowns run last first).
  onTeardown(() => {
    try {
      process.kill(-(child.pid ?? 0), 'SIGKILL');
    } catch {
      // gone already
    }
  });
  let log = '';
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const url = `http://${listen}`;
  await waitFor(
    async () => (await fetch(`${url}/-/ready`)).status,
    (s) => s === 200,
    { what: 'Prometheus ready', everyMs: 250, show: (s) => `${s}\n${log}` },
  );
  return { child, url };
}

/**
 * A scrape job of `/probe` with the README's relabelling: each target becomes the `target`
 * parameter and the `instance` label, and is scraped from `exporters[0]`, or, with several,
 * from the one Prometheus' `hashmod` of it picks. `settings` are more lines of the job
 * (`    scrape_interval: 1s`, `    params: { … }`, auth, TLS).
 */
export function probeJob(name: string, targets: readonly string[], exporters: readonly string[], settings: readonly string[] = []): string {
  const route =
    exporters.length === 1
      ? [`      - { target_label: __address__, replacement: '${exporters[0]}' }`]
      : [
          `      - { source_labels: [__address__], modulus: ${exporters.length}, target_label: __tmp_shard, action: hashmod }`,
          ...exporters.map((e, i) => `      - { source_labels: [__tmp_shard], regex: '${i}', target_label: __address__, replacement: '${e}' }`),
        ];
  return [
    `  - job_name: ${name}`,
    '    metrics_path: /probe',
    ...settings,
    '    relabel_configs:',
    '      - { source_labels: [__address__], target_label: __param_target }',
    '      - { source_labels: [__address__], target_label: instance }',
    ...route,
    `    static_configs: [{ targets: [${targets.map((a) => `'${a}'`).join(', ')}] }]`,
  ].join('\n');
}

/** The value of a one-number PromQL query, NaN when it has none. */
export async function query(prometheus: string, promql: string): Promise<number> {
  const res = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as { data?: { result?: Array<{ value?: [number, string] }> } };
  return Number(body.data?.result?.[0]?.value?.[1] ?? NaN);
}

/** Every series of an instant vector query with its value; throws with Prometheus' error when the query fails. */
export async function queryVector(prometheus: string, promql: string): Promise<Array<{ labels: Record<string, string>; value: number }>> {
  const res = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { resultType?: string; result?: Array<{ metric?: Record<string, string>; value?: [number, string] }> };
  };
  if (body.status !== 'success') throw new Error(`${promql}: ${body.error ?? res.status}`);
  return (body.data?.result ?? []).map((r) => ({ labels: r.metric ?? {}, value: Number(r.value?.[1]) }));
}

/** Prometheus' view of its targets: job, health and last error of each. */
export async function targetHealth(prometheus: string): Promise<Array<{ job: string; health: string; lastError: string; scrapeUrl: string }>> {
  const res = await fetch(`${prometheus}/api/v1/targets`);
  const body = (await res.json()) as {
    data?: { activeTargets?: Array<{ labels?: { job?: string }; health?: string; lastError?: string; scrapeUrl?: string }> };
  };
  return (body.data?.activeTargets ?? []).map((t) => ({ job: t.labels?.job ?? '', health: t.health ?? '', lastError: t.lastError ?? '', scrapeUrl: t.scrapeUrl ?? '' }));
}
