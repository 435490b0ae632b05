/**
 * Target statistics from the engine. They cross from Rust as one Float64Array for all the
 * targets asked for (`snapshotStride()` numbers each, then their native histogram buckets),
 * handed to the event loop by the engine thread itself; this turns them into `TargetStats`
 * where an object is wanted.
 */
import { SNAPSHOT_STRIDE, type Engine } from './native.js';

/** A native (sparse, exponential) histogram as Prometheus defines it. */
export interface NativeHistogram {
  /** Buckets grow by 2^(2^-schema) each. */
  schema: number;
  /** Answers of 0 s. */
  zeroCount: number;
  /** The populated buckets as (index, count) pairs, indexes increasing: bucket i holds (2^((i-1)/2^schema), 2^(i/2^schema)] seconds. */
  buckets: Float64Array;
}

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
  /** Cumulative classic histogram counts, one per bound of the snapshot (`+Inf` is `received`). */
  buckets: Float64Array;
  /** The native histogram, when the engine keeps one. */
  native?: NativeHistogram;
}

export type SnapshotSource = Pick<Engine, 'snapshotFlat' | 'answerSnapshotsTo' | 'snapshotStride' | 'histogramBounds'>;

/** The engine's answer for some targets, and how to read it. */
export interface Snapshot {
  flat: Float64Array;
  /** Numbers per target before the native buckets. */
  stride: number;
  /** Upper bounds of the classic buckets, in seconds. */
  bounds: Float64Array;
}

/** The numbers before the classic bucket counts. */
const BASE = SNAPSHOT_STRIDE;

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
  readonly stride: number;
  readonly bounds: Float64Array;

  constructor(private readonly engine: SnapshotSource) {
    this.stride = engine.snapshotStride();
    this.bounds = engine.histogramBounds();
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

/** The statistics of `ids`, in order; rejects when the engine has stopped or does not answer. */
export async function snapshotFlat(engine: SnapshotSource, ids: readonly number[]): Promise<Snapshot> {
  let a = answers.get(engine);
  if (!a) answers.set(engine, (a = new Answers(engine)));
  return { flat: await a.ask(ids), stride: a.stride, bounds: a.bounds };
}

/** The statistics of the `i`-th id of a snapshot; undefined when it is not tracked. */
export function statsAt({ flat, stride }: Snapshot, i: number): TargetStats | undefined {
  const at = i * stride;
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
    buckets: flat.subarray(at + BASE, at + stride),
  };
  const [schema, zeroCount, from, pairs] = [flat[at + 11] as number, flat[at + 12] as number, flat[at + 13] as number, flat[at + 14] as number];
  if (!Number.isNaN(schema)) stats.native = { schema, zeroCount, buckets: flat.subarray(from, from + 2 * pairs) };
  const [loss, latency, stddev] = [flat[at + 8] as number, flat[at + 9] as number, flat[at + 10] as number];
  // Absent, as the objects the engine used to build had them, rather than undefined.
  if (!Number.isNaN(loss)) stats.windowLossRatio = loss;
  if (!Number.isNaN(latency)) stats.windowLatencySeconds = latency;
  if (!Number.isNaN(stddev)) stats.windowStddevSeconds = stddev;
  return stats;
}
