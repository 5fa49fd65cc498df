/**
 * The launch geometry the quantized tensor-core GEMVs share (FP8 in ops/gpu/fp8.ts, 4-bit in
 * ops/gpu/awq.ts): 256 threads in 8 warps; warp groups of 16 or 8 weight rows, 16 when that
 * still gives at least one group per SM; a warp reads a step of 256 k (16 rows) or 512 k
 * (8 rows) of its rows; the warps of a group split K in `ksplit` parts. Plain functions of
 * integers, so a launch allocates nothing.
 *
 * @module
 */

/** The kernel index: (M > 8 ? 2 : 0) + (8 rows ? 1 : 0), i.e. t8_r16, t8_r8, t16_r16, t16_r8. */
export function quantizedGemvIndex(m: number, n: number, sms: number): number {
  return (m > 8 ? 2 : 0) + (Math.ceil(n / 16) >= sms ? 0 : 1);
}

/** W rows per warp group of kernel `index`. */
export function quantizedGemvRows(index: number): number {
  return (index & 1) === 0 ? 16 : 8;
}

/** Warps splitting one group's K: 8, or the largest power of two not above its step count. */
export function quantizedGemvSplit(k: number, rows: number): number {
  const steps = Math.ceil(k / (rows === 16 ? 256 : 512));
  return steps >= 8 ? 8 : steps >= 4 ? 4 : steps >= 2 ? 2 : 1;
}

/** Blocks of the grid: each covers 8 / split groups of `rows` rows. */
export function quantizedGemvBlocks(n: number, rows: number, split: number): number {
  return Math.ceil(n / ((8 / split) * rows));
}
