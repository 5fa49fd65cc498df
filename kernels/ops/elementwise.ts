/**
 * GPU elementwise ops: launchers over kernels/src/elementwise.cu. (Placeholder until the kernels land.)
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { ElementwiseOps } from "../../backends/ops.ts";

/** Loads the elementwise kernels onto the backend's device and returns its ops. */
export function loadElementwiseOps(backend: Backend): Promise<ElementwiseOps> {
  return Promise.reject(new Error(`the ${backend.kind} elementwise kernels are not built yet`));
}
