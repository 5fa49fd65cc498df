/**
 * GPU sampling ops: launchers over kernels/src/sampling.cu. (Placeholder until the kernels land.)
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { SamplingOps } from "../../backends/ops.ts";

/** Loads the sampling kernels onto the backend's device and returns its ops. */
export function loadSamplingOps(backend: Backend): Promise<SamplingOps> {
  return Promise.reject(new Error(`the ${backend.kind} sampling kernels are not built yet`));
}
