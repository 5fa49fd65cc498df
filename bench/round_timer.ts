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

/**
 * Times `batch` (which must make exactly BATCH calls) over ROUNDS rounds, running `drain`
 * (e.g. a stream synchronise) untimed after each round.
 */
export function timeRounds(batch: () => void, drain: () => void): RoundTiming {
  for (let done = 0; done < WARMUP; done += BATCH) batch();
  drain();
  const perCall = new Float64Array(ROUNDS);
  let total = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const start = performance.now();
    batch();
    const elapsedNs = (performance.now() - start) * 1e6;
    drain();
    total += elapsedNs;
    perCall[round] = elapsedNs / BATCH;
  }
  perCall.sort();
  const median = (perCall[ROUNDS / 2 - 1] + perCall[ROUNDS / 2]) / 2;
  return { meanNs: total / (ROUNDS * BATCH), medianNs: median };
}

/** Prints a result in the `RESULT <name> mean_ns=<x> median_ns=<y>` form the compare script reads. */
export function printResult(name: string, timing: RoundTiming): void {
  console.log(
    `RESULT ${name} mean_ns=${timing.meanNs.toFixed(1)} median_ns=${timing.medianNs.toFixed(1)}`,
  );
}
