/**
 * The harness of the quantized-linear GPU tests: each test gets a fresh CUDA backend and its
 * linear operators, and the backend is closed whatever the test does. Gated by DENALI_GPU_TESTS.
 */

import type { Backend } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import { type GpuLinearOps, type LinearOptions, loadLinearOps } from "../../ops/gpu/linear.ts";

/** True unless DENALI_GPU_TESTS is set: GPU tests are ignored on machines without one. */
export const GPU_TESTS_IGNORED = !Deno.env.get("DENALI_GPU_TESTS");

/** Registers a test that runs `body` on a fresh CUDA backend with its linear operators. */
export function gpuLinearTest(
  name: string,
  body: (gpu: Backend, ops: GpuLinearOps) => void | Promise<void>,
  options: LinearOptions = {},
): void {
  Deno.test(
    { name, ignore: GPU_TESTS_IGNORED, sanitizeResources: false, sanitizeOps: false },
    async () => {
      const gpu = openCuda();
      try {
        await body(gpu, await loadLinearOps(gpu, options));
      } finally {
        gpu.close();
      }
    },
  );
}
