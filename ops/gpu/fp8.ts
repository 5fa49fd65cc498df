/**
 * FP8 weights on a GPU: launchers over kernels/src/linear_fp8.cu.
 *
 * Kernel choice for `linear` on an {@link Fp8Weight}:
 * - M <= 16, K % 16 == 0, x and W 16-byte aligned: the W8A16 GEMV,
 *   `linear_fp8_gemv_t{8,16}_r{16,8}[_s2]`, with the bf16 GEMV's geometry: t8 (two steps of W in
 *   flight) for M <= 8, else t16; 16 W rows per warp group when that gives at least one group
 *   per SM, else 8; warps split K in groups of `ksplit` = 8, fewer when K has fewer steps (a
 *   step covers 256 k with 16 rows, 512 with 8); 256 threads, grid ceil(N / (8 · rows / ksplit)).
 *   Programmatic launch where the backend offers it, as the bf16 GEMVs.
 * - M > 16 on a shape where prepareLinear timed it faster (W8A8, FP8 tensor cores):
 *   `linear_fp8_quantize` quantizes x per token (scale = amax / 448, as the weights per row) into
 *   the weight's scratch, and codes are multiplied by codes on FP8 tensor cores, `via` Denali's
 *   wgmma GEMM (`linear_wgmma_fp8_*`, the sm_90a image; launched by ops/gpu/linear.ts) or the
 *   vendor library's FP8 matmul with per-row scales (`GemmAccelerator.gemmFp8`, cuBLASLt 12.9+).
 * - 16 < M <= 64 on a shape where prepareLinear timed it faster: the GEMV above over x's rows in
 *   chunks of 16 (`gemvRows`; a launch a chunk, each reading the whole FP8 weight).
 * - Everything else: `linear_fp8_dequantize` into the weight's scratch (bf16 [N, K]), then the
 *   bf16 linear over the scratch, whichever kernel or vendor library that picks. This is the
 *   prefill path on GPUs without FP8 tensor cores (sm_80), and wherever W8A8 timed slower.
 *
 * @module
 */

import type {
  Backend,
  DeviceBuffer,
  GemmAccelerator,
  ScaledFp8,
  Stream,
} from "../../backends/backend.ts";
import { UnsupportedShapeError } from "../../backends/errors.ts";
import { reportFallback } from "../../backends/fallbacks.ts";
import type { Launcher } from "../../kernels/launcher.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { checkFp8Args } from "../checks/linear.ts";
import type { Fp8Weight } from "../linear_weight.ts";
import type { Fp8Ops } from "../ops.ts";
import {
  forcedGemvSplit,
  type GemvAt,
  gemvGridBlocks,
  gemvRowChunks,
  type LinearCall,
  NORM_GEMV_SHARED_MAX,
  quantizedGemvIndex,
  quantizedGemvRows,
  quantizedGemvSplit,
} from "./gemv_geometry.ts";

/** Which FP8 tensor-core GEMM a W8A8 product runs on: Denali's wgmma kernel or the library's. */
export type W8a8Via = "wgmma" | "library";

/**
 * Runs Denali's FP8 GEMM: out[m, n] = bf16(x.scales[m] · w.scales[n] · Σ_k x · W), codes; the
 * call the library's FP8 matmul takes (`GemmAccelerator.gemmFp8`), so either serves W8A8.
 */
export type Fp8Gemm = NonNullable<GemmAccelerator["gemmFp8"]>;

