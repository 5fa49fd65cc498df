/**
 * 4-bit (AWQ/GPTQ) weights on a GPU: launchers over kernels/src/linear_awq.cu.
 *
 * Kernel choice for `linear` on an {@link AwqWeight} (x and the codes 16-byte aligned for the
 * GEMVs; K is a multiple of the group size, hence of 32):
 * - CUDA, M <= 16: the tensor-core GEMV `linear_awq_gemv_t{8,16}_r{16,8}[_s2]`, with the FP8
 *   GEMV's geometry (ops/gpu/fp8.ts): t8 (two steps in flight) for M <= 8, else t16; 16 W rows
 *   per warp group when that gives at least one group per SM, else 8; warps split K in groups
 *   of `ksplit` = 8, fewer when K has fewer steps (a step covers 256 k with 16 rows, 512 with 8);
 *   256 threads, grid ceil(N / (8 · rows / ksplit)). The mma takes up to 8 tokens per tile at
 *   no extra cost, so its time hardly moves with M. For M <= 8 on 16-row groups the default is
 *   the post-scaled `linear_awq_gemv_t8_r16_s2_ps` (see awqGemvVariantWanted).
 * - HIP, M <= 4: the portable CUDA-core GEMV `linear_awq_gemv_t4`; 256 threads, 8 output rows
 *   per block, grid ceil(N / 8). Its cost grows with M (a 16-row variant took 3.1x the bf16
 *   GEMV at M = 8 on an H100, bench/results/2026-12-05-s7-awq-kernels-h100.md), hence 4.
 * - Opt-in (`gemmMaxM`, LinearOptions.awqGemmMaxM; CUDA), 16 < M <= gemmMaxM, x 16-byte
 *   aligned: the W4A16 GEMM `linear_awq_gemm_64x64`, the bf16 64×64 tensor-core GEMM with its W
 *   tiles unpacked from the codes into shared memory (no dequantized weight in memory); 128
 *   threads, 65536 bytes of dynamic shared memory, grid ceil(M / 64) · ceil(N / 64). Correct, but
 *   on an H100 it took 1.5-3.5× the dequantize path's time on four of the five Llama-3-8B shapes
 *   at M = 32-256 (0.92× only on gate/up at M <= 64; bench/results/2026-12-06-s11-awq-gemm-h100.md),
 *   so the default stays the dequantize path.
 * - CUDA, 16 < M <= 48 (unless the W4A16 GEMM took it): the tensor-core GEMV over x's rows in
 *   chunks of 16 (`gemvRows`, a launch a chunk). Each chunk reads the 4-bit weight again, which
 *   costs less than the path below (it writes and reads the weight as bf16, 4× its bytes each
 *   way) up to three chunks: on an H100 the Llama-3-8B step at 32 rows took 8.8 ms against that
 *   path's 14.1, at 64 rows 15.7 against 15.1 (bench/results/2026-12-07-s16-silu-gemv-rows-h100.md).
 * - Everything else: `linear_awq_dequantize` into the weight's scratch (bf16 [N, K]), then the
 *   bf16 linear over the scratch, whichever kernel or vendor library that picks.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import type { Launcher } from "../../kernels/launcher.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { checkAwqArgs } from "../checks/linear.ts";
import type { AwqWeight } from "../linear_weight.ts";
import type { AwqOps } from "../ops.ts";
import {
  forcedGemvSplit,
  type GemvAt,
  gemvGridBlocks,
  gemvRowChunks,
  type LinearCall,
  quantizedGemvIndex,
  quantizedGemvRows,
  quantizedGemvSplit,
} from "./gemv_geometry.ts";

/** The 4-bit ops, plus the two halves of `linear` on a 4-bit weight, for ops/gpu/linear.ts. */
export interface GpuAwqOps extends AwqOps {
  /** Runs the W4A16 GEMV and returns true, or returns false when the call is not a GEMV's. */
  gemv: LinearCall<AwqWeight>;
  /**
   * The tensor-core W4A16 GEMV over x's rows in chunks of 16, one launch a chunk (each reading
   * the whole weight), for 16 < m <= {@link GEMV_ROWS_MAX_M} (CUDA): up to three passes over the
   * 4-bit codes cost less than dequantizing the weight to bf16 (writing and reading 4× its
   * bytes) and running the bf16 GEMM. False, having done nothing, elsewhere.
   */
  gemvRows: LinearCall<AwqWeight>;
  /**
   * The W4A16 GEMV with SiLU-and-multiply in its epilogue, on a gate/up weight of [2n, k] (gate
   * rows first): out[m, n], the bits `gemv` into [m, 2n] and then siluMul would write. Returns
   * false, having done nothing, where no such kernel takes the call (HIP, not a GEMV's, a t8
   * variant other than the default s2_ps, or the epilogue not asked for at load).
   */
  gemvSiluMul: LinearCall<AwqWeight>;
  /**
   * Runs the W4A16 GEMM and returns true, or returns false where it does not apply: not CUDA, M
   * within the GEMVs' rows or past `gemmMaxM` (unless `force`), or x or the codes not 16-byte
   * aligned.
   */
  gemm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: AwqWeight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    force?: boolean,
  ): boolean;
  /** Dequantizes `weight` into its scratch and returns the bf16 [n, k] view of it. */
  toScratch(weight: AwqWeight, n: number, k: number, stream: Stream): DeviceBuffer;
}

