/** Reading a process's cost from /proc: CPU time (whole process, or one named thread) and resident memory. */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICKS = 100; // USER_HZ

function statCpu(path: string): number {
  const fields = readFileSync(path, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime + stime
}

/** CPU seconds (user + system) a process has used. */
export function cpuSeconds(pid: number): number {
  return statCpu(`/proc/${pid}/stat`);
}

/** The sum of `read(<task dir>)` over the threads of `pid` named `name` (0 when there is none). */
function sumOverThreads(pid: number, name: string, read: (task: string) => number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const task = `/proc/${pid}/task/${tid}`;
    try {
      if (readFileSync(`${task}/comm`, 'utf8').trim() === name) total += read(task);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
}

/** CPU seconds of the threads of `pid` named `name`. */
export function threadCpuSeconds(pid: number, name: string): number {
  return sumOverThreads(pid, name, (task) => statCpu(`${task}/stat`));
}

/**
 * Seconds the threads of `pid` named `name` waited, runnable, for a CPU (the kernel's
 * schedstat): how much of their lateness other work on the machine caused.
 */
export function threadRunqueueWaitSeconds(pid: number, name: string): number {
  return sumOverThreads(pid, name, (task) => Number(readFileSync(`${task}/schedstat`, 'utf8').split(' ')[1]) / 1e9);
}

/**
 * Resident bytes of a process's anonymous memory, split by mapping size: mappings under
 * 300 KiB are V8's heap pages (256 KiB each); the rest is native (the engine's tables, typed
 * arrays' backing stores, malloc) and V8's large objects.
 */
export function anonymousRss(pid: number): { v8Pages: number; rest: number } {
  let [v8Pages, rest, small, anonymous] = [0, 0, false, false];
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const map = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (map) {
      small = parseInt(map[2] as string, 16) - parseInt(map[1] as string, 16) < 300 * 1024;
      anonymous = map[3] === '' || map[3] === '[heap]';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && anonymous) {
      if (small) v8Pages += Number(rss[1]) * 1024;
      else rest += Number(rss[1]) * 1024;
    }
  }
  return { v8Pages, rest };
}

/**
 * CPU seconds of every live thread of `pid`, from the scheduler's own accounting (schedstat:
 * nanoseconds on a CPU, softirq work done in the thread's context included) rather than
 * /proc/<pid>/stat's 10 ms ticks: an idle process uses a few of those a minute.
 */
export function taskCpuSeconds(pid: number): number {
  return sumOverTasks(pid, (task) => Number(readFileSync(`${task}/schedstat`, 'utf8').split(' ')[0]) / 1e9);
}

/** Context switches of every live thread of `pid`: each voluntary one is a sleep and a wake-up. */
export function contextSwitches(pid: number): { voluntary: number; involuntary: number } {
  const read = (field: string) =>
    sumOverTasks(pid, (task) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`${task}/status`, 'utf8'))?.[1] ?? 0));
  return { voluntary: read('voluntary_ctxt_switches'), involuntary: read('nonvoluntary_ctxt_switches') };
}

function sumOverTasks(pid: number, read: (task: string) => number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += read(`/proc/${pid}/task/${tid}`);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total;
}

/**
 * System calls every thread of `pid` makes in `ms` milliseconds (perf counting the
 * raw_syscalls:sys_enter tracepoint); NaN where perf is missing or refused.
 */
export function syscallsDuring(pid: number, ms: number): number {
  const r = spawnSync('perf', ['stat', '-x', ',', '-e', 'raw_syscalls:sys_enter', '-p', String(pid), '--', 'sleep', String(ms / 1000)], { encoding: 'utf8' });
  const line = r.stderr.split('\n').find((l) => l.includes('raw_syscalls:sys_enter'));
  const n = Number(line?.split(',')[0]);
  return r.status === 0 && Number.isFinite(n) ? n : NaN;
}

/** Resident memory of a process, in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** CPU seconds of a whole process tree, by the pids found under `root` (children included). */
export function treeCpuSeconds(root: number): number {
  const kids = (pid: number): number[] => {
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  let total = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    try {
      total += cpuSeconds(pid);
    } catch {
      continue;
    }
    stack.push(...kids(pid));
  }
  return total;
}

/** The value at quantile `q` (0..1) of `xs` (nearest rank). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}
