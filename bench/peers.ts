/**
 * The peers, in the same lab as the exporter: smokeping_prober and fping (Debian packages).
 * `cost` runs each tool alone against the kernel peer; `precision` runs all three at once
 * against the kernel peer and against netsim hosts of known delay, idle or with every core busy.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab } from '../__test__/helpers/lab.js';
import { addTargets, timedGets } from './http.js';
import { parseSamples, sleep, value } from '../__test__/helpers/prom.js';
import { contextSwitches, quantile, rssBytes, syscallsDuring, taskCpuSeconds } from './proc.js';

export const SMOKEPING = '/usr/bin/prometheus-smokeping-prober';
const SMOKEPING_PORT = 9374;

/** Mean and standard deviation of RTTs, in microseconds. */
export interface RttSummary {
  n: number;
  mean_us: number;
  sd_us: number;
}

export function summarize(seconds: readonly number[]): RttSummary {
  const n = seconds.length;
  const mean = seconds.reduce((a, b) => a + b, 0) / Math.max(1, n);
  const variance = seconds.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, n - 1);
  return { n, mean_us: mean * 1e6, sd_us: Math.sqrt(variance) * 1e6 };
}

/** From the counters' sums (count, sum, sum of squares): the same summary without the samples. */
export function summarizeSums(n: number, sum: number, sumSq: number): RttSummary {
  const mean = sum / Math.max(1, n);
  const variance = n > 1 ? Math.max(0, (sumSq - n * mean * mean) / (n - 1)) : 0;
  return { n, mean_us: mean * 1e6, sd_us: Math.sqrt(variance) * 1e6 };
}

/** A Go duration as smokeping_prober logs it (`179.338µs`, `1.2ms`, `950ns`, `1.5s`), in seconds. */
export function parseGoDuration(text: string): number | undefined {
  const m = /^([\d.]+)(ns|µs|us|ms|s)$/.exec(text);
  if (!m?.[1] || !m[2]) return undefined;
  const scale: Record<string, number> = { ns: 1e-9, µs: 1e-6, us: 1e-6, ms: 1e-3, s: 1 };
  return Number(m[1]) * (scale[m[2]] as number);
}

/** RTTs per address from smokeping_prober's debug log ("Echo reply" lines). */
export function smokepingReplies(log: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const m of log.matchAll(/msg="Echo reply" ip_addr=(\S+) .*? time=(\S+)/g)) {
    const rtt = parseGoDuration(m[2] ?? '');
    if (m[1] === undefined || rtt === undefined) continue;
    out.set(m[1], [...(out.get(m[1]) ?? []), rtt]);
  }
  return out;
}

/** RTTs per address from `fping -C` output (`addr : 0.042 - 0.055`, milliseconds, `-` lost). */
export function fpingReplies(output: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of output.split('\n')) {
    const m = /^(\S+)\s+:\s+(.*)$/.exec(line.trim());
    if (!m?.[1] || m[2] === undefined) continue;
    const rtts = m[2].split(/\s+/).filter((x) => x !== '-' && x !== '').map((x) => Number(x) / 1000);
    out.set(m[1], rtts.filter((x) => Number.isFinite(x)));
  }
  return out;
}

function collect(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return { text: () => text };
}

function exited(child: ChildProcess, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => (clearTimeout(timer), resolve()));
  });
}

/** Starts smokeping_prober in the prober namespace for `hosts` at a 1 s interval. */
function startSmokeping(lab: Lab, dir: string, hosts: readonly string[], debug: boolean): { child: ChildProcess; log: () => string; url: string } {
  const config = join(dir, `smokeping-${hosts.length}.yml`);
  writeFileSync(config, `targets:\n- hosts:\n${hosts.map((h) => `  - ${h}\n`).join('')}  interval: 1s\n  network: ip\n  protocol: icmp\n`);
  const listen = `${lab.httpAddress}:${SMOKEPING_PORT}`;
  const args = ['--privileged', `--config.file=${config}`, `--web.listen-address=${listen}`, ...(debug ? ['--log.level=debug'] : [])];
  const child = lab.spawn(lab.prober, SMOKEPING, args);
  const out = collect(child);
  return { child, log: out.text, url: `http://${listen}` };
}

async function waitHttp(url: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`${url} did not answer`);
    await sleep(100);
  }
}

export interface CostRow extends Record<string, string | number> {
  tool: string;
  peer: string;
  targets: number;
  due_per_s: number;
  probes_per_s: number;
  cpu_us_per_probe: number;
  wakeups_per_probe: number;
  syscalls_per_probe: number;
  rss_per_target_bytes: number;
  rss_mb: number;
  scrape_p50_ms: number;
  scrape_p99_ms: number;
}