/** The most rows of x the portable GEMV takes (HIP). */
const PORTABLE_MAX_M = 4;
/** The most rows of x the tensor-core GEMVs take (CUDA). */
const MMA_MAX_M = 16;
/**
 * The most rows `gemvRows` takes: three passes of the tensor-core GEMV. On an H100 two passes
 * (32 rows) took the Llama-3-8B step to 0.624× the dequantize path's and four (64 rows) to 1.041×
 * (bench/results/2026-12-07-s16-silu-gemv-rows-h100.md); three sit between, closer to the win.
 */
export const GEMV_ROWS_MAX_M = 48;
/** Output rows per portable GEMV block (AWQ_ROWS in the kernel). */
const GEMV_ROWS = 8;
/** The tensor-core GEMVs, indexed by (M > 8 ? 2 : 0) + (8 rows ? 1 : 0). */
const MMA_GEMVS = [
  "linear_awq_gemv_t8_r16_s2",
  "linear_awq_gemv_t8_r8_s2",
  "linear_awq_gemv_t16_r16",
  "linear_awq_gemv_t16_r8",
];
/**
 * The GEMVs with SiLU-and-multiply in their epilogue (16-row groups), indexed by M > 8: the t8 one
 * is the s2_ps variant's, so it runs only where that variant is the one chosen.
 */
const SILU_GEMVS = ["linear_awq_gemv_t8_r16_s2_ps_silu", "linear_awq_gemv_t16_r16_silu"];
/**
 * The t8/16-row GEMV's variants (index 0 of MMA_GEMVS is "s2"): steps of codes in flight per warp
 * (2 or 3), persistent (`_p`: a grid of at most 2 blocks an SM, each looping over row blocks), and
 * post-scaled (`s2_ps`: the mma on q - z, each chunk's sums scaled once in f32).
 */
export type AwqGemvVariant = "s2" | "s3" | "s2_p" | "s3_p" | "s2_ps";
const T8_R16_VARIANTS: Record<AwqGemvVariant, string> = {
  s2: "linear_awq_gemv_t8_r16_s2",
  s3: "linear_awq_gemv_t8_r16_s3",
  s2_p: "linear_awq_gemv_t8_r16_s2_p",
  s3_p: "linear_awq_gemv_t8_r16_s3_p",
  s2_ps: "linear_awq_gemv_t8_r16_s2_ps",
};
/**
 * The 4-bit GEMV variant asked for: `requested`, else DENALI_AWQ_GEMV (so a whole engine can be
 * timed on one), else `s2_ps`: on an H200 it took 0.976× s2's batch-1 AWQ step and read
 * 0.01-0.05 more of the read-only bandwidth on every Llama-3-8B shape
 * (bench/results/2026-12-06-s13-awq-post-scale-h200.md); split and persistence changed nothing
 * (bench/results/2026-12-06-s13-quant-gemv-sweep-h100.md). An unknown name is a RangeError naming the choices.
 */
