/**
 * Loads the operator set for a backend: the TypeScript reference on the CPU, the generated
 * launchers over kernels/ on CUDA and HIP. Operators are loaded *for* a backend, so the backend
 * layer never imports the operators above it.
 *
 * @module
 */

import type { Backend } from "../backends/backend.ts";
import { cpuOps } from "./cpu/index.ts";
import { loadGpuOps } from "./gpu/index.ts";
import type { ModelOps } from "./ops.ts";

/** The operators for `backend`'s device (kernel modules are loaded onto it for a GPU). */
export async function loadOps(backend: Backend): Promise<ModelOps> {
  return backend.kind === "cpu" ? cpuOps() : await loadGpuOps(backend);
}
