/**
 * /probe responses: per-target statistics as Prometheus exposition text, or as the protobuf
 * exposition (which alone carries native histograms) when the scraper asks for it.
 */
import type { TargetStats } from './native.js';
import { ProtoWriter } from './protobuf.js';

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
/** The protobuf exposition: length-delimited `io.prometheus.client.MetricFamily` messages. */
export const PROTOBUF_CONTENT_TYPE = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited';

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

interface HistogramFamily {
  name: string;
  help: string;
  header: string;
}

function histogramOf(protocol: Protocol): HistogramFamily {
  const name = `${protocol}_probe_rtt_seconds`;
  const help =
    'Round-trip times of the answered probes, from kernel timestamps, since the target was first probed: _count is packets_recv_total, _sum latency_seconds_total';
  return { name, help, header: `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} histogram\n` };
}

const HISTOGRAMS: Record<Protocol, HistogramFamily> = { icmp: histogramOf('icmp'), tcp: histogramOf('tcp') };

/** A bucket bound as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (as Prometheus' own clients label `le`). */
export function formatBound(v: number): string {
  if (v === Infinity) return '+Inf';
  // Go's shortest 'g': an exponent below -4 or at 6 and above (1e-05, 1e+06).
  const exponent = Math.floor(Math.log10(Math.abs(v)));
  if (v !== 0 && (exponent < -4 || exponent >= 6)) {
    return v.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
  }
  return String(v);
}

/**
 * Writes the exposition text for the targets asked for, directly: one string per sample,
 * no registry or metric objects per request (a 256-target scrape built 2,800 of them).
 * ICMP series are labelled `ip`, TCP series `ip` and `tcp_port`.
 */
export function renderProbe(
  protocol: Protocol,
  results: readonly ProbeResult[],
  bounds: ArrayLike<number> = [],
): { body: string; contentType: string } {
  const pairs = results.map(({ address, port }) =>
    protocol === 'icmp' ? `ip="${escapeLabel(address)}"` : `ip="${escapeLabel(address)}",tcp_port="${port}"`,
  );
  let body = '';
  for (const f of FAMILIES[protocol]) {
    body += f.header;
    for (let i = 0; i < results.length; i++) {
      const v = f.value((results[i] as ProbeResult).stats);
      if (v !== undefined) body += `${f.name}{${pairs[i]}} ${formatValue(v)}\n`;
    }
  }
  const h = HISTOGRAMS[protocol];
  body += h.header;
  const les = Array.from(bounds, formatBound);
  for (let i = 0; i < results.length; i++) {
    const s = (results[i] as ProbeResult).stats;
    const labels = pairs[i] as string;
    for (let b = 0; b < les.length; b++) {
      body += `${h.name}_bucket{${labels},le="${les[b]}"} ${formatValue(s.buckets[b] ?? 0)}\n`;
    }
    body += `${h.name}_bucket{${labels},le="+Inf"} ${formatValue(s.received)}\n`;
    body += `${h.name}_sum{${labels}} ${formatValue(s.latencySecondsTotal)}\n`;
    body += `${h.name}_count{${labels}} ${formatValue(s.received)}\n`;
  }
  return { body, contentType: CONTENT_TYPE };
}

const enum MetricType {
  Counter = 0,
  Gauge = 1,
  Histogram = 4,
}

/** Observations at or below this many seconds count in the zero bucket (the engine's, client_golang's default). */
const NATIVE_ZERO_THRESHOLD = 2.938735877055719e-39;

function labelPairs(w: ProtoWriter, protocol: Protocol, r: ProbeResult): void {
  w.message(1, (l) => l.string(1, 'ip').string(2, r.address));
  if (protocol === 'tcp') w.message(1, (l) => l.string(1, 'tcp_port').string(2, String(r.port)));
}

/**
 * Native buckets as the protobuf wants them: spans of consecutive indexes (the first offset
 * absolute, the others the gap since the last span) and each count as the difference from
 * the one before.
 */