export function awqGemvVariantWanted(requested?: AwqGemvVariant): AwqGemvVariant {
  const wanted = requested ?? (Deno.env.get("DENALI_AWQ_GEMV") || "s2_ps");
  if (!(wanted in T8_R16_VARIANTS)) {
    throw new RangeError(
      `4-bit GEMV variant ${wanted} is unknown; use one of ${
        Object.keys(T8_R16_VARIANTS).join(", ")
      }`,
    );
  }
  return wanted as AwqGemvVariant;
}

/** Blocks an SM of the persistent GEMVs (their launch bounds guarantee 2 fit). */
const PERSISTENT_BLOCKS_PER_SM = 2;
/** Grid limit of the row-striding kernel. */
const MAX_ROW_BLOCKS = 65535;
/** Rows and columns of the W4A16 GEMM's output tile, and its dynamic shared memory (4 stages). */
const GEMM_TILE = 64, GEMM_SHARED = 4 * 2 * 64 * 64 * 2;

/**
 * Loads the 4-bit weight kernels onto `backend`'s device. The GEMV reads x, scales and zeros and
 * writes out only after griddepcontrol.wait, so it may launch programmatically (`programmatic`,
 * as the other GEMVs: on where the backend supports it unless DENALI_PDL=0); the dequantize
 * kernel may not, since it overwrites a scratch the GEMM before it may still read.
 */
