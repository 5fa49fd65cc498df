/**
 * The Llama operator set on a GPU backend (CUDA or HIP): each family's kernels loaded through
 * generated launchers, merged into one LlamaOps.
 *
 * @module
 */

import type { Backend } from "../backends/backend.ts";
import type { LlamaOps } from "../backends/ops.ts";
import { loadAttentionOps } from "./ops/attention.ts";
import { loadElementwiseOps } from "./ops/elementwise.ts";
import { loadLinearOps } from "./ops/linear.ts";
import { loadSamplingOps } from "./ops/sampling.ts";

/** Loads every kernel family onto `backend`'s device. */
export async function loadGpuOps(backend: Backend): Promise<LlamaOps> {
  const [elementwise, linear, attention, sampling] = await Promise.all([
    loadElementwiseOps(backend),
    loadLinearOps(backend),
    loadAttentionOps(backend),
    loadSamplingOps(backend),
  ]);
  return { ...elementwise, ...linear, ...attention, ...sampling };
}