/** The TUN device netsim runs on in the prober namespace. */
function tunDevice(lab: Lab): string {
  const links = JSON.parse(execFileSync('ip', ['-n', lab.prober, '-j', 'link', 'show', 'type', 'tun'], { encoding: 'utf8' })) as Array<{ ifname: string }>;
  const name = links[0]?.ifname;
  if (!name) throw new Error('no netsim TUN device in the prober namespace');
  return name;
}

/** Kernel-peer addresses 198.18.128.1 onwards (up to 32,767). */
function kernelTargets(n: number): string[] {
  return Array.from({ length: n }, (_, k) => `198.18.${128 + ((k + 1) >> 8)}.${(k + 1) & 0xff}`);
}

/**
 * Each tool alone, `targets` kernel-peer addresses at 1 probe/s each, for `windowMs`: probes
 * sent (counted on the wire, the prober's veth), CPU per probe (every thread of the process,
 * from the scheduler's accounting, kernel work done in its context included), sleeps per probe
 * (voluntary context switches: each is a wake-up), system calls per probe (perf, in a window
 * of its own after the CPU window, as counting adds to the cost), resident memory per target
 * beyond the same tool with one target, and scrape latency (ours: /probe of 1 target).
 * smokeping_prober only at 1,000 targets and below (a goroutine per target: minutes to settle).
 */
export async function cost(teardown: (f: () => void) => void, targets: number, windowMs: number, peer: 'kernel' | 'netsim' = 'kernel'): Promise<CostRow[]> {
  const lab = Lab.create({ teardown });
  const dir = mkdtempSync(join(tmpdir(), 'bench-peers-'));
  teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The kernel peer computes its echo replies in the sender's softirq (over veth), so every
  // tool's CPU includes the peer's work; netsim answers from its own process (over a TUN
  // device), so only the prober's side is counted.
  let ips = kernelTargets(targets);
  let link = lab.proberLink;
  if (peer === 'netsim') {
    await lab.startNetsim({ seed: 1, hosts: [{ prefix: '198.18.192.0/18', delay_ms: 0 }] });
    ips = Array.from({ length: targets }, (_, k) => `198.18.${192 + ((k + 1) >> 8)}.${(k + 1) & 0xff}`);
    link = tunDevice(lab);
  }
  const rows: CostRow[] = [];
  const measure = async (pid: number, settleMs: number) => {
    await sleep(settleMs);
    const [tx0, cpu0, sw0, t0] = [lab.txPackets(lab.prober, link), taskCpuSeconds(pid), contextSwitches(pid).voluntary, Date.now()];
    await sleep(windowMs);
    const [tx1, cpu1, sw1, t1] = [lab.txPackets(lab.prober, link), taskCpuSeconds(pid), contextSwitches(pid).voluntary, Date.now()];
    const sent = Math.max(1, tx1 - tx0);
    const tx2 = lab.txPackets(lab.prober, link);
    const calls = syscallsDuring(pid, Math.min(windowMs, 3000));
    const tx3 = lab.txPackets(lab.prober, link);
    return {
      probesPerS: Math.round(sent / ((t1 - t0) / 1000)),
      cpuUsPerProbe: Number((((cpu1 - cpu0) / sent) * 1e6).toFixed(2)),
      wakeupsPerProbe: Number(((sw1 - sw0) / sent).toFixed(3)),
      syscallsPerProbe: Number((calls / Math.max(1, tx3 - tx2)).toFixed(2)),
      rss: rssBytes(pid),
    };
  };
  const perTarget = (rss: number, base: number) => Math.round((rss - base) / Math.max(1, targets - 1));
  const ms = (x: number) => Number(x.toFixed(3));
  const mb = (x: number) => Number((x / 1e6).toFixed(1));
  const row = (tool: string, m: Awaited<ReturnType<typeof measure>>, base: number, scrape?: number[]): CostRow => ({
    tool,
    peer,
    targets,
    due_per_s: targets,
    probes_per_s: m.probesPerS,
    cpu_us_per_probe: m.cpuUsPerProbe,
    wakeups_per_probe: m.wakeupsPerProbe,
    syscalls_per_probe: m.syscallsPerProbe,
    rss_per_target_bytes: perTarget(m.rss, base),
    rss_mb: mb(m.rss),
    scrape_p50_ms: scrape ? ms(quantile(scrape, 0.5)) : NaN,
    scrape_p99_ms: scrape ? ms(quantile(scrape, 0.99)) : NaN,
  });

  // Ours: the base is the same process with one target.
  const ours = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '1000', '-maxpps', '100000']);
  const ourPid = ours.child.pid ?? 0;
  await addTargets(ours.url, ips.slice(0, 1));
  await sleep(1000);
  const ourBase = rssBytes(ourPid);
  await addTargets(ours.url, ips);
  // Past start-up: V8 collects a few times in the first seconds after the targets came.
  const o = await measure(ourPid, 10_000);
  const { client: scrape } = await timedGets(`${ours.url}/probe?target=${ips[0]}`, 100);
  rows.push(row('icmp-exporter', o, ourBase, scrape));
  ours.child.kill('SIGKILL');
  await exited(ours.child, 2000);

  if (targets <= 1000 && peer === 'kernel') {
    // smokeping_prober: its base is a run with one host.
    const one = startSmokeping(lab, dir, ips.slice(0, 1), false);
    await waitHttp(`${one.url}/metrics`, 10_000);
    await sleep(2000);
    const spBase = rssBytes(one.child.pid ?? 0);
    one.child.kill('SIGKILL');
    await exited(one.child, 2000);
    const sp = startSmokeping(lab, dir, ips, false);
    await waitHttp(`${sp.url}/metrics`, 10_000);
    const s = await measure(sp.child.pid ?? 0, 3000);
    const { client: spScrape } = await timedGets(`${sp.url}/metrics`, 100);
    rows.push(row('smokeping_prober', s, spBase, spScrape));
    sp.child.kill('SIGKILL');
    await exited(sp.child, 2000);
  }

  // fping in loop mode, its sends spread over the second (as ours are) with a little room, so
  // that every target is due each second. -Q: quiet but for a summary every minute (-q alone
  // still prints each reply in loop mode).
  const gapMs = (0.9 * 1000) / targets;
  const fpingArgs = (hosts: readonly string[]) => ['-l', '-Q', '60', '-p', '1000', '-i', String(Number(gapMs.toFixed(3))), '-t', '900', ...hosts];
  const fOne = lab.spawn(lab.prober, 'fping', fpingArgs(ips.slice(0, 1)));
  collect(fOne);
  await sleep(1500);
  const fBase = rssBytes(fOne.pid ?? 0);
  fOne.kill('SIGKILL');
  await exited(fOne, 2000);
  const fp = lab.spawn(lab.prober, 'fping', fpingArgs(ips));
  collect(fp); // a pipe nobody reads would stop it
  const f = await measure(fp.pid ?? 0, 2000);
  rows.push(row('fping', f, fBase));
  fp.kill('SIGKILL');
  await exited(fp, 2000);
  return rows;
}

