/**
 * Numeric helpers for tests: seeded random inputs, the error measure every kernel comparison
 * uses (‖out − ref‖ / ‖ref‖, NaN never passing), and the float64 log_softmax that logprob tests
 * redo the engine's f32 one with.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decodeBf16, toBf16Bits } from "../../backends/bf16.ts";

/** A seeded xorshift32 generator of floats in [lo, hi), so failures reproduce. */
export function rng(seed: number): (lo?: number, hi?: number) => number {
  let s = (seed >>> 0) || 0x9e3779b9;
  return (lo = -1, hi = 1) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return lo + ((s >>> 0) / 2 ** 32) * (hi - lo);
  };
}

/** `count` seeded bf16 bit patterns of values uniform in [-scale, scale) (`rng`'s, rounded). */
export function randomBf16Bits(count: number, seed: number, scale: number): Uint16Array {
  const next = rng(seed);
  return Uint16Array.from({ length: count }, () => toBf16Bits(next(-scale, scale)));
}

/**
 * Mulberry32: a seeded generator of floats in [0, 1), for tests and benches whose inputs or
 * traffic must replay (it is not rng's sequence, so each keeps the inputs it was written with).
 */
export function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` seeded random floats in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = next(lo, hi);
  return out;
}

/** ‖out − ref‖₂ / ‖ref‖₂ (or ‖out‖₂ when ref is all zeros); NaN anywhere gives Infinity. */
export function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  assert.equal(out.length, ref.length, "compared arrays differ in length");
  let diff = 0, norm = 0;
  for (let i = 0; i < ref.length; i++) {
    if (Number.isNaN(out[i]) || Number.isNaN(ref[i])) return Infinity;
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  return Math.sqrt(diff) / Math.sqrt(norm || 1);
}

/** Asserts relativeError(out, ref) <= tolerance, naming what was compared. */
export function assertClose(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  tolerance: number,
  what: string,
): void {
  const error = relativeError(out, ref);
  assert.ok(error <= tolerance, `${what}: relative error ${error.toExponential(3)} > ${tolerance}`);
}

/**
 * Asserts assertClose per sequence of bf16 attention outputs, so a short sequence's error is not
 * diluted by a long one's: sequence s is token rows starts[s] to starts[s + 1] of `row` values,
 * named by `what(s)`.
 */
export function assertSequencesClose(
  got: Uint16Array,
  want: Uint16Array,
  starts: ArrayLike<number>,
  row: number,
  tolerance: number,
  what: (s: number) => string,
): void {
  const g = decodeBf16(got), w = decodeBf16(want);
  for (let s = 0; s + 1 < starts.length; s++) {
    const slice = [starts[s] * row, starts[s + 1] * row] as const;
    assertClose(g.subarray(...slice), w.subarray(...slice), tolerance, what(s));
  }
}

/** assertSequencesClose for decode outputs: one token row a sequence, named by its context. */
export function assertDecodeRowsClose(
  got: Uint16Array,
  want: Uint16Array,
  contexts: readonly number[],
  row: number,
  tolerance: number,
  what: string,
): void {
  const starts = Array.from({ length: contexts.length + 1 }, (_, b) => b);
  assertSequencesClose(
    got,
    want,
    starts,
    row,
    tolerance,
    (b) => `${what}: sequence ${b} (context ${contexts[b]})`,
  );
}

/** log_softmax of a logit row, in float64: the reference that logprob tests check against. */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}
