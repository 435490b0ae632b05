/**
 * Target statistics from the engine. They cross from Rust as one Float64Array for all the
 * targets asked for (SNAPSHOT_STRIDE numbers each), handed to the event loop by the engine
 * thread itself; this turns them into `TargetStats` where an object is wanted.
 */
import { SNAPSHOT_STRIDE, type Engine } from './native.js';

/**
 * Statistics of one target. Counters are cumulative since the target was first tracked;
 * `window*` fields are absent when undefined (no samples, or no reply in the window).
 */
export interface TargetStats {
  sent: number;
  received: number;
  /** Of `received`, TCP probes answered by a RST (port closed, host up). */
  closed: number;
  latencySecondsTotal: number;
  latencySquaredSecondsTotal: number;
  icmpErrors: number;
  sendErrors: number;
  windowSamples: number;
  windowLossRatio?: number;
  windowLatencySeconds?: number;
  windowStddevSeconds?: number;
}

export type SnapshotSource = Pick<Engine, 'snapshotFlat' | 'answerSnapshotsTo'>;

/** As long as the engine's own wait for a snapshot used to be: a stuck engine thread gets an error, not silence. */
const ANSWER_WITHIN_MS = 10_000;

interface Waiting {
  resolve: (stats: Float64Array) => void;
  reject: (e: Error) => void;
  /** Also what keeps the process alive meanwhile: the engine's listener does not. */
  timer: NodeJS.Timeout;
}

/** Snapshots asked of one engine and not yet answered, by token. */
class Answers {
  private readonly waiting = new Map<number, Waiting>();
  private next = 0;

  constructor(private readonly engine: SnapshotSource) {
    engine.answerSnapshotsTo((token, stats, error) => {
      const w = this.waiting.get(token);
      if (!w) return; // timed out before
      this.waiting.delete(token);
      clearTimeout(w.timer);
      if (stats) w.resolve(stats);
      else w.reject(new Error(error ?? 'no statistics'));
    });
  }

  ask(ids: readonly number[]): Promise<Float64Array> {
    return new Promise((resolve, reject) => {
      const token = (this.next = (this.next + 1) >>> 0);
      const timer = setTimeout(() => {
        this.waiting.delete(token);
        reject(new Error(`no answer within ${ANSWER_WITHIN_MS / 1000} s`));
      }, ANSWER_WITHIN_MS);
      this.waiting.set(token, { resolve, reject, timer });
      try {
        this.engine.snapshotFlat(Uint32Array.from(ids), token);
      } catch (e) {
        this.waiting.delete(token);
        clearTimeout(timer);
        reject(e as Error);
      }
    });
  }
}

const answers = new WeakMap<SnapshotSource, Answers>();

/** The flat statistics of `ids`, in order; rejects when the engine has stopped or does not answer. */
export function snapshotFlat(engine: SnapshotSource, ids: readonly number[]): Promise<Float64Array> {
  let a = answers.get(engine);
  if (!a) answers.set(engine, (a = new Answers(engine)));
  return a.ask(ids);
}

/** The statistics of the `i`-th id of a flat snapshot; undefined when it is not tracked. */
export function statsAt(flat: Float64Array, i: number): TargetStats | undefined {
  const at = i * SNAPSHOT_STRIDE;
  const sent = flat[at];
  if (sent === undefined || Number.isNaN(sent)) return undefined;
  const stats: TargetStats = {
    sent,
    received: flat[at + 1] as number,
    closed: flat[at + 2] as number,
    latencySecondsTotal: flat[at + 3] as number,
    latencySquaredSecondsTotal: flat[at + 4] as number,
    icmpErrors: flat[at + 5] as number,
    sendErrors: flat[at + 6] as number,
    windowSamples: flat[at + 7] as number,
  };
  const [loss, latency, stddev] = [flat[at + 8] as number, flat[at + 9] as number, flat[at + 10] as number];
  // Absent, as the objects the engine used to build had them, rather than undefined.
  if (!Number.isNaN(loss)) stats.windowLossRatio = loss;
  if (!Number.isNaN(latency)) stats.windowLatencySeconds = latency;
  if (!Number.isNaN(stddev)) stats.windowStddevSeconds = stddev;
  return stats;
}
