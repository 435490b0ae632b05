/** Reading a process's cost from /proc: CPU time (whole process, or one named thread) and resident memory. */
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
