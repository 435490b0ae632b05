/**
 * Pacing on the wire: the peer records when each echo request arrives (kernel receive
 * stamps on a raw socket), and the tests look at the spacing of the sends, the -maxpps cap,
 * and whether a target's phase in the round moves when others come and go.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { Lab } from './helpers/lab.js';
import { sleep } from './helpers/prom.js';

/** Prints "seconds destination" for every echo request reaching the peer, until stdin closes or `seconds` pass. */
const RECORD = `
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
out = []
print("recording", flush=True)
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(128, 64)
    except socket.timeout:
        continue
    if len(data) < 28 or data[20] != 8:
        continue
    sec, nsec = struct.unpack("qq", anc[0][2][:16])
    out.append("%d.%09d %s" % (sec, nsec, socket.inet_ntoa(data[16:20])))
print("\\n".join(out), flush=True)
`;

interface Arrival {
  t: number;
  dst: string;
}

/** Starts recording in the peer; the promise resolves with what arrived once `seconds` have passed. */
async function record(lab: Lab, seconds: number): Promise<() => Promise<Arrival[]>> {
  const child: ChildProcess = lab.spawn(lab.peer, 'python3', ['-c', RECORD, String(seconds)]);
  let out = '';
  let err = '';
  let gone = false;
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) =>
    child.on('exit', () => {
      gone = true;
      resolve();
    }),
  );
  while (!out.includes('recording')) {
    if (gone) throw new Error(`the recorder failed: ${err}`);
    await sleep(20);
  }
  return async () => {
    await exited;
    return out
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((line) => {
        const [t, dst] = line.split(' ');
        return { t: Number(t), dst: dst ?? '' };
      });
  };
}

const addresses = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `198.18.140.${from + i}`);
const query = (ips: readonly string[]) => `/probe?${ips.map((ip) => `target=${ip}`).join('&')}`;

/** The phase of each arrival in the round, in [0, 1). */
const phase = (t: number, intervalS: number) => (t / intervalS) % 1;

test('64 targets at 1 s: every round sends each target once, about 1/64 s apart, in the same order', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500']);
  const ips = addresses(64);
  await exporter.get(query(ips));
  await sleep(1500);
  const done = await record(lab, 3.2);
  const arrivals = await done();
  // Three whole rounds from the first arrival.
  const start = arrivals[0]?.t ?? 0;
  const rounds = [0, 1, 2].map((r) => arrivals.filter((a) => a.t >= start + r - 0.002 && a.t < start + r + 0.998));
  for (const [r, round] of rounds.entries()) {
    t.is(new Set(round.map((a) => a.dst)).size, 64, `round ${r}: every target once`);
    t.is(round.length, 64, `round ${r}: and only once`);
  }
  t.deepEqual(
    rounds[1]?.map((a) => a.dst),
    rounds[0]?.map((a) => a.dst),
    'the same order every round',
  );
  const gaps = arrivals.slice(1).map((a, i) => a.t - (arrivals[i]?.t ?? 0));
  const even = 1 / 64;
  const near = gaps.filter((g) => g > even * 0.5 && g < even * 1.5).length;
  // A shared machine delays the odd send (a burst would put nearly every gap near 0).
  t.true(near >= gaps.length * 0.8, `${near} of ${gaps.length} gaps within half of ${(even * 1000).toFixed(1)} ms`);
  t.true(Math.max(...gaps) < even * 6, `no gap like a whole burst's: longest ${(Math.max(...gaps) * 1000).toFixed(1)} ms`);
});

test('-maxpps caps the rate below what the targets are due', async (t) => {
  const lab = Lab.create(t);
  // 100 targets every 100 ms are due 1,000 times a second; the cap allows 200.
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '50', '-maxpps', '200']);
  await exporter.get(query(addresses(100)));
  await sleep(1000);
  const done = await record(lab, 3);
  const arrivals = await done();
  const span = (arrivals.at(-1)?.t ?? 0) - (arrivals[0]?.t ?? 0);
  const rate = (arrivals.length - 1) / span;
  t.true(rate > 150 && rate < 220, `${rate.toFixed(0)} probes/s for a cap of 200`);
  const gaps = arrivals.slice(1).map((a, i) => a.t - (arrivals[i]?.t ?? 0));
  const spaced = gaps.filter((g) => g > 0.5 / 200).length;
  t.true(spaced >= gaps.length * 0.8, `${spaced} of ${gaps.length} sends at least 2.5 ms apart: paced, not bursts`);
});

test('a target keeps its phase in the round while others are added and expire', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500', '-expiry', '1500']);
  const kept = addresses(4);
  const keep = setInterval(() => void exporter.get(query(kept)), 300);
  t.teardown(() => clearInterval(keep));
  await exporter.get(query(kept));
  await sleep(1200);
  const done = await record(lab, 7);
  await sleep(1500);
  await exporter.get(query(addresses(100, 50))); // 100 more, for one request: they expire 1.5 s later
  const arrivals = await done();
  const newcomers = arrivals.filter((a) => !kept.includes(a.dst));
  t.true(newcomers.length >= 100, `the newcomers were probed (${newcomers.length} probes)`);
  for (const ip of kept) {
    const own = arrivals.filter((a) => a.dst === ip).map((a) => phase(a.t, 1));
    t.true(own.length >= 6, `${ip}: ${own.length} probes`);
    // Phases near 0 and 1 are the same place in the round.
    const first = own[0] ?? 0;
    const drift = Math.max(...own.map((p) => Math.abs(((p - first + 1.5) % 1) - 0.5)));
    // A re-spread round would move it by a large share of the round; 20 ms allows a late send.
    t.true(drift < 0.02, `${ip}: phase moved by ${(drift * 1000).toFixed(2)} ms of the 1 s round`);
  }
});
