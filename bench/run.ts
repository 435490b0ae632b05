/**
 * `npm run bench`: the exporter against netsim in a lab, at rising target counts (1 s
 * interval, so targets = probes per second). Prints a table and writes bench-results/*.json.
 * Bounded in time (about a minute); removes everything it creates. Figures are compared as
 * ratios within one run, never asserted: the machines are shared and noisy.
 *
 * Measured per step: probes/s sustained (exporter's sent counter), answered share, CPU seconds
 * per 1,000 probes (exporter process, and netsim), resident memory per target beyond the
 * exporter's base, how late probes left against their schedule (mean in the window, worst
 * since start, which includes adding thousands of targets), and netsim's own lateness.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Lab, type ExporterProcess } from '../__test__/helpers/lab.js';
import { parseSamples, sleep, value } from '../__test__/helpers/prom.js';

const STEPS = (process.env.BENCH_TARGETS ?? '1000,5000,10000').split(',').map(Number);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 5000);
const TICKS = 100; // USER_HZ

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime + stime
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

async function counters(e: ExporterProcess): Promise<{ sent: number; recv: number; delaySum: number; delayMax: number }> {
  const m = parseSamples((await e.get('/metrics')).body);
  return {
    sent: value(m, 'icmp_packets_sent_total') ?? 0,
    recv: value(m, 'icmp_packets_recv_total') ?? 0,
    delaySum: value(m, 'icmp_send_schedule_delay_seconds_total') ?? 0,
    delayMax: value(m, 'icmp_send_schedule_delay_max_seconds') ?? 0,
  };
}

async function main(): Promise<void> {
  const teardowns: Array<() => void> = [];
  const cleanup = () => teardowns.splice(0).forEach((f) => f());
  process.on('SIGINT', () => (cleanup(), process.exit(130)));
  const rows: Array<Record<string, number>> = [];
  try {
    const lab = Lab.create({ teardown: (f: () => void) => teardowns.push(f) });
    const sim = await lab.startNetsim({ seed: 1, hosts: [{ prefix: '198.18.192.0/18', delay_ms: 1 }] });
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '500', '-maxpps', '100000']);
    const pid = exporter.child.pid ?? 0;
    const simPid = sim.child.pid ?? 0;
    await sleep(500);
    const baseRss = rssBytes(pid);
    let tracked = 0;
    for (const targets of STEPS) {
      // Add targets up to this step, 250 per request; the window starts a second after.
      for (let i = tracked; i < targets; i += 250) {
        const ips = Array.from({ length: Math.min(250, targets - i) }, (_, k) => {
          const n = i + k;
          return `198.18.${192 + (n >> 8)}.${n & 0xff}`;
        });
        await exporter.get(`/probe?${ips.map((ip) => `target=${ip}`).join('&')}`);
      }
      tracked = targets;
      await sleep(1500);
      const [c0, cpu0, simCpu0, t0] = [await counters(exporter), cpuSeconds(pid), cpuSeconds(simPid), Date.now()];
      await sleep(WINDOW_MS);
      const [c1, cpu1, simCpu1, t1] = [await counters(exporter), cpuSeconds(pid), cpuSeconds(simPid), Date.now()];
      const truth = await sim.truth();
      const sent = c1.sent - c0.sent;
      const seconds = (t1 - t0) / 1000;
      rows.push({
        targets,
        probes_per_s: Math.round(sent / seconds),
        due_per_s: targets,
        answered_share: Number(((c1.recv - c0.recv) / Math.max(1, sent)).toFixed(4)),
        exporter_cpu_s_per_1k: Number((((cpu1 - cpu0) / Math.max(1, sent)) * 1000).toFixed(4)),
        netsim_cpu_s_per_1k: Number((((simCpu1 - simCpu0) / Math.max(1, sent)) * 1000).toFixed(4)),
        rss_per_target_bytes: Math.round((rssBytes(pid) - baseRss) / targets),
        send_delay_mean_us: Math.round(((c1.delaySum - c0.delaySum) / Math.max(1, sent)) * 1e6),
        send_delay_max_us_since_start: Math.round(c1.delayMax * 1e6),
        netsim_late_mean_us: Math.round(truth.late_sum_ns / Math.max(1, truth.sent) / 1000),
        netsim_late_max_us: Math.round(truth.late_max_ns / 1000),
      });
    }
  } finally {
    cleanup();
  }
  console.table(rows);
  mkdirSync('bench-results', { recursive: true });
  const file = `bench-results/netsim-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, JSON.stringify({ window_ms: WINDOW_MS, rows }, null, 2));
  console.log(`written: ${file}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
