/**
 * 4-bit (AWQ/GPTQ) weights on a GPU: launchers over kernels/src/linear_awq.cu.
 *
 * Kernel choice for `linear` on an {@link AwqWeight}:
 * - M <= 4 with x and the codes 16-byte aligned: the W4A16 GEMV `linear_awq_gemv_t4`; 256
 *   threads, 8 output rows per block, grid ceil(N / 8).
 * - Everything else: `linear_awq_dequantize` into the weight's scratch (bf16 [N, K]), then the
 *   bf16 linear over the scratch, whichever kernel or vendor library that picks.
 *
 * Why 4: the GEMV works on CUDA cores, so its cost grows with M, while dequantize + GEMM costs
 * one bf16 weight write and read plus a GEMM whose time hardly moves up to M = 16. On an H100
 * (bench/results/2026-12-05-s7-awq-kernels-h100.md) a 16-row GEMV kernel took 3.1x the bf16
 * GEMV at M = 8 and 5x at M = 16, while the dequantize + GEMM path cost about 2.4x (its
 * dequantize time, measured at M = 256, plus the bf16 GEMV at M = 8), so that kernel is gone.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { checkAwqArgs } from "../checks/linear.ts";
import type { AwqWeight } from "../linear_weight.ts";
import type { AwqOps } from "../ops.ts";

/** The 4-bit ops, plus the two halves of `linear` on a 4-bit weight, for ops/gpu/linear.ts. */
export interface GpuAwqOps extends AwqOps {
  /** Runs the W4A16 GEMV and returns true, or returns false when the call is not a GEMV's. */
  gemv(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: AwqWeight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
  ): boolean;
  /** Dequantizes `weight` into its scratch and returns the bf16 [n, k] view of it. */
  toScratch(weight: AwqWeight, n: number, k: number, stream: Stream): DeviceBuffer;
}

/** The most rows of x the GEMV takes (AWQ_MAX_M in the kernel). */
export const AWQ_GEMV_MAX_M = 4;
/** Output rows per GEMV block (AWQ_ROWS in the kernel). */
const GEMV_ROWS = 8;
/** Grid limit of the row-striding kernel. */
const MAX_ROW_BLOCKS = 65535;

/**
 * Loads the 4-bit weight kernels onto `backend`'s device. The GEMV reads x, scales and zeros and
 * writes out only after griddepcontrol.wait, so it may launch programmatically (`programmatic`,
 * as the other GEMVs: on where the backend supports it unless DENALI_PDL=0); the dequantize
 * kernel may not, since it overwrites a scratch the GEMM before it may still read.
 */
export async function loadAwqOps(
  backend: Backend,
  options: { readonly programmatic?: boolean } = {},
): Promise<GpuAwqOps> {
  const kernels = await loadKernels(backend, "linear_awq");
  const programmatic = programmaticWanted(options.programmatic);
  const gemvT4 = launcherWith(backend, kernels, "linear_awq_gemv_t4", { programmatic }).launch;
  const dequantize = kernels.launchers.linear_awq_dequantize.launch;

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
      if (m > AWQ_GEMV_MAX_M || ((x.ptr | weight.codes.ptr) & 15) !== 0) return false;
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

    toScratch(weight, n, k, stream) {
      const scratch = weight.scratch;
      if (scratch === null || scratch.bytes < 2 * n * k) {
        throw new RangeError(
          `linear: a 4-bit weight of ${n}×${k} with more than ${AWQ_GEMV_MAX_M} rows of x ` +
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
