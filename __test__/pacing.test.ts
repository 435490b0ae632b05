/**
 * Pacing on the wire: the peer records when each echo request arrives (kernel receive
 * stamps on a raw socket), and the tests look at the spacing of the sends, the -maxpps cap,
 * and whether a target's phase in the round moves when others come and go.
 *
 * A loaded machine sends some probes late; it never sends one early. So each test records
 * until it has the arrivals it needs (not for a fixed time), and judges a target's phase by
 * its least delayed arrival: a late send does not move it, a burst (every phase the same) or a
 * re-spread round does. An arrival far from its phase must be matched by a send the engine
 * itself counted as late (`icmp_send_schedule_late_total`): a schedule that moved a target
 * counts nothing late. The tests are serial: they judge milliseconds.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { Lab, type ExporterProcess } from './helpers/lab.js';
import { metrics } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

/** Prints "seconds destination" for every echo request reaching the peer, as it comes, until stopped (or `seconds` pass). */
const RECORD = `
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
print("recording", flush=True)
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(128, 64)
    except socket.timeout:
        continue
    if len(data) < 28 or data[20] != 8:
        continue
    sec, nsec = struct.unpack("qq", anc[0][2][:16])
    print("%d.%09d %s" % (sec, nsec, socket.inet_ntoa(data[16:20])), flush=True)
`;

interface Arrival {
  t: number;
  dst: string;
}

/** The peer's recorder: arrivals stream in as they come; `until` waits for enough of them. */
class Recorder {
  readonly arrivals: Arrival[] = [];
  private constructor(private readonly child: ChildProcess) {}

  static async start(lab: Lab): Promise<Recorder> {
    // 120 s is only a backstop: the test stops it, and the lab's teardown ends it in any case.
    const child = lab.spawn(lab.peer, 'python3', ['-c', RECORD, '120']);
    const rec = new Recorder(child);
    let partial = '';
    let err = '';
    let ready = false;
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'recording') ready = true;
        else if (line !== '') {
          const [t, dst] = line.split(' ');
          rec.arrivals.push({ t: Number(t), dst: dst ?? '' });
        }
      }
    });
    await waitFor(
      () => {
        if (child.exitCode !== null) throw new Error(`the recorder exited: ${err}`);
        return ready;
      },
      (r) => r,
      { what: 'the recorder in the peer to start' },
    );
    return rec;
  }

  /** Waits until `done(arrivals)` holds; returns a copy of the arrivals then. */
  until(done: (arrivals: Arrival[]) => boolean, what: string, timeoutMs = 60_000): Promise<Arrival[]> {
    return waitFor(() => [...this.arrivals], done, { what, timeoutMs, show: (a) => `${a.length} arrivals` });
  }

  stop(): void {
    if (this.child.pid !== undefined && this.child.exitCode === null) {
      try {
        process.kill(-this.child.pid, 'SIGTERM');
      } catch {
        // gone already
      }
    }
  }
}

const addresses = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `198.18.140.${from + i}`);
const query = (ips: readonly string[]) => `/probe?${ips.map((ip) => `target=${ip}`).join('&')}`;
const byTarget = (arrivals: readonly Arrival[], ips: readonly string[]) =>
  new Map(ips.map((ip) => [ip, arrivals.filter((a) => a.dst === ip).map((a) => a.t)]));

/** Sends the engine counted as more than `over` seconds late, since it started. */
async function lateSends(exporter: ExporterProcess, over: '0.001' | '0.01'): Promise<number> {
  return value(await metrics(exporter), 'icmp_send_schedule_late_total', { over }) ?? Number.NaN;
}

/**
 * One target's arrivals `times` (ascending, one per round of `interval` s): its phase is
 * where its least delayed arrival lies (`base`, as the time of round 0), and each arrival's
 * lateness is how far after that phase it came.
 */
function phaseOf(times: readonly number[], interval: number): { base: number; lateness: number[]; gaps: number[] } {
  const offsets = times.map((t, r) => t - r * interval);
  const base = Math.min(...offsets);
  return { base, lateness: offsets.map((o) => o - base), gaps: times.slice(1).map((t, i) => t - (times[i] ?? 0)) };
}

