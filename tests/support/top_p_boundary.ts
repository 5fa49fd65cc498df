/**
 * Top-p exactly at its boundary, in closed form, for the CPU and GPU sampling tests. The logits
 * make every probability an exact power of two (p = 1, 1/2, 1/4, 1/4, then zeros), so the masses
 * and the nucleus are known without running a sampler: with topP = 3/4 the top two tokens hold
 * exactly 3/4 of the mass and form the nucleus by themselves; one f32 step above 3/4 the nucleus
 * takes both tied quarter tokens too. A `>` where the rule says `>=` (or the reverse) moves a token
 * across the boundary, which these cases see.
 *
 * @module
 */

/** Tokens in the row. */
export const BOUNDARY_VOCAB = 8;
/** T = f32(log2 e) makes the exponent (l − l_max)·log2(e)/T an exact integer for integer logits. */
export const BOUNDARY_TEMPERATURE: number = Math.fround(Math.LOG2E);
/** Logits 0, −1, −2, −2, then far below: p = 1, 1/2, 1/4, 1/4, 0, ... (token 5 is the top). */
export const BOUNDARY_LOGITS: Float32Array = new Float32Array([
  -2,
  -1000,
  -1,
  -1000,
  -2,
  0,
  -1000,
  -1000,
]);
/** The exact probabilities of {@link BOUNDARY_LOGITS} relative to the top token. */
export const BOUNDARY_P: readonly number[] = [0.25, 0, 0.5, 0, 0.25, 1, 0, 0];

/** The next f32 above `x`. */
export function nextF32Up(x: number): number {
  const f = new Float32Array([x]);
  new Uint32Array(f.buffer)[0]++;
  return f[0];
}

/** The smallest set of most likely tokens whose mass reaches topP of the total, ties kept. */
export function referenceNucleus(p: readonly number[], topP: number): number[] {
  const total = p.reduce((a, b) => a + b, 0);
  const order = [...p.keys()].filter((i) => p[i] > 0).sort((a, b) => p[b] - p[a]);
  const kept: number[] = [];
  let cumulative = 0;
  for (const i of order) {
    if (kept.length > 0 && cumulative >= topP * total && p[i] < p[kept.at(-1)!]) break;
    kept.push(i);
    cumulative += p[i];
  }
  return kept.sort((a, b) => a - b);
}

/** Each case: topP at or one f32 step past a cumulative boundary, and the nucleus written out. */
export const BOUNDARY_CASES: readonly (readonly [number, readonly number[]])[] = [
  [0.5, [5]], // the top token alone holds exactly half
  [nextF32Up(0.5), [2, 5]],
  [0.75, [2, 5]], // the top two hold exactly three quarters
  [nextF32Up(0.75), [0, 2, 4, 5]], // past it: both tied quarter tokens
  [1, [0, 2, 4, 5]],
];
