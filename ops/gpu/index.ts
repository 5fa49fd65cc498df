/**
 * The operator set on a GPU backend (CUDA or HIP): each family's kernels loaded through
 * generated launchers, merged into one ModelOps.
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { ModelOps } from "../ops.ts";
import { loadAttentionOps } from "./attention.ts";
import { loadElementwiseOps } from "./elementwise.ts";
import { loadLinearOps } from "./linear.ts";
import { loadSamplingOps } from "./sampling.ts";

/** Loads every kernel family onto `backend`'s device. */
export async function loadGpuOps(backend: Backend): Promise<ModelOps> {
  const [elementwise, linear, attention, sampling] = await Promise.all([
    loadElementwiseOps(backend),
    loadLinearOps(backend),
    loadAttentionOps(backend),
    loadSamplingOps(backend),
  ]);
  return { ...elementwise, ...linear, ...attention, ...sampling };
}