/** Arrivals more than this after their target's phase are late sends (a third of 1/64 s). */
const LATE_S = 0.005;

/**
 * What is wrong with `rounds` (per target, its arrivals in consecutive rounds, from round 0)
 * for targets spread evenly over an `interval`: a target sent twice in a round or skipped,
 * phases not evenly spread, more late arrivals than the engine's `lateSends` (sent more than
 * 1 ms late), or a round out of the phases' order. Empty when all is well.
 */
function evenRoundProblems(rounds: ReadonlyMap<string, readonly number[]>, interval: number, lateSends: number): string[] {
  const problems: string[] = [];
  const even = interval / rounds.size;
  const phases = [...rounds].map(([ip, times]) => ({ ip, times, ...phaseOf(times, interval) }));
  for (const p of phases) {
    // Twice in a round leaves a gap near 0; a skipped round, one near two intervals.
    if (!p.gaps.every((g) => g > 0.5 * interval && g < 1.5 * interval)) problems.push(`${p.ip}: not once every round: ${p.gaps.map((g) => g.toFixed(3)).join(', ')} s apart`);
  }
  // The phases, each from its least delayed arrival: evenly spread (a burst puts them together).
  const ring = phases.map((p) => p.base % interval).sort((a, b) => a - b);
  const spacing = ring.map((p, i) => ((ring[(i + 1) % ring.length] ?? 0) - p + interval) % interval);
  if (!spacing.every((g) => g > 0.5 * even && g < 1.5 * even)) {
    problems.push(`phases not ${(even * 1000).toFixed(1)} ms apart: ${(Math.min(...spacing) * 1000).toFixed(2)} to ${(Math.max(...spacing) * 1000).toFixed(2)} ms`);
  }
  const late = phases.reduce((n, p) => n + p.lateness.filter((d) => d > LATE_S).length, 0);
  if (late > lateSends) problems.push(`${late} arrivals more than ${LATE_S * 1000} ms after their phase, but the engine sent only ${lateSends} probes more than 1 ms late`);
  // Each round, the arrivals on time come in the order of the phases.
  const order = [...phases].sort((a, b) => a.base - b.base);
  const rounds_ = Math.min(...phases.map((p) => p.times.length));
  for (let r = 0; r < rounds_; r++) {
    const onTime = order.filter((p) => (p.lateness[r] ?? 1) <= LATE_S);
    const came = [...onTime].sort((a, b) => (a.times[r] ?? 0) - (b.times[r] ?? 0));
    const moved = came.filter((p, i) => p !== onTime[i]).length;
    if (moved > 0) problems.push(`round ${r}: ${moved} targets out of the phases' order`);
  }
  return problems;
}

/**
 * What is wrong with the arrivals of targets that must keep their phase: a target sent twice
 * in a round or skipped, or arrivals 20 ms or more from its phase beyond the engine's
 * `lateSends` (sent more than 10 ms late). A re-spread round moves a phase by a large share
 * of the round, and nothing counts that as late.
 */
function keptPhaseProblems(rounds: ReadonlyMap<string, readonly number[]>, interval: number, lateSends: number): string[] {
  const problems: string[] = [];
  let moved = 0;
  for (const [ip, times] of rounds) {
    const p = phaseOf(times, interval);
    if (!p.gaps.every((g) => g > 0.5 * interval && g < 1.5 * interval)) problems.push(`${ip}: not once every round: ${p.gaps.map((g) => g.toFixed(3)).join(', ')} s apart`);
    moved += p.lateness.filter((d) => d >= 0.02).length;
  }
  if (moved > lateSends) problems.push(`${moved} arrivals 20 ms or more after their phase, but the engine sent only ${lateSends} probes more than 10 ms late`);
  return problems;
}