export function nativeSpans(pairs: ArrayLike<number>): { spans: Array<[offset: number, length: number]>; deltas: number[] } {
  const spans: Array<[number, number]> = [];
  const deltas: number[] = [];
  let previousIndex = 0;
  let previousCount = 0;
  for (let k = 0; k + 1 < pairs.length; k += 2) {
    const index = pairs[k] as number;
    const count = pairs[k + 1] as number;
    const last = spans[spans.length - 1];
    if (last && index === previousIndex + 1) last[1]++;
    else spans.push([last ? index - previousIndex - 1 : index, 1]);
    deltas.push(count - previousCount);
    previousIndex = index;
    previousCount = count;
  }
  return { spans, deltas };
}

function histogram(w: ProtoWriter, s: TargetStats, bounds: ArrayLike<number>): void {
  w.uint(1, s.received).double(2, s.latencySecondsTotal);
  for (let b = 0; b < bounds.length; b++) {
    w.message(3, (bucket) => bucket.uint(1, s.buckets[b] ?? 0).double(2, bounds[b] as number));
  }
  const native = s.native;
  if (!native) return;
  w.sint(5, native.schema).double(6, NATIVE_ZERO_THRESHOLD).uint(7, native.zeroCount);
  const { spans, deltas } = nativeSpans(native.buckets);
  // No bucket yet: an empty span says "native" to every Prometheus version, as client_golang does.
  if (spans.length === 0) spans.push([0, 0]);
  for (const [offset, length] of spans) w.message(12, (span) => span.sint(1, offset).uint(2, length));
  for (const d of deltas) w.sint(13, d);
}

/**
 * The same families as `renderProbe`, as delimited protobuf `MetricFamily` messages; the RTT
 * histograms carry their native buckets as well as the classic ones.
 */
export function renderProbeProtobuf(
  protocol: Protocol,
  results: readonly ProbeResult[],
  bounds: ArrayLike<number> = [],
): { body: Uint8Array; contentType: string } {
  const out = new ProtoWriter(1024);
  const family = (name: string, help: string, type: MetricType, metrics: (f: ProtoWriter) => void) => {
    const f = new ProtoWriter(256);
    f.string(1, name).string(2, help).uint(3, type);
    metrics(f);
    out.delimited(f.finish());
  };
  for (const f of FAMILIES[protocol]) {
    family(f.name, f.help, f.type === 'counter' ? MetricType.Counter : MetricType.Gauge, (fw) => {
      for (const r of results) {
        const v = f.value(r.stats);
        if (v === undefined) continue;
        fw.message(4, (m) => {
          labelPairs(m, protocol, r);
          m.message(f.type === 'counter' ? 3 : 2, (value) => value.double(1, v));
        });
      }
    });
  }
  const h = HISTOGRAMS[protocol];
  family(h.name, h.help, MetricType.Histogram, (fw) => {
    for (const r of results) {
      fw.message(4, (m) => {
        labelPairs(m, protocol, r);
        m.message(7, (hw) => histogram(hw, r.stats, bounds));
      });
    }
  });
  return { body: out.finish(), contentType: PROTOBUF_CONTENT_TYPE };
}

/**
 * Whether an `Accept` header prefers the protobuf exposition (Prometheus asks for it first,
 * with `--enable-feature=native-histograms`) to the text one.
 */
export function wantsProtobuf(accept: string | undefined): boolean {
  if (!accept) return false;
  let protobuf = 0;
  let text = 0;
  for (const range of accept.split(',')) {
    const [type = '', ...params] = range.split(';').map((p) => p.trim());
    const param = (key: string) => params.find((p) => p.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1).replace(/^"(.*)"$/, '$1');
    const q = Number(param('q') ?? '1');
    const weight = Number.isFinite(q) ? Math.min(1, Math.max(0, q)) : 0;
    const mediaType = type.toLowerCase();
    if (mediaType === 'application/vnd.google.protobuf') {
      if (param('proto') === 'io.prometheus.client.MetricFamily' && param('encoding') === 'delimited') protobuf = Math.max(protobuf, weight);
    } else if (mediaType === 'text/plain' || mediaType === 'application/openmetrics-text' || mediaType === '*/*' || mediaType === 'text/*') {
      text = Math.max(text, weight);
    }
  }
  return protobuf > 0 && protobuf >= text;
}
