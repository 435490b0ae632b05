/**
 * Conditions on the exporter's state (and netsim's) that lab tests wait for, instead of
 * sleeping: "these targets have N final probes", "no probe is in flight", "netsim and the
 * exporter agree on every request".
 */
import type { ExporterProcess, HostTruth, Lab, Netsim, Truth } from './lab.js';
import { parseSamples, value, type Sample } from './prom.js';
import { waitFor } from './wait.js';

export type Protocol = 'icmp' | 'tcp';

/** `/probe?<query>` as samples; a status other than 200 throws (with the body). */
export async function scrape(exporter: ExporterProcess, query: string): Promise<Sample[]> {
  const r = await exporter.get(`/probe?${query}`);
  if (r.status !== 200) throw new Error(`/probe?${query.slice(0, 80)}: ${r.status} ${r.body}`);
  return parseSamples(r.body);
}

/** `/metrics` as samples. */
export async function metrics(exporter: ExporterProcess): Promise<Sample[]> {
  return parseSamples((await exporter.get('/metrics')).body);
}

/** `target=a&target=b…` */
export const targets = (ips: readonly string[]) => ips.map((ip) => `target=${ip}`).join('&');

/** The probe series in a scrape: one per target (and port), with its counters. */
export function series(samples: Sample[], proto: Protocol = 'icmp'): Array<{ labels: Record<string, string>; sent: number; recv: number; sendErrors: number }> {
  return samples
    .filter((s) => s.name === `${proto}_probe_packets_sent_total`)
    .map((s) => ({
      labels: s.labels,
      sent: s.value,
      recv: value(samples, `${proto}_probe_packets_recv_total`, s.labels) ?? 0,
      sendErrors: value(samples, `${proto}_probe_send_errors_total`, s.labels) ?? 0,
    }));
}

const describe = (samples: Sample[], proto: Protocol) =>
  series(samples, proto)
    .map((s) => `${Object.values(s.labels).join(':')} sent ${s.sent} recv ${s.recv} send errors ${s.sendErrors}`)
    .join('; ');

/**
 * Scrapes `query` until `done(samples)` holds; returns that scrape. `what` names the condition
 * in the failure message, which also lists every series' counters as last seen.
 */
export function waitForScrape(
  exporter: ExporterProcess,
  query: string,
  done: (samples: Sample[]) => boolean,
  opts: { what: string; proto?: Protocol; timeoutMs?: number; everyMs?: number },
): Promise<Sample[]> {
  return waitFor(() => scrape(exporter, query), done, {
    what: opts.what,
    timeoutMs: opts.timeoutMs ?? 30_000,
    everyMs: opts.everyMs ?? 50,
    show: (s) => describe(s, opts.proto ?? 'icmp'),
  });
}

/**
 * Waits until every series of `query` has at least `n` probes whose outcome is final
 * (`*_probe_packets_sent_total`), and returns that scrape.
 */
export function waitForProbes(
  exporter: ExporterProcess,
  query: string,
  n: number,
  opts: { proto?: Protocol; timeoutMs?: number } = {},
): Promise<Sample[]> {
  const proto = opts.proto ?? 'icmp';
  return waitForScrape(
    exporter,
    query,
    (s) => {
      const all = series(s, proto);
      return all.length > 0 && all.every((x) => x.sent >= n);
    },
    { what: `every ${proto} series of ?${query.slice(0, 120)} to have ≥ ${n} final probes`, proto, timeoutMs: opts.timeoutMs ?? 30_000 },
  );
}

export interface Flight {
  /** Probes the kernel accepted (`*_packets_sent_total` in /metrics). */
  accepted: number;
  /** Over every target: final probes that left (sent − send errors). */
  final: number;
  /** accepted − final: probes still waiting for their answer or their timeout. */
  inFlight: number;
  /** Targets in the scrapes against `*_active_probes`: the sum covers every target only when equal. */
  targets: number;
  active: number;
  /** The scrapes the sum was taken from, concatenated. */
  samples: Sample[];
}

/**
 * The engine's probes in flight, from its own counters: every probe the kernel accepted is
 * either final on its target (in `sent`, not in `send_errors`) or still in flight. `queries`
 * must together name every target of the protocol (each at most 256). The scrapes are read
 * before /metrics, so a probe that leaves between the two reads makes the count larger, never
 * smaller: `inFlight` 0 means nothing was in flight when the scrapes were read.
 */
