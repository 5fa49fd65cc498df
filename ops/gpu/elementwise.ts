/**
 * The elementwise family on a GPU: launchers over kernels/src/elementwise.cu. Arguments are
 * checked by the same functions the CPU reference uses (ops/checks/elementwise.ts); launch
 * shapes are pure arithmetic, so a call allocates nothing.
 *
 * Launch configurations (the kernels take their 16-byte path on their own when sizes and
 * pointers allow, so these only size the work):
 * - embedding: one block per token, 64..512 threads (a thread per 16 elements of the row).
 * - rmsNorm: one block per token, 64..1024 threads, a multiple of 64 for the block reduction;
 *   a thread per 16 elements keeps rows up to 16384 in registers between the two passes.
 * - rope: one block per token, a thread per (head, 8 rotated pairs), 64..512 threads, headDim
 *   floats of dynamic shared memory for that token's cos and sin.
 * - qkNorm: one block per token, a warp per head row in turn, 64..512 threads.
 * - qkvBias: one block per token, a thread per 4 elements of q|k|v, 64..512 threads.
 * - qkvRope: one block per token, 64..512 threads (up to 16 tokens: a block per 8 head rows of
 *   a token, 256 threads), a warp per head row in turn (q, k and v heads), headDim floats of
 *   dynamic shared memory for the token's cos and sin; a lane holds up to 8 rotated pairs, so
 *   headDim is at most 16 · 32. With `cache` it also scatters k and v
 *   into the paged cache (kv_write's job), and then waits before it releases the next kernel,
 *   as kv_write does, which keeps decodeAttention's contract (ops/gpu/attention.ts).
 * - siluMul and the casts: grid-stride, 256 threads, a thread per 8 outputs.
 * - fillRandom: grid-stride, 256 threads, a thread per output (one Philox block each), at most
 *   65536 blocks; 64-bit indices, so counts past 2^32 are fine.
 *
 * The kernels between a decode step's GEMVs (rmsNorm, qkvRope, siluMul, castBf16ToF32) launch
 * programmatically where the backend can (unless DENALI_PDL=0): they read and write only after
 * griddepcontrol.wait, so each may start while the GEMV before it drains, and they release the
 * GEMV after them at once, which then streams its weights while they run. The others launch
 * plainly: embedding opens a step (what the host uploaded must be complete before anything reads
 * it early), and qkNorm, qkvBias and rope are not on the forward pass.
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import {
  checkCast,
  checkEmbedding,
  checkFillRandom,
  checkQkNorm,
  checkQkvBias,
  checkQkvRope,
  checkQkvRopeCache,
  checkRmsNorm,
  checkRope,
  checkSiluMul,
} from "../checks/elementwise.ts";
import type { ElementwiseOps } from "../ops.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";

/** Threads per block of the grid-stride kernels. */
const FLAT_THREADS = 256;
/** Grid cap of the grid-stride kernels; the loop covers the rest. */
const MAX_BLOCKS = 65536;

/**
 * qkv_rope_bf16's flag bits: add the fused bias; norm q and k per head; write k and v into the
 * paged cache; that cache holds e4m3 codes.
 */
const QKV_ROPE_BIAS = 1, QKV_ROPE_NORM = 2, QKV_ROPE_CACHE = 4, QKV_ROPE_FP8_CACHE = 8;
/** Token counts up to which qkvRope deals a token's head rows over several blocks (decode). */
const QKV_ROPE_SPLIT_TOKENS = 16;
/** The largest head qkv_rope_bf16 holds: 8 rotated pairs a lane of 32. */
const QKV_ROPE_MAX_HEAD_DIM = 16 * 32;

/** `n` rounded up to a multiple of 64, clamped to [64, max]. */
function threads64(n: number, max: number): number {
  const rounded = Math.ceil(n / 64) * 64;
  return rounded < 64 ? 64 : rounded > max ? max : rounded;
}

/** Blocks of FLAT_THREADS threads for `vectors` work items, at least 1, at most MAX_BLOCKS. */
function flatBlocks(vectors: number): number {
  const blocks = Math.ceil(vectors / FLAT_THREADS);
  return blocks < 1 ? 1 : blocks > MAX_BLOCKS ? MAX_BLOCKS : blocks;
}

/**
 * Loads the elementwise kernels onto the backend's device and returns its ops; `programmatic`
 * (default: yes unless DENALI_PDL=0) says whether the kernels that wait launch so.
 */
