/** /probe responses: per-target statistics as Prometheus exposition text. */
import { Counter, Gauge, Registry } from 'prom-client';
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

/**
 * Builds a throw-away registry for one response, so series exist only for the targets asked
 * for. ICMP series are labelled `ip`, TCP series `ip` and `tcp_port`.
 */
export async function renderProbe(
  protocol: Protocol,
  results: readonly ProbeResult[],
): Promise<{ body: string; contentType: string }> {
  const registry = new Registry();
  const registers = [registry];
  const prefix = `${protocol}_probe`;
  const labelNames = protocol === 'icmp' ? ['ip'] : ['ip', 'tcp_port'];
  const counter = (name: string, help: string) => new Counter({ name: `${prefix}_${name}`, help, labelNames, registers });
  const gauge = (name: string, help: string) => new Gauge({ name: `${prefix}_${name}`, help, labelNames, registers });
  const window = WINDOW.replace('<prefix>', prefix);
  const { probes, answer } = WHAT[protocol];

  const sent = counter(
    'packets_sent_total',
    `${probes} to this target whose outcome is final: answered, timed out, refused by the kernel or answered by an ICMP error`,
  );
  const recv = counter('packets_recv_total', `${probes} to this target answered in time by ${answer}`);
  const latency = counter('latency_seconds_total', 'Sum of the round-trip times of the answered probes, from kernel timestamps');
  const latencySq = counter(
    'latency_squared_seconds_total',
    'Sum of the squared round-trip times of the answered probes, for the standard deviation over time',
  );
  // Beyond the reference: why probes were lost when the wire was not the reason.
  const sendErrors = counter(
    'send_errors_total',
    `${probes} to this target the kernel refused to send (no route, address gone, buffer full); included in sent, never in recv`,
  );
  const icmpErrors = counter(
    'icmp_errors_total',
    `${probes} to this target answered by an ICMP error (unreachable, time exceeded) instead; included in sent, never in recv`,
  );
  const closed =
    protocol === 'tcp'
      ? counter('closed_total', 'SYNs to this target answered by a RST: the host is up, the port closed; included in recv')
      : undefined;
  const mean = gauge('latency_seconds', `Mean round-trip time of the answered probes ${window}`);
  const stddev = gauge('standard_deviation_seconds', `Standard deviation of the round-trip time of the answered probes ${window}`);
  const loss = gauge('loss_ratio', `Share of unanswered probes ${window}`);
  const samples = gauge('samples_count', 'Number of probes the window gauges cover');

  for (const { address, port, stats } of results) {
    const labels: Record<string, string> = protocol === 'icmp' ? { ip: address } : { ip: address, tcp_port: String(port) };
    sent.inc(labels, stats.sent);
    recv.inc(labels, stats.received);
    latency.inc(labels, stats.latencySecondsTotal);
    latencySq.inc(labels, stats.latencySquaredSecondsTotal);
    sendErrors.inc(labels, stats.sendErrors);
    icmpErrors.inc(labels, stats.icmpErrors);
    closed?.inc(labels, stats.closed);
    samples.set(labels, stats.windowSamples);
    // Undefined values (no samples yet, no answer in the window) are left out, never NaN.
    if (stats.windowLossRatio !== undefined) loss.set(labels, stats.windowLossRatio);
    if (stats.windowLatencySeconds !== undefined) mean.set(labels, stats.windowLatencySeconds);
    if (stats.windowStddevSeconds !== undefined) stddev.set(labels, stats.windowStddevSeconds);
  }
  return { body: await registry.metrics(), contentType: registry.contentType };
}