export async function flight(exporter: ExporterProcess, queries: readonly string[], proto: Protocol = 'icmp'): Promise<Flight> {
  const samples: Sample[] = [];
  for (const q of queries) samples.push(...(await scrape(exporter, q)));
  const m = await metrics(exporter);
  const all = series(samples, proto);
  const final = all.reduce((n, s) => n + s.sent - s.sendErrors, 0);
  const accepted = value(m, `${proto}_packets_sent_total`) ?? Number.NaN;
  return { accepted, final, inFlight: accepted - final, targets: all.length, active: value(m, `${proto}_active_probes`) ?? Number.NaN, samples };
}

/**
 * Waits until no probe of the protocol is in flight (see `flight`); useful once sends are
 * frozen (an `unreachable` route makes every later send fail at once), when it means every
 * probe that left has its outcome. Returns the state it saw.
 */
export function waitAllFinal(exporter: ExporterProcess, queries: readonly string[], proto: Protocol = 'icmp', timeoutMs = 30_000): Promise<Flight> {
  return waitFor(
    () => flight(exporter, queries, proto),
    (f) => f.targets === f.active && f.inFlight === 0,
    {
      what: `every ${proto} probe the kernel accepted to be final (accepted = Σ over every target of sent − send errors)`,
      timeoutMs,
      show: (f) => `accepted ${f.accepted}, final ${f.final}, ${f.targets} targets scraped of ${f.active} active`,
    },
  );
}

/** Per address: final probes that left (sent − send errors), summed over its ports. */
export function leftPerAddress(samples: Sample[], proto: Protocol = 'icmp'): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of series(samples, proto)) {
    const ip = s.labels.ip ?? '';
    out.set(ip, (out.get(ip) ?? 0) + s.sent - s.sendErrors);
  }
  return out;
}

/**
 * After a freeze: waits until (1) netsim has written every answer it decided on (its queue is
 * empty: replies, errors and duplicate copies of every host add up to what it wrote), (2) no
 * probe of the exporter is in flight, and (3) for every address scraped, the probes that left
 * and are final equal the requests netsim saw. Then every probe either side knows of is
 * final on both sides, and their counters can be compared exactly. Returns the truth and the
 * scrapes of the read that satisfied all three. `matchRequests: false` leaves out (3), for a
 * test that floods the TUN device on purpose (its queue may drop requests netsim never sees).
 */
export async function waitSettled(
  exporter: ExporterProcess,
  sim: Netsim,
  queries: readonly string[],
  proto: Protocol = 'icmp',
  opts: { timeoutMs?: number; matchRequests?: boolean } = {},
): Promise<{ truth: Truth; samples: Sample[] }> {
  const matchRequests = opts.matchRequests ?? true;
  const pending = (truth: Truth) =>
    truth.sent - Object.values(truth.hosts).reduce((n, h: HostTruth) => n + h.replies + h.errors + h.duplicates, 0);
  const state = await waitFor(
    async () => {
      const truth = await sim.truth();
      const f = await flight(exporter, queries, proto);
      const mismatched = matchRequests ? [...leftPerAddress(f.samples, proto)].filter(([ip, left]) => left !== (truth.hosts[ip]?.requests ?? 0)) : [];
      return { truth, f, mismatched };
    },
    ({ truth, f, mismatched }) => pending(truth) === 0 && f.targets === f.active && f.inFlight === 0 && mismatched.length === 0,
    {
      what: `netsim to have written every answer, no ${proto} probe in flight${matchRequests ? ', and per address final probes that left = requests netsim saw' : ''}`,
      timeoutMs: opts.timeoutMs ?? 30_000,
      everyMs: 100,
      show: ({ truth, f, mismatched }) =>
        `netsim answers not yet written ${pending(truth)}; exporter accepted ${f.accepted}, final ${f.final} (${f.targets} targets scraped of ${f.active}); ` +
        `addresses whose final probes ≠ netsim's requests: ${mismatched
          .slice(0, 5)
          .map(([ip, left]) => `${ip} ${left} vs ${truth.hosts[ip]?.requests ?? 0}`)
          .join(', ')}${mismatched.length > 5 ? ` and ${mismatched.length - 5} more` : ''}`,
    },
  );
  return { truth: state.truth, samples: state.f.samples };
}

/**
 * Freezes sends to `dests` (addresses or prefixes): an `unreachable` route in the prober makes
 * every later send fail at once (a send error, final), while answers already on their way
 * still arrive. Wait with `waitAllFinal` or `waitSettled` afterwards.
 */
export function freezeSends(lab: Lab, dests: readonly string[]): void {
  for (const d of dests) lab.exec(lab.prober, 'ip', [d.includes(':') ? '-6' : '-4', 'route', 'replace', 'unreachable', d]);
}
