/** Reading exposition text in tests: promtool checks it, a small reader extracts samples. */
import { spawnSync } from 'node:child_process';
import { SYSTEM_ENV } from './lab.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Lint complaints about names we do not choose: the reference's public `icmp_probe_samples_count` and `tcp_probe_samples_count`
 * (a gauge ending in `_count`, kept for compatibility; only in `/probe`). Parse errors are never accepted.
 */
const ACCEPTED_LINT = /^(icmp|tcp)_probe_samples_count non-histogram and non-summary metrics should not have "_count" suffix$/;

function promtool(text: string) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', env: SYSTEM_ENV });
  if (r.error) throw r.error;
  return r;
}

/** `promtool check metrics` with nothing accepted: its exit status and everything it said. */
export function promtoolVerdict(text: string): { status: number | null; said: string } {
  const r = promtool(text);
  return { status: r.status, said: `${r.stdout}${r.stderr}`.trim() };
}

/** Runs `promtool check metrics` (the Prometheus parser and linter); returns its complaints. */
export function promtoolProblems(text: string): string {
  const r = promtool(text);
  const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l !== '' && !ACCEPTED_LINT.test(l));
  if (r.status === 1 || (r.status !== 0 && lines.length > 0)) return lines.join('\n') || `promtool exited ${r.status}`;
  return '';
}

export function parseSamples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] === undefined || m[3] === undefined) throw new Error(`unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      if (l[1] !== undefined && l[2] !== undefined) labels[l[1]] = l[2];
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of one series, or undefined when it is absent. */
export function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value;
}

/** For the benchmarks' measuring windows. Tests wait for a state instead (helpers/wait.ts). */
export { sleep } from './wait.js';