/** The FP8 ops, plus the two halves of `linear` on an FP8 weight, for ops/gpu/linear.ts. */
export interface GpuFp8Ops extends Fp8Ops {
  /** Runs the W8A16 GEMV and returns true, or returns false when the call is not a GEMV's. */
  gemv: LinearCall<Fp8Weight>;
  /**
   * The W8A16 GEMV over x's rows in chunks of 16, one launch a chunk (each reading the whole
   * weight), for 16 < m <= {@link GEMV_ROWS_MAX_M}: the rows past the GEMVs' 16 at batch sizes
   * where reading the FP8 weight a few times beats dequantizing it (prepareLinear races it).
   * Returns false, having done nothing, outside that range or where the GEMV can't take x.
   */
  gemvRows: LinearCall<Fp8Weight>;
  /**
   * The W8A16 GEMV with SiLU-and-multiply in its epilogue, on a gate/up weight of [2n, k] (gate
   * rows first): out[m, n], the bits `gemv` into [m, 2n] and then siluMul would write. Returns
   * false, having done nothing, where no such kernel takes the call (HIP, not a GEMV's, or the
   * epilogue not asked for at load).
   */
  gemvSiluMul: LinearCall<Fp8Weight>;
  /**
   * The W8A16 GEMV with the pre-norm step in its prologue (`linearRmsNorm` on an FP8 weight, whose
   * checks the caller made): out[m, n] = rmsNorm(x (+ res)) · Wᵀ, the sum to resOut. Returns
   * false, having done nothing, where no such kernel takes the call (HIP, the prologue not asked
   * for at load, more than 8 rows, not a GEMV's, or a grid of more than `maxBlocks` blocks when
   * that is not 0).
   */
  gemvNorm(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    res: DeviceBuffer | null,
    resOut: DeviceBuffer | null,
    gamma: DeviceBuffer,
    eps: number,
    maxBlocks: number,
    stream: Stream,
  ): boolean;
  /**
   * Runs the W8A8 product (x quantized per token into the weight's scratch, then the FP8 GEMM
   * `via` names) and returns true, or returns false where it can't: no such GEMM here (no sm_90a
   * image, no library FP8 matmul), K not a multiple of 16, more than 65535 rows, unaligned
   * codes, a scratch too small, or the library refusing the shape (reported once as a fallback).
   * The caller then dequantizes.
   */
  w8a8(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    via: W8a8Via,
  ): boolean;
  /** Whether `w8a8` could run this call `via` that GEMM (the library may still refuse it). */
  w8a8Possible(m: number, k: number, weight: Fp8Weight, via: W8a8Via): boolean;
  /** The scratch bytes `w8a8` needs for x of [m, k]. */
  w8a8ScratchBytes(m: number, k: number): number;
  /**
   * Lets the library time its FP8 algorithms for this call shape (`GemmAccelerator.tuneFp8`),
   * then runs its FP8 matmul once; false where either was refused (reported once). Cold.
   */
  tuneW8a8(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    time: (run: () => void) => number,
  ): boolean;
  /** Dequantizes `weight` into its scratch and returns the bf16 [n, k] view of it. */
  toScratch(weight: Fp8Weight, n: number, k: number, stream: Stream): DeviceBuffer;
  /** The GEMV kernel `gemv` would launch for this call, or null. For labels and tests. */
  gemvKernel(m: number, n: number, k: number, x: DeviceBuffer, weight: Fp8Weight): string | null;
}

/** The GEMVs, indexed by (M > 8 ? 2 : 0) + (8 rows ? 1 : 0). */
const GEMV_KERNELS = [
  "linear_fp8_gemv_t8_r16_s2",
  "linear_fp8_gemv_t8_r8_s2",
  "linear_fp8_gemv_t16_r16",
  "linear_fp8_gemv_t16_r8",
];
/** The GEMVs with SiLU-and-multiply in their epilogue (16-row groups), indexed by M > 8. */
const SILU_GEMV_KERNELS = ["linear_fp8_gemv_t8_r16_s2_silu", "linear_fp8_gemv_t16_r16_silu"];
/** The GEMVs with the pre-norm step in their prologue (M <= 8), indexed as GEMV_KERNELS. */
const NORM_GEMV_KERNELS = ["linear_fp8_gemv_t8_r16_s2_norm", "linear_fp8_gemv_t8_r8_s2_norm"];
/** The most rows the GEMVs take. */
const GEMV_MAX_M = 16;
/** The most rows `gemvRows` takes: four passes over the weight. */
export const GEMV_ROWS_MAX_M = 64;
/** Grid limit of the row-striding kernels. */
const MAX_ROW_BLOCKS = 65535;
/**
 * Bytes at the start of a scratch buffer for the per-token scales of x in the W8A8 path: one f32
 * for each of up to 65536 rows; the codes follow, 256-byte aligned as cuBLASLt likes them.
 */