/**
 * Rate of arrivals, and the most of them in any window of `windowS` seconds. The engine sends
 * in turns on a grid (up to 10 ms apart): a turn sends what is due in it, so the cap holds
 * over any window with one turn's worth of room (`cap × (window + turn)`), not between two
 * consecutive probes.
 */
function capFigures(times: readonly number[], windowS: number): { rate: number; most: number } {
  let most = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while ((times[j] ?? Infinity) < (times[i] ?? 0) + windowS) j++;
    most = Math.max(most, j - i);
  }
  return { rate: (times.length - 1) / ((times.at(-1) ?? 0) - (times[0] ?? 0)), most };
}

/** The longest turn of the engine's grid, in seconds. */
const TURN_MAX_S = 0.01;

// The judges on made-up arrivals: a schedule with late sends passes, a burst and a re-spread fail.
const rnd = (() => {
  let x = 42;
  return () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
})();
const made = (n: number, rounds: number, at: (target: number, round: number) => number) =>
  new Map(Array.from({ length: n }, (_, i) => [`t${i}`, Array.from({ length: rounds }, (_, r) => at(i, r))]));

test('the pacing judges: late sends pass when counted, a burst and a re-spread fail', (t) => {
  const t0 = 1_700_000_000.25;
  const even = (i: number, r: number) => t0 + r + i / 64;
  t.deepEqual(evenRoundProblems(made(64, 4, even), 1, 0), []);
  // One arrival in eight up to 12 ms late (a loaded machine), counted by the engine.
  let delayed = 0;
  const late = made(64, 4, (i, r) => {
    if (rnd() >= 0.125) return even(i, r) + rnd() * 0.0005;
    delayed += 1;
    return even(i, r) + 0.006 + rnd() * 0.006;
  });
  t.deepEqual(evenRoundProblems(late, 1, delayed), []);
  t.true(evenRoundProblems(late, 1, 0).some((p) => /arrivals more than 5 ms after their phase/.test(p)), 'unless the engine did not count them');
  // Every phase 0, sends 100 µs apart (the pacer at 10,000/s): a burst.
  t.true(evenRoundProblems(made(64, 4, (i, r) => t0 + r + i * 0.0001), 1, 0).some((p) => /phases not/.test(p)));
  // Even spacing, but a new order each round.
  const order = Array.from({ length: 4 }, () => Array.from({ length: 64 }, (_, i) => i).sort(() => rnd() - 0.5));
  t.true(evenRoundProblems(made(64, 4, (i, r) => t0 + r + (order[r]?.indexOf(i) ?? 0) / 64), 1, 0).length > 0);
  // Kept phases: a late send passes when counted; a target moved to another phase fails.
  const kept = (i: number, r: number) => t0 + r + [0, 0.5, 0.25, 0.75][i]!;
  t.deepEqual(keptPhaseProblems(made(4, 7, (i, r) => kept(i, r) + (i === 1 && r === 3 ? 0.03 : 0)), 1, 1), []);
  t.true(keptPhaseProblems(made(4, 7, (i, r) => kept(i, r) + (i === 1 && r === 3 ? 0.03 : 0)), 1, 0).length > 0);
  t.true(keptPhaseProblems(made(4, 7, (i, r) => kept(i, r) + (r >= 3 && r <= 4 ? 0.2 * i : 0)), 1, 0).length > 0);
  // The cap: 200 a second spread, in turns of 2 every 10 ms, or in bursts of 20 every 100 ms.
  const spread = Array.from({ length: 601 }, (_, i) => t0 + i / 200);
  t.is(capFigures(spread, TURN_MAX_S).most, 2);
  const turns = Array.from({ length: 601 }, (_, i) => t0 + Math.floor(i / 2) * 0.01 + (i % 2) * 0.00001);
  t.true(capFigures(turns, TURN_MAX_S).most <= 200 * 2 * TURN_MAX_S + 1);
  const bursts = Array.from({ length: 601 }, (_, i) => t0 + Math.floor(i / 20) * 0.1 + (i % 20) * 0.0001);
  t.true(capFigures(bursts, TURN_MAX_S).most > 200 * 2 * TURN_MAX_S + 1);
});

