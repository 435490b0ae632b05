/**
 * `-drop`: once every socket is open, switch the whole process to an unprivileged user so that
 * no thread keeps CAP_NET_RAW or CAP_NET_ADMIN. Capabilities belong to each thread and a Node
 * process has a dozen; glibc applies set*id calls to every thread, and the kernel clears the
 * permitted and effective sets when a process goes from uid 0 to another uid (the chronyd -u
 * pattern). A process that is not root but holds capabilities (setcap, systemd ambient ones)
 * cannot drop them on every thread, and is told so instead of claimed to have dropped.
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface ThreadCapabilities {
  tid: number;
  /** Hexadecimal capability masks from /proc/self/task/TID/status. */
  effective: bigint;
  permitted: bigint;
}

/** Reads CapEff and CapPrm out of a /proc status text. Pure. */
export function parseCapabilities(status: string): { effective: bigint; permitted: bigint } {
  const field = (name: string): bigint => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    if (!m?.[1]) throw new Error(`no ${name} in status`);
    return BigInt(`0x${m[1]}`);
  };
  return { effective: field('CapEff'), permitted: field('CapPrm') };
}

/** Every thread of this process and its capability sets. */
export function threadCapabilities(): ThreadCapabilities[] {
  return readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      return [{ tid: Number(tid), ...parseCapabilities(readFileSync(`/proc/self/task/${tid}/status`, 'utf8')) }];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}

export type DropReport =
  | { dropped: true; uid: number; gid: number; threads: number }
  | { dropped: false; reason: string };

export const NOBODY_UID = 65534;
export const NOBODY_GID = 65534;

/** Drops to `uid`/`gid` when root; says plainly when it cannot. Throws if a thread kept a capability. */
export function dropPrivileges(uid = NOBODY_UID, gid = NOBODY_GID): DropReport {
  if (process.geteuid?.() !== 0) {
    const holding = threadCapabilities().filter((t) => t.effective !== 0n || t.permitted !== 0n);
    return {
      dropped: false,
      reason:
        holding.length === 0
          ? 'not root and no capability held: nothing to drop'
          : `not root (uid ${process.geteuid?.()}) but ${holding.length} threads hold capabilities (setcap or systemd): ` +
            'a uid switch does not clear them and no signal reaches every Node thread, so they are kept; ' +
            'start as root with -drop, or use the systemd unit without -drop',
    };
  }
  process.setgroups?.([]);
  process.setgid?.(gid);
  process.setuid?.(uid);
  const threads = threadCapabilities();
  const holding = threads.filter((t) => t.effective !== 0n || t.permitted !== 0n);
  if (holding.length > 0) {
    throw new Error(`after switching to uid ${uid}, threads ${holding.map((t) => t.tid).join(', ')} still hold capabilities`);
  }
  return { dropped: true, uid, gid, threads: threads.length };
}