/**
 * An idle exporter: a handful of targets at a 2 s interval, for `windowMs`. CPU share of one
 * core (every thread, from the scheduler's nanosecond accounting) and wake-ups per second.
 */
export async function idle(teardown: (f: () => void) => void, windowMs: number): Promise<Array<Record<string, number>>> {
  const lab = Lab.create({ teardown });
  const ours = await lab.startExporter(['-i-wont-be-evil', '-interval', '2000', '-timeout', '1000']);
  const pid = ours.child.pid ?? 0;
  await addTargets(ours.url, kernelTargets(5));
  // Past start-up: V8's memory reducer collects a few times in the first seconds.
  await sleep(12_000);
  const [cpu0, sw0, t0] = [taskCpuSeconds(pid), contextSwitches(pid).voluntary, Date.now()];
  await sleep(windowMs);
  const [cpu1, sw1, t1] = [taskCpuSeconds(pid), contextSwitches(pid).voluntary, Date.now()];
  const seconds = (t1 - t0) / 1000;
  return [
    {
      targets: 5,
      interval_s: 2,
      window_s: Number(seconds.toFixed(1)),
      core_share_percent: Number((((cpu1 - cpu0) / seconds) * 100).toFixed(3)),
      wakeups_per_s: Number(((sw1 - sw0) / seconds).toFixed(1)),
    },
  ];
}

export interface PrecisionRow extends Record<string, string | number> {
  load: string;
  tool: string;
  kernel_mean_us: number;
  kernel_sd_us: number;
  netsim_error_us: number;
  netsim_sd_us: number;
  samples: number;
}

/**
 * All three tools at once, 1 probe/s to each of `hosts` kernel-peer addresses and as many
 * netsim hosts with a fixed `delayMs` (netsim runs SCHED_FIFO, so a busy host does not delay
 * the "network"), for `windowMs`; with `busy`, stress-ng keeps every core busy meanwhile.
 * Kernel peer: the true RTT is the veth round trip (a few us), so the mean is the error's
 * upper bound and the standard deviation is noise. Netsim: error = mean - (delay + netsim's
 * own lateness), and any standard deviation is noise (no jitter configured).
 */
