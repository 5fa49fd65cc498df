/**
 * The linear operators on a CUDA or HIP backend over the fake driver, for dispatch tests that
 * check which kernel a shape launches and with what arguments, without a GPU.
 *
 * @module
 */

import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { type GpuLinearOps, type LinearOptions, loadLinearOps } from "../../ops/gpu/linear.ts";
import type { FakeControl, FakeDriverOptions } from "../fake_driver/fake.ts";
import { withFakeGpu } from "./fake_gpu.ts";

/**
 * Runs `body` with the linear operators of a backend on a freshly reset fake driver (HIP's when
 * `hip`, built with `driver`'s options) that reports `computeCapability`; closes the backend
 * and resets the fake after. `linear` are loadLinearOps's options.
 */
export async function withFakeLinearOps(
  hip: boolean,
  computeCapability: [number, number],
  body: (gpu: GpuBackend, ops: GpuLinearOps, fake: FakeControl) => void | Promise<void>,
  driver: Omit<FakeDriverOptions, "hip"> = {},
  linear: LinearOptions = {},
): Promise<void> {
  await withFakeGpu(
    { ...driver, hip },
    (fake) => fake.setComputeCapability(...computeCapability),
    async (gpu, fake) => body(gpu, await loadLinearOps(gpu, linear), fake),
  );
}
