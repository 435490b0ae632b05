/** /probe responses: per-target statistics as Prometheus exposition text. */
import { Counter, Gauge, Registry } from 'prom-client';
import type { TargetStats } from './native.js';

export interface ProbeResult {
  address: string;
  stats: TargetStats;
}

const WINDOW = 'over the last icmp_probe_samples_count probes (at most 250; only those after a change in loss of more than 12 points)';

/** Builds a throw-away registry for one response, so series exist only for the targets asked for. */
export async function renderProbe(results: readonly ProbeResult[]): Promise<{ body: string; contentType: string }> {
  const registry = new Registry();
  const registers = [registry];
  const labelNames = ['ip'] as const;
  const counter = (name: string, help: string) => new Counter({ name, help, labelNames, registers });
  const gauge = (name: string, help: string) => new Gauge({ name, help, labelNames, registers });

  const sent = counter('icmp_probe_packets_sent_total', 'ICMP echo requests to this ip whose outcome is final: answered, timed out, refused by the kernel or answered by an ICMP error');
  const recv = counter('icmp_probe_packets_recv_total', 'ICMP echo requests to this ip answered by an echo reply in time');
  const latency = counter('icmp_probe_latency_seconds_total', 'Sum of the round-trip times of the answered probes, from kernel timestamps');
  const latencySq = counter(
    'icmp_probe_latency_squared_seconds_total',
    'Sum of the squared round-trip times of the answered probes, for the standard deviation over time',
  );
  // Beyond the reference: why probes were lost when the wire was not the reason.
  const sendErrors = counter(
    'icmp_probe_send_errors_total',
    'Probes to this ip the kernel refused to send (no route, address gone, buffer full); included in sent, never in recv',
  );
  const icmpErrors = counter(
    'icmp_probe_icmp_errors_total',
    'Probes to this ip answered by an ICMP error (unreachable, time exceeded) instead of a reply; included in sent, never in recv',
  );
  const mean = gauge('icmp_probe_latency_seconds', `Mean round-trip time of the answered probes ${WINDOW}`);
  const stddev = gauge('icmp_probe_standard_deviation_seconds', `Standard deviation of the round-trip time of the answered probes ${WINDOW}`);
  const loss = gauge('icmp_probe_loss_ratio', `Share of unanswered probes ${WINDOW}`);
  const samples = gauge('icmp_probe_samples_count', 'Number of probes the window gauges cover');

  for (const { address, stats } of results) {
    const labels = { ip: address };
    sent.inc(labels, stats.sent);
    recv.inc(labels, stats.received);
    latency.inc(labels, stats.latencySecondsTotal);
    latencySq.inc(labels, stats.latencySquaredSecondsTotal);
    sendErrors.inc(labels, stats.sendErrors);
    icmpErrors.inc(labels, stats.icmpErrors);
    samples.set(labels, stats.windowSamples);
    // Undefined values (no samples yet, no reply in the window) are left out, never NaN.
    if (stats.windowLossRatio !== undefined) loss.set(labels, stats.windowLossRatio);
    if (stats.windowLatencySeconds !== undefined) mean.set(labels, stats.windowLatencySeconds);
    if (stats.windowStddevSeconds !== undefined) stddev.set(labels, stats.windowStddevSeconds);
  }
  return { body: await registry.metrics(), contentType: registry.contentType };
}
