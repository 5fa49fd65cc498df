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
 * - Everything else: `linear_fp8_dequantize` into the weight's scratch (bf16 [N, K]), then the
 *   bf16 linear over the scratch, whichever kernel or vendor library that picks. This is the
 *   prefill path on every GPU, sm_80 included.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import type { Launcher } from "../../kernels/launcher.ts";
import { launcherWith, loadKernels, programmaticWanted } from "../../kernels/modules.ts";
import { checkFp8Args } from "../checks/linear.ts";
import type { Fp8Weight } from "../linear_weight.ts";
import type { Fp8Ops } from "../ops.ts";

/** The FP8 ops, plus the two halves of `linear` on an FP8 weight, for ops/gpu/linear.ts. */
export interface GpuFp8Ops extends Fp8Ops {
  /** Runs the W8A16 GEMV and returns true, or returns false when the call is not a GEMV's. */
  gemv(
    out: DeviceBuffer,
    x: DeviceBuffer,
    weight: Fp8Weight,
    m: number,
    n: number,
    k: number,
    stream: Stream,
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
/** The most rows the GEMVs take. */
const GEMV_MAX_M = 16;
/** Grid limit of the row-striding kernels. */
const MAX_ROW_BLOCKS = 65535;

/** Loads the FP8 kernels onto `backend`'s device. */
export async function loadFp8Ops(
  backend: Backend,
  options: { readonly programmatic?: boolean } = {},
): Promise<GpuFp8Ops> {
  const kernels = await loadKernels(backend, "linear_fp8");
  const programmatic = programmaticWanted(options.programmatic);
  const gemvs: Launcher[] = GEMV_KERNELS.map((name) =>
    launcherWith(backend, kernels, name, { programmatic }).launch
  );
  const dequantize = kernels.launchers.linear_fp8_dequantize.launch;
  const quantize = kernels.launchers.linear_fp8_quantize.launch;
  const sms = backend.info.multiprocessors;

  /** Index into GEMV_KERNELS, or -1 when the call is not a GEMV's. */
  function gemvIndex(m: number, n: number, k: number, x: DeviceBuffer, w: Fp8Weight): number {
    // `|` reads the low bits through ToInt32, exact for any address below 2^53.
    if (m > GEMV_MAX_M || (k & 15) !== 0 || ((x.ptr | w.data.ptr) & 15) !== 0) return -1;
    return (m > 8 ? 2 : 0) + (Math.ceil(n / 16) >= sms ? 0 : 1);
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
      const index = gemvIndex(m, n, k, x, weight);
      if (index < 0) return false;
      const rows = (index & 1) === 0 ? 16 : 8;
      const steps = Math.ceil(k / (rows === 16 ? 256 : 512));
      const split = steps >= 8 ? 8 : steps >= 4 ? 4 : steps >= 2 ? 2 : 1;
      const blocks = Math.ceil(n / ((8 / split) * rows));
      gemvs[index](
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
        weight.data,
        weight.scales,
        m,
        n,
        k,
        split,
      );
      return true;
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