export async function loadAwqOps(
  backend: Backend,
  options: {
    readonly programmatic?: boolean;
    readonly gemmMaxM?: number;
    /** Forces the GEMVs' K split (benchmarks). */
    readonly gemvSplit?: 1 | 2 | 4 | 8;
    /** The t8/16-row GEMV's variant (benchmarks; default awqGemvVariantWanted's). */
    readonly gemvVariant?: AwqGemvVariant;
    /** Whether `gemvSiluMul` runs (its launchers are built only then; default false). */
    readonly siluEpilogue?: boolean;
  } = {},
): Promise<GpuAwqOps> {
  const kernels = await loadKernels(backend, "linear_awq");
  const programmatic = programmaticWanted(options.programmatic);
  const gemvT4 = launcherWith(backend, kernels, "linear_awq_gemv_t4", { programmatic }).launch;
  // The tensor-core GEMVs exist only for CUDA (their HIP copies trap).
  const mma = backend.kind === "cuda";
  const variant = awqGemvVariantWanted(options.gemvVariant);
  const persistent = variant.endsWith("_p");
  const mmaGemvs = [T8_R16_VARIANTS[variant], ...MMA_GEMVS.slice(1)].map((name) =>
    launcherWith(backend, kernels, name, { programmatic }).launch
  );
  const siluGemvs = mma && options.siluEpilogue === true
    ? SILU_GEMVS.map((name) => launcherWith(backend, kernels, name, { programmatic }).launch)
    : null;
  const forcedSplit = forcedGemvSplit("loadAwqOps: gemvSplit", options.gemvSplit);
  const sms = backend.info.multiprocessors;
  const maxM = mma ? MMA_MAX_M : PORTABLE_MAX_M;
  const dequantize = kernels.launchers.linear_awq_dequantize.launch;
  // The GEMM needs more than the default 48 KiB of dynamic shared memory (HIP never runs it).
  const gemm = mma
    ? launcherWith(
      backend,
      kernels,
      "linear_awq_gemm_64x64",
      {},
      (fn) => fn.setMaxDynamicSharedMemory(GEMM_SHARED),
    ).launch
    : null;
  const gemmMaxM = mma ? Math.max(maxM, options.gemmMaxM ?? 0) : maxM;
  // Past these rows of x a call dequantizes into the weight's scratch.
  const scratchPast = mma ? Math.max(gemmMaxM, GEMV_ROWS_MAX_M) : gemmMaxM;

  /** The tensor-core GEMV of m <= 16 rows of x at device address `x` into `out` (checked). */
  const mmaAt: GemvAt<AwqWeight> = (out, x, weight, m, n, k, stream) => {
    const index = quantizedGemvIndex(m, n, sms), rows = quantizedGemvRows(index);
    const split = forcedSplit || quantizedGemvSplit(k, rows);
    const rowBlocks = gemvGridBlocks(n, rows, split);
    const blocks = persistent && index === 0
      ? Math.min(rowBlocks, PERSISTENT_BLOCKS_PER_SM * sms)
      : rowBlocks;
    launchMma(mmaGemvs[index], blocks, out, x, weight, m, n, k, split, stream);
  };

  /** One tensor-core GEMV launch (256 threads a block) over `weight`'s codes, zeros and scales. */
  function launchMma(
    kernel: Launcher,
    blocks: number,
    out: DeviceBuffer | number,
    x: DeviceBuffer | number,
    weight: AwqWeight,
    m: number,
    n: number,
    k: number,
    split: number,
    stream: Stream,
  ): void {
    const { codes, zeros, scales, groupSize } = weight;
    kernel(
      blocks,
      1,
      1,
      256,
      1,
      1,
      0,
      stream,
      out,
      x,
      codes,
      zeros,
      scales,
      m,
      n,
      k,
      groupSize,
      split,
    );
  }

  function dequantizeAwq(
    out: DeviceBuffer,
    weight: AwqWeight,
    n: number,
    k: number,
    stream: Stream,
  ): void {
    checkAwqArgs("dequantizeAwq", out, weight, n, k);
    const blocks = Math.min(n, MAX_ROW_BLOCKS);
    dequantize(
      blocks,
      1,
      1,
      256,
      1,
      1,
      0,
      stream,
      out,
      weight.codes,
      weight.zeros,
      weight.scales,
      n,
      k,
      weight.groupSize,
    );
  }

  return {
    gemv(out, x, weight, m, n, k, stream) {
      // `|` reads the low bits through ToInt32, exact for any address below 2^53. K is a
      // multiple of the group size (checked), hence of 32.
      if (m > maxM || ((x.ptr | weight.codes.ptr) & 15) !== 0) return false;
      if (mma) {
        mmaAt(out.ptr, x.ptr, weight, m, n, k, stream);
        return true;
      }
      const blocks = Math.ceil(n / GEMV_ROWS);
      gemvT4(
        blocks,
        1,
        1,
        256,
        1,
        1,
        0,
        stream,
        out,
        x,
        weight.codes,
        weight.zeros,
        weight.scales,
        m,
        n,
        k,
        weight.groupSize,
      );
      return true;
    },

    gemvRows(out, x, weight, m, n, k, stream) {
      if (!mma || m <= MMA_MAX_M || m > GEMV_ROWS_MAX_M) return false;
      if (((x.ptr | weight.codes.ptr) & 15) !== 0) return false;
      gemvRowChunks(mmaAt, MMA_MAX_M, out, x, weight, m, n, k, stream);
      return true;
    },

    gemvSiluMul(out, x, weight, m, n, k, stream) {
      if (siluGemvs === null || m > MMA_MAX_M || ((x.ptr | weight.codes.ptr) & 15) !== 0) {
        return false;
      }
      if (m <= 8 && variant !== "s2_ps") return false;
      const split = forcedSplit || quantizedGemvSplit(k, 16);
      const blocks = gemvGridBlocks(2 * n, 16, split);
      launchMma(siluGemvs[m > 8 ? 1 : 0], blocks, out, x, weight, m, n, k, split, stream);
      return true;
    },

    gemm(out, x, weight, m, n, k, stream, force = false) {
      if (gemm === null || m <= maxM || (m > gemmMaxM && !force)) return false;
      if (((x.ptr | weight.codes.ptr) & 15) !== 0 || weight.groupSize % 32 !== 0) return false;
      const blocks = Math.ceil(m / GEMM_TILE) * Math.ceil(n / GEMM_TILE);
      gemm(
        blocks,
        1,
        1,
        128,
        1,
        1,
        GEMM_SHARED,
        stream,
        out,
        x,
        weight.codes,
        weight.zeros,
        weight.scales,
        m,
        n,
        k,
        weight.groupSize,
      );
      return true;
    },

    toScratch(weight, n, k, stream) {
      const scratch = weight.scratch;
      if (scratch === null || scratch.bytes < 2 * n * k) {
        throw new RangeError(
          `linear: a 4-bit weight of ${n}×${k} with more than ${scratchPast} rows of x ` +
            `needs a bf16 scratch of ${2 * n * k} bytes, but it has ${
              scratch?.bytes ?? "none"
            }; size it with awqScratchBytes (the weight loader does)`,
        );
      }
      dequantizeAwq(scratch, weight, n, k, stream);
      return scratch;
    },

    dequantizeAwq,

    awqScratchBytes(n, k) {
      return 2 * n * k;
    },
  };
}
