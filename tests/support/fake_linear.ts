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

/**
 * The byte sizes of a kernel's parameters, one letter a parameter (p a pointer: 8 bytes; i an
 * int32 and f a float32: 4), as FakeControl.setParamSizes takes them.
 */
export function paramSizes(kinds: string): number[] {
  return [...kinds].map((kind) => kind === "p" ? 8 : 4);
}

/** The arguments the last launch received, read as `kinds` says (the fake set to its sizes). */
export function launchArgs(fake: FakeControl, kinds: string): (bigint | number)[] {
  const launch = fake.lastLaunch();
  const view = new DataView(launch.args.buffer, launch.args.byteOffset);
  let at = 0;
  return [...kinds].map((kind) => {
    const value = kind === "p"
      ? view.getBigUint64(at, true)
      : kind === "f"
      ? view.getFloat32(at, true)
      : view.getInt32(at, true);
    at += kind === "p" ? 8 : 4;
    return value;
  });
}
