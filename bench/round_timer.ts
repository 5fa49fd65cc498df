/**
 * The launch-timing method every launch benchmark shares (C, Python and Deno alike): warm up,
 * then R rounds of B calls, timing only the calls and synchronising outside the timed region, so
 * the result is host nanoseconds per call and the device queue never fills.
 *
 * @module
 */

/** Rounds per measurement. */
export const ROUNDS = 200;
/** Calls per round; far below the driver's launch-queue depth. */
export const BATCH = 200;
/** Untimed calls before measuring, so JIT, module load and caches settle first. */
export const WARMUP = 2000;

/** Mean and median host nanoseconds per call. */
export interface RoundTiming {
  /** Total timed nanoseconds over all calls. */
  readonly meanNs: number;
  /** Median over rounds of (round nanoseconds / BATCH). */
  readonly medianNs: number;
}

/** A contender: a name and a function that makes exactly BATCH calls. */
export interface Contender {
  /** The RESULT name. */
  readonly name: string;
  /** Makes BATCH calls. */
  readonly batch: () => void;
}

/**
 * Times each contender over ROUNDS rounds, interleaved round by round (in a rotating order) so
 * clock and cache drift fall on all of them alike, running `drain` (e.g. a stream synchronise)
 * untimed after each batch.
 */
export function timeInterleaved(
  contenders: readonly Contender[],
  drain: () => void,
): Map<string, RoundTiming> {
  for (const { batch } of contenders) {
    for (let done = 0; done < WARMUP; done += BATCH) batch();
    drain();
  }
  const perCall = contenders.map(() => new Float64Array(ROUNDS));
  const totals = contenders.map(() => 0);
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < contenders.length; k++) {
      const which = (round + k) % contenders.length;
      const start = performance.now();
      contenders[which].batch();
      const elapsedNs = (performance.now() - start) * 1e6;
      drain();
      totals[which] += elapsedNs;
      perCall[which][round] = elapsedNs / BATCH;
    }
  }
  const results = new Map<string, RoundTiming>();
  contenders.forEach(({ name }, i) => {
    const sorted = perCall[i].sort();
    const medianNs = (sorted[ROUNDS / 2 - 1] + sorted[ROUNDS / 2]) / 2;
    results.set(name, { meanNs: totals[i] / (ROUNDS * BATCH), medianNs });
  });
  return results;
}

/** Prints a result in the `RESULT <name> mean_ns=<x> median_ns=<y>` form the compare script reads. */
export function printResult(name: string, timing: RoundTiming): void {
  console.log(
    `RESULT ${name} mean_ns=${timing.meanNs.toFixed(1)} median_ns=${timing.medianNs.toFixed(1)}`,
  );
}