export async function loadElementwiseOps(
  backend: Backend,
  options: { readonly programmatic?: boolean } = {},
): Promise<ElementwiseOps> {
  const kernels = await loadKernels(backend, "elementwise");
  const programmatic = programmaticWanted(options.programmatic);
  const waiting = (name: string) => launcherWith(backend, kernels, name, { programmatic }).launch;
  const { launchers } = kernels;
  const embedding = launchers.embedding_bf16.launch;
  const rmsNorm = waiting("rms_norm_bf16");
  const rmsNormResidual = waiting("rms_norm_residual_bf16");
  const qkNorm = launchers.qk_norm_bf16.launch;
  const qkvBias = launchers.qkv_bias_bf16.launch;
  const rope = launchers.rope_bf16.launch;
  const qkvRope = waiting("qkv_rope_bf16");
  const siluMul = waiting("silu_mul_bf16");
  const castF32ToBf16 = launchers.cast_f32_to_bf16.launch;
  const castBf16ToF32 = waiting("cast_bf16_to_f32");
  const fillRandom = launchers.fill_random_bf16.launch;

  return {
    embedding(out, table, ids, tokens, hidden, stream) {
      const vocab = checkEmbedding(out, table, ids, tokens, hidden);
      const threads = threads64(Math.ceil(hidden / 16), 512);
      embedding(tokens, 1, 1, threads, 1, 1, 0, stream, out, table, ids, hidden, vocab);
    },

    rmsNorm(out, x, weight, residual, tokens, hidden, eps, stream) {
      checkRmsNorm(out, x, weight, residual, tokens, hidden, eps);
      const threads = threads64(Math.ceil(hidden / 16), 1024);
      if (residual === null) {
        rmsNorm(tokens, 1, 1, threads, 1, 1, 0, stream, out, x, weight, hidden, eps);
      } else {
        rmsNormResidual(
          tokens,
          1,
          1,
          threads,
          1,
          1,
          0,
          stream,
          out,
          x,
          weight,
          residual,
          hidden,
          eps,
        );
      }
    },

    qkNorm(q, k, qWeight, kWeight, tokens, numHeads, numKvHeads, headDim, eps, stream) {
      checkQkNorm(q, k, qWeight, kWeight, tokens, numHeads, numKvHeads, headDim, eps);
      const threads = threads64((numHeads + numKvHeads) * 32, 512);
      qkNorm(
        tokens,
        1,
        1,
        threads,
        1,
        1,
        0,
        stream,
        q,
        k,
        qWeight,
        kWeight,
        numHeads,
        numKvHeads,
        headDim,
        eps,
      );
    },

    qkvBias(q, k, v, bias, tokens, qWidth, kvWidth, stream) {
      checkQkvBias(q, k, v, bias, tokens, qWidth, kvWidth);
      const threads = threads64(Math.ceil((qWidth + 2 * kvWidth) / 4), 512);
      qkvBias(tokens, 1, 1, threads, 1, 1, 0, stream, q, k, v, bias, qWidth, kvWidth);
    },

    rope(q, k, positions, table, tokens, numHeads, numKvHeads, stream) {
      checkRope(q, k, positions, table, tokens, numHeads, numKvHeads);
      const headDim = table.headDim;
      const items = (numHeads + numKvHeads) * Math.ceil(headDim / 16);
      const threads = threads64(items, 512);
      rope(
        tokens,
        1,
        1,
        threads,
        1,
        1,
        4 * headDim,
        stream,
        q,
        k,
        positions,
        table.invFreq,
        numHeads,
        numKvHeads,
        headDim,
      );
    },

    qkvRope(a, stream) {
      const headDim = checkQkvRope(a);
      if (headDim > QKV_ROPE_MAX_HEAD_DIM) {
        throw new RangeError(
          `qkvRope: headDim ${headDim} is over the GPU kernel's ${QKV_ROPE_MAX_HEAD_DIM} ` +
            "(8 rotated pairs a lane); Denali's attention kernels take 64 and 128",
        );
      }
      const cache = a.cache ?? null;
      const numBlocks = cache === null ? 0 : checkQkvRopeCache(a, cache);
      // A decode batch's tokens leave most SMs idle: a block of 8 warps per 8 head rows puts every
      // row on a warp of its own (one memory round trip deep, not three). Prefill: a block a token.
      const rows = a.numHeads + 2 * a.numKvHeads;
      const split = a.tokens <= QKV_ROPE_SPLIT_TOKENS;
      const threads = split ? 256 : threads64(rows * 32, 512);
      const rowBlocks = split ? Math.ceil(rows / 8) : 1;
      const flags = (a.bias ? QKV_ROPE_BIAS : 0) | (a.qNorm ? QKV_ROPE_NORM : 0) |
        (cache === null ? 0 : QKV_ROPE_CACHE) |
        (cache?.shape.kvDtype === "fp8" ? QKV_ROPE_FP8_CACHE : 0);
      // Absent weights and caches are never read (flags say so); any valid pointer stands in.
      qkvRope(
        a.tokens,
        rowBlocks,
        1,
        threads,
        1,
        1,
        4 * headDim,
        stream,
        a.q,
        a.k,
        a.v,
        a.qkv,
        a.positions,
        a.table.invFreq,
        a.bias ?? a.qkv,
        a.qNorm ?? a.qkv,
        a.kNorm ?? a.qkv,
        a.numHeads,
        a.numKvHeads,
        headDim,
        a.eps,
        flags,
        cache?.kCache ?? a.qkv,
        cache?.vCache ?? a.qkv,
        cache?.slots ?? a.positions,
        cache?.shape.blockSize ?? 1,
        numBlocks,
        cache?.shape.kScale ?? 1,
        cache?.shape.vScale ?? 1,
      );
    },

    siluMul(out, gateUp, tokens, inter, stream) {
      checkSiluMul(out, gateUp, tokens, inter);
      const blocks = flatBlocks(Math.ceil((tokens * inter) / 8));
      siluMul(blocks, 1, 1, FLAT_THREADS, 1, 1, 0, stream, out, gateUp, tokens, inter);
    },

    fillRandom(out, count, seed, scale, stream) {
      checkFillRandom(out, count, seed, scale);
      fillRandom(flatBlocks(count), 1, 1, FLAT_THREADS, 1, 1, 0, stream, out, count, seed, scale);
    },

    castF32ToBf16(out, x, count, stream) {
      checkCast("castF32ToBf16", out, x, count, 2, 4);
      const blocks = flatBlocks(Math.ceil(count / 8));
      castF32ToBf16(blocks, 1, 1, FLAT_THREADS, 1, 1, 0, stream, out, x, count);
    },

    castBf16ToF32(out, x, count, stream) {
      checkCast("castBf16ToF32", out, x, count, 4, 2);
      const blocks = flatBlocks(Math.ceil(count / 8));
      castBf16ToF32(blocks, 1, 1, FLAT_THREADS, 1, 1, 0, stream, out, x, count);
    },
  };
}