test.serial('64 targets at 1 s: every round sends each target once, about 1/64 s apart, in the same order', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500']);
  const ips = addresses(64);
  const recorder = await Recorder.start(lab);
  const late0 = await lateSends(exporter, '0.001');
  await exporter.get(query(ips));
  // Four rounds: each target is due at its phase in the round from its first probe on.
  const arrivals = await recorder.until((a) => [...byTarget(a, ips).values()].every((times) => times.length >= 4), 'four arrivals of each of the 64 targets');
  recorder.stop();
  const late = (await lateSends(exporter, '0.001')) - late0;
  const rounds = new Map([...byTarget(arrivals, ips)].map(([ip, times]) => [ip, times.slice(0, 4)]));
  t.deepEqual(evenRoundProblems(rounds, 1, late), [], `${late} sends more than 1 ms late meanwhile`);
});

test.serial('-maxpps caps the rate below what the targets are due', async (t) => {
  const lab = Lab.create(t);
  // 100 targets every 100 ms are due 1,000 times a second; the cap allows 200.
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '50', '-maxpps', '200']);
  const recorder = await Recorder.start(lab);
  await exporter.get(query(addresses(100)));
  // Three seconds' worth at the cap, however long they take to come.
  const arrivals = await recorder.until((a) => a.length >= 601, '601 arrivals (3 s at the cap)');
  recorder.stop();
  const times = arrivals.slice(0, 601).map((a) => a.t);
  const { rate } = capFigures(times, TURN_MAX_S);
  // The pacer lets a late turn catch up by one turn's worth at most: never much above the cap.
  t.true(rate > 150 && rate < 220, `${rate.toFixed(0)} probes/s for a cap of 200`);
  // Paced, not bursts: over any window, at most the cap's share of it and one turn more.
  for (const windowS of [TURN_MAX_S, 0.05, 0.5]) {
    const { most } = capFigures(times, windowS);
    t.true(most <= 200 * (windowS + TURN_MAX_S) + 1, `${most} sends within ${windowS * 1000} ms for a cap of 200/s`);
  }
});

test.serial('a target keeps its phase in the round while others are added and expire', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500', '-expiry', '1500']);
  const kept = addresses(4);
  const newcomers = addresses(100, 50);
  const keep = setInterval(() => void exporter.get(query(kept)).catch(() => undefined), 300);
  t.teardown(() => clearInterval(keep));
  const recorder = await Recorder.start(lab);
  const late0 = await lateSends(exporter, '0.01');
  await exporter.get(query(kept));
  const count = (a: Arrival[], ip: string) => a.filter((x) => x.dst === ip).length;
  await recorder.until((a) => kept.every((ip) => count(a, ip) >= 2), 'two rounds of the kept targets');
  await exporter.get(query(newcomers)); // 100 more, for one request: they expire 1.5 s later
  await waitFor(() => metrics(exporter), (m) => value(m, 'icmp_active_probes') === kept.length, {
    what: 'the newcomers to expire (icmp_active_probes back to 4)',
    show: (m) => `${value(m, 'icmp_active_probes')} active`,
  });
  const atExpiry = [...recorder.arrivals];
  await recorder.until((a) => kept.every((ip) => count(a, ip) >= count(atExpiry, ip) + 2), 'two more rounds of the kept targets after the expiry');
  recorder.stop();
  const arrivals = [...recorder.arrivals];
  const late = (await lateSends(exporter, '0.01')) - late0;
  const probed = new Set(arrivals.filter((a) => newcomers.includes(a.dst)).map((a) => a.dst));
  t.is(probed.size, newcomers.length, `every newcomer was probed (${arrivals.filter((a) => !kept.includes(a.dst)).length} probes)`);
  const rounds = byTarget(arrivals, kept);
  for (const [ip, times] of rounds) t.true(times.length >= 5, `${ip}: ${times.length} probes`);
  t.deepEqual(keptPhaseProblems(rounds, 1, late), [], `${late} sends more than 10 ms late meanwhile`);
});
