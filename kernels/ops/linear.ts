/**
 * GPU linear ops: launchers over kernels/src/linear.cu. (Placeholder until the kernels land.)
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { LinearOps } from "../../backends/ops.ts";

/** Loads the linear kernels onto the backend's device and returns its ops. */
export function loadLinearOps(backend: Backend): Promise<LinearOps> {
  return Promise.reject(new Error(`the ${backend.kind} linear kernels are not built yet`));
}
