/**
 * A CUDA or HIP backend over a freshly reset fake driver, for tests that check launches without
 * a GPU: the fake is built with `driver`'s options, `setup` configures it before the backend
 * opens, and both are closed (the fake reset) whatever `body` does.
 *
 * @module
 */

import { openCuda } from "../../backends/cuda.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { openHip } from "../../backends/hip.ts";
import {
  buildFakeDriver,
  type FakeControl,
  type FakeDriverOptions,
  openFakeControl,
} from "../fake_driver/fake.ts";

/** Runs `body` on a backend over the fake driver (HIP's where `driver.hip`), then closes both. */
export async function withFakeGpu<T>(
  driver: FakeDriverOptions,
  setup: (fake: FakeControl) => void,
  body: (gpu: GpuBackend, fake: FakeControl) => T | Promise<T>,
): Promise<T> {
  const libraryPath = buildFakeDriver(driver);
  const fake = openFakeControl(libraryPath);
  fake.reset();
  setup(fake);
  const gpu = driver.hip ? openHip({ libraryPath }) : openCuda({ libraryPath });
  try {
    return await body(gpu, fake);
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
}