export async function precision(
  teardown: (f: () => void) => void,
  hosts: number,
  windowMs: number,
  busy: boolean,
  delayMs = 2,
): Promise<PrecisionRow[]> {
  const lab = Lab.create({ teardown });
  const dir = mkdtempSync(join(tmpdir(), 'bench-precision-'));
  teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sim = await lab.startNetsim({ seed: 7, hosts: [{ prefix: '198.18.192.0/24', delay_ms: delayMs }] });
  const kernel = kernelTargets(hosts);
  const simulated = Array.from({ length: hosts }, (_, k) => `198.18.192.${k + 1}`);
  const all = [...kernel, ...simulated];

  const ours = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000', '-timeout', '1000']);
  await addTargets(ours.url, all);
  const sp = startSmokeping(lab, dir, all, true);
  await waitHttp(`${sp.url}/metrics`, 10_000);
  const stress = busy ? lab.spawn(lab.prober, 'stress-ng', ['--cpu', '0', '--timeout', `${Math.ceil(windowMs / 1000) + 10}s`]) : undefined;
  await sleep(2000); // every tool warm, every core busy
  const count = Math.floor(windowMs / 1000);
  // fping's default sends to every target in a burst (1 ms apart); spread over the second like
  // ours, its probes meet a colder kernel path and read longer RTTs. Both are measured.
  const fpingRun = (gapMs: number) => {
    const child = lab.spawn(lab.prober, 'fping', ['-C', String(count), '-q', '-p', '1000', '-i', String(gapMs), '-t', '900', ...all]);
    return { child, out: collect(child) };
  };
  const fp = fpingRun(1);
  const fpSpread = fpingRun(Math.max(1, Math.floor(1000 / all.length)));
  const ourSums = async () => {
    const m = parseSamples((await ours.get(`/probe?${all.map((ip) => `target=${ip}`).join('&')}`)).body);
    const sums = (ips: readonly string[]) =>
      ips.reduce(
        (acc, ip) => {
          acc.n += value(m, 'icmp_probe_packets_recv_total', { ip }) ?? 0;
          acc.sum += value(m, 'icmp_probe_latency_seconds_total', { ip }) ?? 0;
          acc.sq += value(m, 'icmp_probe_latency_squared_seconds_total', { ip }) ?? 0;
          return acc;
        },
        { n: 0, sum: 0, sq: 0 },
      );
    return { kernel: sums(kernel), simulated: sums(simulated) };
  };
  const spSkip = sp.log().length;
  const truth0 = await sim.truth();
  const o0 = await ourSums();
  await sleep(windowMs);
  const o1 = await ourSums();
  const truth1 = await sim.truth();
  const spLog = sp.log().slice(spSkip);
  await exited(fp.child, windowMs + 5000);
  await exited(fpSpread.child, windowMs + 5000);
  stress?.kill('SIGKILL');

  // What netsim really applied in the window: the configured delay plus its own lateness.
  const late = (truth1.late_sum_ns - truth0.late_sum_ns) / Math.max(1, truth1.sent - truth0.sent) / 1e3;
  const trueSimUs = delayMs * 1000 + late;
  const diff = (a: { n: number; sum: number; sq: number }, b: { n: number; sum: number; sq: number }) => summarizeSums(b.n - a.n, b.sum - a.sum, b.sq - a.sq);
  const pick = (byIp: Map<string, number[]>, ips: readonly string[]) => summarize(ips.flatMap((ip) => byIp.get(ip) ?? []));
  const spReplies = smokepingReplies(spLog);
  const fpReplies = fpingReplies(fp.out.text());
  const fpSpreadReplies = fpingReplies(fpSpread.out.text());
  const load = busy ? 'every core busy' : 'idle';
  const r = (x: number) => Number(x.toFixed(1));
  const row = (tool: string, k: RttSummary, s: RttSummary): PrecisionRow => ({
    load,
    tool,
    kernel_mean_us: r(k.mean_us),
    kernel_sd_us: r(k.sd_us),
    netsim_error_us: r(s.mean_us - trueSimUs),
    netsim_sd_us: r(s.sd_us),
    samples: k.n + s.n,
  });
  return [
    row('icmp-exporter', diff(o0.kernel, o1.kernel), diff(o0.simulated, o1.simulated)),
    row('smokeping_prober', pick(spReplies, kernel), pick(spReplies, simulated)),
    row('fping', pick(fpReplies, kernel), pick(fpReplies, simulated)),
    row('fping, spread like ours', pick(fpSpreadReplies, kernel), pick(fpSpreadReplies, simulated)),
  ];
}
