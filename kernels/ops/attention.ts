/**
 * GPU attention ops: launchers over kernels/src/attention.cu. (Placeholder until the kernels land.)
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import type { AttentionOps } from "../../backends/ops.ts";

/** Loads the attention kernels onto the backend's device and returns its ops. */
export function loadAttentionOps(backend: Backend): Promise<AttentionOps> {
  return Promise.reject(new Error(`the ${backend.kind} attention kernels are not built yet`));
}