const X_SCALES_BYTES = 4 * 65536;

/** x quantized per token, as views into one scratch buffer, made once per scratch. */
interface QuantizedX extends ScaledFp8 {
  /** The scratch these views cover, to tell a stale entry from a fresh one. */
  readonly scratch: DeviceBuffer;
}

/** Loads the FP8 kernels onto `backend`'s device. */
export async function loadFp8Ops(
  backend: Backend,
  options: {
    readonly programmatic?: boolean;
    readonly wgmma?: Fp8Gemm | null;
    /** Whether `gemvSiluMul` runs (its launchers are built only then; default false). */
    readonly siluEpilogue?: boolean;
    /** Whether `gemvNorm` runs (its launchers are built only then; default false). */
    readonly normPrologue?: boolean;
    /** Forces the GEMVs' K split (benchmarks). */
    readonly gemvSplit?: 1 | 2 | 4 | 8;
  } = {},
): Promise<GpuFp8Ops> {
  const kernels = await loadKernels(backend, "linear_fp8");
  const programmatic = programmaticWanted(options.programmatic);
  const forcedSplit = forcedGemvSplit("loadFp8Ops: gemvSplit", options.gemvSplit);
  const gemvs: Launcher[] = GEMV_KERNELS.map((name) =>
    launcherWith(backend, kernels, name, { programmatic }).launch
  );
  // The fused SiLU GEMVs exist only for CUDA (their HIP copies trap).
  const siluGemvs: Launcher[] | null = backend.kind === "cuda" && options.siluEpilogue === true
    ? SILU_GEMV_KERNELS.map((name) => launcherWith(backend, kernels, name, { programmatic }).launch)
    : null;
  // The norm-prologue GEMVs likewise, with room for their normalised rows.
  const normGemvs: Launcher[] | null = backend.kind === "cuda" && options.normPrologue === true
    ? NORM_GEMV_KERNELS.map((name) =>
      launcherWith(
        backend,
        kernels,
        name,
        { programmatic },
        (fn) => fn.setMaxDynamicSharedMemory(NORM_GEMV_SHARED_MAX),
      ).launch
    )
    : null;
  const dequantize = kernels.launchers.linear_fp8_dequantize.launch;
  const quantize = kernels.launchers.linear_fp8_quantize.launch;
  const sms = backend.info.multiprocessors;
  const accel = backend.gemmAccelerator;
  const wgmma = options.wgmma ?? null;
  // The views of the last scratch seen: a model's FP8 weights share one, so this is a lookup
  // that allocates nothing after the first call.
  let quantizedX: QuantizedX | null = null;
  let refusalReported = false;

  function viewsOf(scratch: DeviceBuffer): QuantizedX {
    if (quantizedX?.scratch !== scratch) {
      quantizedX = {
        scratch,
        scales: scratch.slice(0, X_SCALES_BYTES),
        data: scratch.slice(X_SCALES_BYTES, scratch.bytes - X_SCALES_BYTES),
      };
    }
    return quantizedX;
  }

  /** x [m, k] bf16 → codes and one scale per token in the scratch: the weight quantizer's math. */
  function quantizeX(
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    k: number,
    stream: Stream,
  ): QuantizedX {
    const xq = viewsOf(weight.scratch!);
    quantize(Math.min(m, MAX_ROW_BLOCKS), 1, 1, 256, 1, 1, 0, stream, xq.data, xq.scales, x, m, k);
    return xq;
  }

  /**
   * What a library refusal (UnsupportedShapeError) means here: false, reported once, as FP8
   * weights of refused shapes then dequantize. Tuning skips single refused algorithms itself, so
   * a refusal that reaches here is the shape's. Any other error is real, and rethrown.
   */
  function refused(error: unknown): false {
    if (!(error instanceof UnsupportedShapeError)) throw error;
    if (!refusalReported) {
      refusalReported = true;
      reportFallback(
        `${accel!.name} refused an FP8 linear shape`,
        `${error.message}; FP8 weights of refused shapes are dequantized to bf16 instead`,
      );
    }
    return false;
  }

  function w8a8(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
    via: W8a8Via,
  ): boolean {
    if (!w8a8Possible(m, k, weight, via)) return false;
    const xq = quantizeX(x, weight, m, k, stream);
    if (via === "wgmma") {
      wgmma!(out, xq, weight, m, n, k, stream);
      return true;
    }
    // No closure here: this runs in every mixed and prefill step.
    try {
      accel!.gemmFp8!(out, xq, weight, m, n, k, stream);
      return true;
    } catch (error) {
      return refused(error);
    }
  }

  function w8a8Possible(m: number, k: number, weight: Fp8Weight, via: W8a8Via): boolean {
    const scratch = weight.scratch;
    const gemm = via === "wgmma"
      ? wgmma !== null && (weight.data.ptr & 15) === 0 && (weight.scales.ptr & 3) === 0
      : accel?.gemmFp8 !== undefined;
    return gemm && scratch !== null && m <= MAX_ROW_BLOCKS && (k & 15) === 0 &&
      scratch.bytes >= X_SCALES_BYTES + m * k;
  }

  /** Index into GEMV_KERNELS, or -1 when the call is not a GEMV's. */
  function gemvIndex(m: number, n: number, k: number, x: DeviceBuffer, w: Fp8Weight): number {
    // `|` reads the low bits through ToInt32, exact for any address below 2^53.
    if (m > GEMV_MAX_M || (k & 15) !== 0 || ((x.ptr | w.data.ptr) & 15) !== 0) return -1;
    return quantizedGemvIndex(m, n, sms);
  }

  /** The GEMV of m <= 16 rows of x at device address `x` into `out`; the caller checked it applies. */
  const gemvAt: GemvAt<Fp8Weight> = (out, x, weight, m, n, k, stream) => {
    const index = quantizedGemvIndex(m, n, sms), rows = quantizedGemvRows(index);
    const split = forcedSplit || quantizedGemvSplit(k, rows);
    launchGemv(
      gemvs[index],
      gemvGridBlocks(n, rows, split),
      out,
      x,
      weight,
      m,
      n,
      k,
      split,
      stream,
    );
  };

  /** One GEMV launch (256 threads a block) over `weight`'s codes and scales. */
  function launchGemv(
    kernel: Launcher,
    blocks: number,
    out: DeviceBuffer | number,
    x: DeviceBuffer | number,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    split: number,
    stream: Stream,
  ): void {
    kernel(blocks, 1, 1, 256, 1, 1, 0, stream, out, x, weight.data, weight.scales, m, n, k, split);
  }

  function dequantizeFp8(
    out: DeviceBuffer,
    weight: Fp8Weight,
    n: number,
    k: number,
    stream: Stream,
  ): void {
    checkFp8Args("dequantizeFp8", out, weight, n, k);
    const vector = (k & 15) === 0 && ((out.ptr | weight.data.ptr) & 15) === 0 ? 1 : 0;
    const blocks = Math.min(n, MAX_ROW_BLOCKS);
    dequantize(blocks, 1, 1, 256, 1, 1, 0, stream, out, weight.data, weight.scales, n, k, vector);
  }

  return {
    gemv(out, x, weight, m, n, k, stream) {
      if (gemvIndex(m, n, k, x, weight) < 0) return false;
      gemvAt(out.ptr, x.ptr, weight, m, n, k, stream);
      return true;
    },

    gemvRows(out, x, weight, m, n, k, stream) {
      if (m <= GEMV_MAX_M || m > GEMV_ROWS_MAX_M) return false;
      if (gemvIndex(GEMV_MAX_M, n, k, x, weight) < 0) return false;
      gemvRowChunks(gemvAt, GEMV_MAX_M, out, x, weight, m, n, k, stream);
      return true;
    },

    gemvSiluMul(out, x, weight, m, n, k, stream) {
      if (siluGemvs === null || gemvIndex(m, 2 * n, k, x, weight) < 0) return false;
      const split = forcedSplit || quantizedGemvSplit(k, 16);
      const blocks = gemvGridBlocks(2 * n, 16, split);
      launchGemv(siluGemvs[m > 8 ? 1 : 0], blocks, out, x, weight, m, n, k, split, stream);
      return true;
    },

    gemvNorm(out, x, weight, m, n, k, res, resOut, gamma, eps, maxBlocks, stream) {
      if (normGemvs === null || m > 8 || gemvIndex(m, n, k, x, weight) < 0) return false;
      const index = quantizedGemvIndex(m, n, sms), rows = quantizedGemvRows(index);
      const split = forcedSplit || quantizedGemvSplit(k, rows);
      const blocks = gemvGridBlocks(n, rows, split);
      if (maxBlocks !== 0 && blocks > maxBlocks) return false;
      normGemvs[index](
        blocks,
        1,
        1,
        256,
        1,
        1,
        m * k * 2,
        stream,
        out,
        x,
        weight.data,
        weight.scales,
        m,
        n,
        k,
        split,
        res ?? 0, // no residual: null addresses, which the kernels test for
        resOut ?? 0,
        gamma,
        eps,
      );
      return true;
    },

    w8a8,

    w8a8Possible,

    w8a8ScratchBytes(m, k) {
      return X_SCALES_BYTES + m * k;
    },

    tuneW8a8(out, x, weight, m, n, k, stream, time) {
      if (!w8a8Possible(m, k, weight, "library")) return false;
      const xq = quantizeX(x, weight, m, k, stream);
      // Then one call on the x just quantized: a refusal at call time must show here, not pass
      // for a fast path in the timings that follow.
      try {
        accel!.tuneFp8?.(out, xq, weight, m, n, k, stream, time);
        accel!.gemmFp8!(out, xq, weight, m, n, k, stream);
        return true;
      } catch (error) {
        return refused(error);
      }
    },

    toScratch(weight, n, k, stream) {
      const scratch = weight.scratch;
      if (scratch === null || scratch.bytes < 2 * n * k) {
        throw new RangeError(
          `linear: an FP8 weight of ${n}×${k} with more than ${GEMV_MAX_M} rows of x needs a ` +
            `bf16 scratch of ${2 * n * k} bytes, but it has ${scratch?.bytes ?? "none"}; size ` +
            "it with fp8ScratchBytes (the weight loader does)",
        );
      }
      dequantizeFp8(scratch, weight, n, k, stream);
      return scratch;
    },

    gemvKernel(m, n, k, x, weight) {
      const index = gemvIndex(m, n, k, x, weight);
      return index < 0 ? null : GEMV_KERNELS[index];
    },

    quantizeFp8(out, weight, n, k, stream) {
      checkFp8Args("quantizeFp8", weight, out, n, k);
      const blocks = Math.min(n, MAX_ROW_BLOCKS);
      quantize(blocks, 1, 1, 256, 1, 1, 0, stream, out.data, out.scales, weight, n, k);
    },

    dequantizeFp8,

    fp8ScratchBytes(n, k) {
      return 2 * n * k;
    },
  };
}
