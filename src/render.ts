/** /probe responses: per-target statistics as Prometheus exposition text. */
import type { TargetStats } from './native.js';

export type Protocol = 'icmp' | 'tcp';

export interface ProbeResult {
  address: string;
  /** 0 for ICMP. */
  port: number;
  stats: TargetStats;
}

const WINDOW =
  'over the last <prefix>_samples_count probes (at most 250; only those after a change in loss of more than 12 points)';

const WHAT: Record<Protocol, { probes: string; answer: string }> = {
  icmp: { probes: 'ICMP echo requests', answer: 'an echo reply' },
  tcp: { probes: 'TCP SYNs', answer: 'a SYN-ACK (port open) or a RST (port closed, host up)' },
};

/** The text exposition format, version 0.0.4 (what Prometheus scrapes). */
export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabel(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  /** The value for one target; undefined leaves the target's sample out (never NaN). */
  value: (s: TargetStats) => number | undefined;
}

interface Prepared extends Family {
  /** Its `# HELP` and `# TYPE` lines, written once. */
  header: string;
}

function familiesOf(protocol: Protocol): Prepared[] {
  const prefix = `${protocol}_probe`;
  const window = WINDOW.replace('<prefix>', prefix);
  const { probes, answer } = WHAT[protocol];
  const counter = (name: string, help: string, value: Family['value']): Family => ({ name: `${prefix}_${name}`, help, type: 'counter', value });
  const gauge = (name: string, help: string, value: Family['value']): Family => ({ name: `${prefix}_${name}`, help, type: 'gauge', value });
  const families: Family[] = [
    counter(
      'packets_sent_total',
      `${probes} to this target whose outcome is final: answered, timed out, refused by the kernel or answered by an ICMP error`,
      (s) => s.sent,
    ),
    counter('packets_recv_total', `${probes} to this target answered in time by ${answer}`, (s) => s.received),
    counter('latency_seconds_total', 'Sum of the round-trip times of the answered probes, from kernel timestamps', (s) => s.latencySecondsTotal),
    counter(
      'latency_squared_seconds_total',
      'Sum of the squared round-trip times of the answered probes, for the standard deviation over time',
      (s) => s.latencySquaredSecondsTotal,
    ),
    // Beyond the reference: why probes were lost when the wire was not the reason.
    counter(
      'send_errors_total',
      `${probes} to this target the kernel refused to send (no route, address gone, buffer full); included in sent, never in recv`,
      (s) => s.sendErrors,
    ),
    counter(
      'icmp_errors_total',
      `${probes} to this target answered by an ICMP error (unreachable, time exceeded) instead; included in sent, never in recv`,
      (s) => s.icmpErrors,
    ),
    ...(protocol === 'tcp'
      ? [counter('closed_total', 'SYNs to this target answered by a RST: the host is up, the port closed; included in recv', (s) => s.closed)]
      : []),
    gauge('latency_seconds', `Mean round-trip time of the answered probes ${window}`, (s) => s.windowLatencySeconds ?? undefined),
    gauge(
      'standard_deviation_seconds',
      `Standard deviation of the round-trip time of the answered probes ${window}`,
      (s) => s.windowStddevSeconds ?? undefined,
    ),
    gauge('loss_ratio', `Share of unanswered probes ${window}`, (s) => s.windowLossRatio ?? undefined),
    gauge('samples_count', 'Number of probes the window gauges cover', (s) => s.windowSamples),
  ];
  return families.map((f) => ({ ...f, header: `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n` }));
}

/** The families and their header lines, made once per protocol rather than for every request. */
const FAMILIES: Record<Protocol, Prepared[]> = { icmp: familiesOf('icmp'), tcp: familiesOf('tcp') };

/**
 * Writes the exposition text for the targets asked for, directly: one string per sample,
 * no registry or metric objects per request (a 256-target scrape built 2,800 of them).
 * ICMP series are labelled `ip`, TCP series `ip` and `tcp_port`.
 */
export function renderProbe(protocol: Protocol, results: readonly ProbeResult[]): { body: string; contentType: string } {
  const labels = results.map(({ address, port }) =>
    protocol === 'icmp' ? `{ip="${escapeLabel(address)}"}` : `{ip="${escapeLabel(address)}",tcp_port="${port}"}`,
  );
  let body = '';
  for (const f of FAMILIES[protocol]) {
    body += f.header;
    for (let i = 0; i < results.length; i++) {
      const v = f.value((results[i] as ProbeResult).stats);
      if (v !== undefined) body += `${f.name}${labels[i]} ${formatValue(v)}\n`;
    }
  }
  return { body, contentType: CONTENT_TYPE };
}
