/**
 * The engine wakes on its send schedule only: answers and transmit stamps wait in their
 * queues for the next turn (their RTTs come from the kernel's stamps, so when they are read
 * changes nothing), and an answered probe's deadline wakes nothing. Counted on the engine
 * thread itself: each voluntary context switch is one sleep and one wake-up. A loaded machine
 * makes the engine wake later, never more often, so the bound cannot be reached by chance.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { Lab } from './helpers/lab.js';
import { metrics, scrape, targets } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

/** The /proc directory of the exporter's engine thread (`netprobe`). */
function engineTask(pid: number): string {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const task = `/proc/${pid}/task/${tid}`;
    if (readFileSync(`${task}/comm`, 'utf8').trim() === 'netprobe') return task;
  }
  throw new Error('no engine thread');
}

/** Sleeps of the exporter's engine thread since it started. */
function engineSleeps(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`${engineTask(pid)}/status`, 'utf8'))?.[1]);
}

test('answers, stamps and answered deadlines do not wake the engine: fewer wake-ups than probes', async (t) => {
  const lab = Lab.create(t);
  // Answered 3 ms after they leave (netsim), so every answer comes while the engine sleeps
  // (the kernel peer answers within the send itself).
  await lab.startNetsim({ seed: 3, hosts: [{ prefix: '198.18.200.0/24', delay_ms: 3 }] });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500']);
  const pid = exporter.child.pid ?? 0;
  // 200 targets a second: the turns are 10 ms apart and send two probes each on average.
  const ips = Array.from({ length: 200 }, (_, i) => `198.18.200.${i + 1}`);
  await scrape(exporter, targets(ips));
  const sent = async () => value(await metrics(exporter), 'icmp_packets_sent_total') ?? 0;
  const start = await waitFor(sent, (n) => n >= 400, { what: 'two rounds of probes' });
  const sleeps0 = engineSleeps(pid);
  const end = await waitFor(sent, (n) => n >= start + 2000, { what: '2,000 more probes', timeoutMs: 60_000 });
  const sleeps = engineSleeps(pid) - sleeps0;
  const probes = end - start;
  const answered = value(await metrics(exporter), 'icmp_packets_recv_total') ?? 0;
  t.true(answered >= end - ips.length, `answered: ${answered} of ${end}`);
  // Woken for every answer and every stamp, as before, it slept 2 to 3 times a probe; on the
  // schedule alone, at most once a turn (about 86 a second here) and once a second besides.
  t.log(`${sleeps} wake-ups for ${probes} probes`);
  t.true(sleeps < 0.75 * probes, `${sleeps} wake-ups for ${probes} probes`);
});

test('the engine thread asks for the shortest slice (Linux >= 6.12), its other threads keep the default', async (t) => {
  const [major = 0, minor = 0] = release().split('.').map(Number);
  if (major < 6 || (major === 6 && minor < 12)) {
    t.log(`Linux ${release()} keeps no custom slice for the fair class`);
    return t.pass();
  }
  const lab = Lab.create(t);
  const exporter = await lab.startExporter([]);
  const pid = exporter.child.pid ?? 0;
  const slice = (task: string) => Number(/^se\.slice\s+:\s+(\d+)/m.exec(readFileSync(`${task}/sched`, 'utf8'))?.[1]);
  // The engine sets it as its loop starts: wait for that rather than for a moment.
  const engine = await waitFor(() => slice(engineTask(pid)), (ns) => ns === 100_000, { what: 'a 0.1 ms slice on the engine thread' });
  t.is(engine, 100_000);
  t.true(slice(`/proc/${pid}/task/${pid}`) > 100_000, 'Node\'s main thread keeps the default slice');
});
