/**
 * The launch geometry Denali's tensor-core GEMVs share (bf16 in ops/gpu/linear.ts, FP8 in
 * ops/gpu/fp8.ts, 4-bit in ops/gpu/awq.ts): 256 threads in 8 warps; warp groups of 16 or 8
 * weight rows; the warps of a group split K in `ksplit` parts, no more than the group has warp
 * steps. The quantized GEMVs take 16 rows when that still gives at least one group per SM, and a
 * warp step of 256 k (16 rows) or 512 k (8 rows). Plain functions of integers, so a launch
 * allocates nothing.
 *
 * @module
 */

import type { DeviceBuffer, Stream } from "../../backends/backend.ts";

/**
 * A product on weight format W that may decline: out[m, n] from x[m, k] (or, for a SiLU
 * epilogue, a weight of [2n, k]); true where it ran, false (nothing launched) where it does
 * not apply and the caller takes another path.
 */
export type LinearCall<W> = (
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: W,
  m: number,
  n: number,
  k: number,
  stream: Stream,
) => boolean;

/** The quantized kernel index: (M > 8 ? 2 : 0) + (8 rows ? 1 : 0): t8_r16, t8_r8, t16_r16, t16_r8. */
export function quantizedGemvIndex(m: number, n: number, sms: number): number {
  return (m > 8 ? 2 : 0) + (Math.ceil(n / 16) >= sms ? 0 : 1);
}

/** W rows per warp group of quantized kernel `index`. */
export function quantizedGemvRows(index: number): number {
  return (index & 1) === 0 ? 16 : 8;
}

/**
 * A forced K split from loader options: 0 (not forced) when `split` is undefined, else `split`
 * itself; anything but 1, 2, 4 or 8 is a RangeError naming `what` (the kernels' shared memory and
 * grid assume a power of two up to the 8 warps of a block).
 */
export function forcedGemvSplit(what: string, split: number | undefined): number {
  if (split === undefined) return 0;
  if (![1, 2, 4, 8].includes(split)) {
    throw new RangeError(`${what} must be 1, 2, 4 or 8, got ${split}`);
  }
  return split;
}

/** Warps that split one row group's K: 8, or the largest power of two not above `steps`. */
export function gemvSplitFor(steps: number): number {
  return steps >= 8 ? 8 : steps >= 4 ? 4 : steps >= 2 ? 2 : 1;
}

/** A quantized GEMV's K split, from its steps of 256 k (16 rows) or 512 k (8 rows). */
export function quantizedGemvSplit(k: number, rows: number): number {
  return gemvSplitFor(Math.ceil(k / (rows === 16 ? 256 : 512)));
}

/**
 * How full a grid of `blocks` keeps `slots` resident block slots (SMs times blocks an SM) over its
 * waves: blocks / (waves · slots), 1 for a whole number of full waves. The last wave of a GEMV
 * grid leaves SMs idle for its whole length, so between two launch geometries of one product the
 * fuller one tends to read faster (gemvStagesFor, gemvSplitOf16).
 */
export function waveFill(blocks: number, slots: number): number {
  if (blocks <= 0 || slots <= 0) return 0;
  return blocks / (Math.ceil(blocks / slots) * slots);
}

/**
 * Steps in flight per warp of a GEMV of up to 8 tokens, given its grid's `blocks`, the device's
 * `sms`, and how many blocks an SM holds of the kernel with one step (`perSmOne`) and with two
 * (`perSmTwo`, which needs more registers). Two, unless one step fills the waves strictly fuller
 * (waveFill): the H100 sweep ran 6144×4096 (384 blocks) 1.04× and Qwen2.5's 4608×3584 (288)
 * 1.16× faster with one step, at 3 and 2 blocks an SM; every Llama and Qwen2.5 shape the rule
 * leaves at two ran as fast or faster with two.
 */
export function gemvStagesFor(
  blocks: number,
  sms: number,
  perSmOne: number,
  perSmTwo: number,
): 1 | 2 {
  return waveFill(blocks, perSmOne * sms) > waveFill(blocks, perSmTwo * sms) ? 1 : 2;
}

/**
 * The K split of a GEMV of 9-16 tokens that would split 8 ways: 4 where the split-8 grid takes 2-4
 * waves of `slots` and half the split (twice the rows a block, half the blocks) fills its waves
 * at least as full (waveFill), else 8. The H100 sweep at 16 tokens: split 4 ran 4608×3584 1.18×,
 * 6144×4096 1.04× and 14336×4096 1.03× faster (2, 2 and 4 waves, fills equal), split 8
 * 28672×4096 (7 waves) and 128256×4096 faster, and the one-wave 4096×4096. Past 4 waves the
 * tie is untested (Qwen3-8B's gate/up, 6 waves, made its 12- and 16-row steps no faster), so 8.
 */
export function gemvSplitOf16(blocksAt8: number, slots: number): 4 | 8 {
  const waves = Math.ceil(blocksAt8 / slots);
  if (waves < 2 || waves > 4) return 8;
  return waveFill(Math.ceil(blocksAt8 / 2), slots) >= waveFill(blocksAt8, slots) ? 4 : 8;
}

/** Blocks of a GEMV grid: each covers 8 / split groups of `rows` rows. */
export function gemvGridBlocks(n: number, rows: number, split: number): number {
  return Math.ceil(n / ((8 / split) * rows));
}

/**
 * A GEMV of up to `chunk` rows of x, with x and out as device addresses (so a caller can offset
 * them without allocating a buffer view).
 */
export type GemvAt<W> = (
  out: number,
  x: number,
  weight: W,
  m: number,
  n: number,
  k: number,
  stream: Stream,
) => void;

/**
 * Runs `gemv` over x's m rows in chunks of `chunk` rows, each chunk's x and out `chunk` rows
 * (bf16) on: one launch a chunk, each reading the whole weight. With `chunk` = 16 and K a
 * multiple of 8, every chunk's x stays 16-byte aligned if x was.
 */
export function gemvRowChunks<W>(
  gemv: GemvAt<W>,
  chunk: number,
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: W,
  m: number,
  n: number,
  k: number,
  stream: Stream,
): void {
  for (let r0 = 0; r0 < m; r0 += chunk) {
    gemv(out.ptr + 2 * r0 * n, x.ptr + 2 * r0 * k, weight, Math.min(chunk, m - r0), n, k, stream);
  }
}

/**
 * Most dynamic shared memory the norm-prologue GEMVs (bf16 and FP8) take, M · K bf16 of
 * normalised input: 8 tokens of a hidden size up to 6144. Larger products decline
 * (`linearRmsNorm` returns false).
 */
export const NORM_GEMV_SHARED_MAX = 96 * 1024;
