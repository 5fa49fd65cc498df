/**
 * The HIP backend: the real runtime (installed, with no AMD GPU) must report the missing device
 * cleanly, and the fake libamdhip64 exercises the rest, HIP's `extra` END marker included.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DriverError, DriverNotFoundError, NoDeviceError } from "../backends/errors.ts";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import { openHip } from "../backends/hip.ts";
import { createLauncher } from "../kernels/launcher.ts";
import type { KernelSignature } from "../kernels/signature.ts";
import { buildFakeDriver, type FakeControl, openFakeControl } from "./fake_driver/fake.ts";
import { HIP_RUNTIME as REAL_RUNTIME, hipRuntime } from "./support/hip_runtime.ts";

const realRuntime = hipRuntime();

/** Runs `body` with `DENALI_LIBHIP` unset, so `openHip()` takes its default library paths. */
function withoutLibHipOverride(body: () => void): void {
  const saved = Deno.env.get("DENALI_LIBHIP");
  Deno.env.delete("DENALI_LIBHIP");
  try {
    body();
  } finally {
    if (saved !== undefined) Deno.env.set("DENALI_LIBHIP", saved);
  }
}

/** The error `fn` throws, checked to be an instance of `type`. */
function errorOf<E extends Error>(type: new (...args: never[]) => E, fn: () => unknown): E {
  let error: unknown = null;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof type, `expected a ${type.name}, got ${error}`);
  return error;
}

Deno.test({
  name: "hip: the real runtime loads and reports that there is no AMD GPU",
  ignore: realRuntime.ignore,
}, () => {
  try {
    Deno.dlopen(REAL_RUNTIME, { hipInit: { parameters: ["u32"], result: "i32" } }).close();
  } catch (error) {
    assert.fail(
      `${REAL_RUNTIME} cannot be loaded (${(error as Error).message}). This test needs the ` +
        "real HIP runtime: install it with `apt-get install libamdhip64-5`, as .ci/run does.",
    );
  }
  withoutLibHipOverride(() => {
    const error = errorOf(NoDeviceError, () => openHip());
    assert.equal(error.name, "NoDeviceError");
    assert.match(error.message, /^no AMD GPU found: the HIP runtime reports hipError\w+/);
    assert.match(error.message, /--backend cpu/);
  });
  // The same through an explicit path.
  const explicit = errorOf(NoDeviceError, () => openHip({ libraryPath: REAL_RUNTIME }));
  assert.match(explicit.message, /no AMD GPU found/);
});

Deno.test("hip: a missing runtime names the AMD HIP runtime and another backend", () => {
  const error = errorOf(
    DriverNotFoundError,
    () => openHip({ libraryPath: "/nonexistent/libamdhip64.so.6" }),
  );
  assert.ok(
    error.message.startsWith("no AMD HIP runtime (/nonexistent/libamdhip64.so.6) found"),
    error.message,
  );
  assert.match(error.message, /--backend cpu/);
  assert.doesNotMatch(error.message, /Could not open library/);

  const old = buildFakeDriver({ hip: true, omitGraphLaunch: true });
  const missing = errorOf(DriverNotFoundError, () => openHip({ libraryPath: old }));
  assert.match(missing.message, /lacks the symbol hipGraphLaunch/);
  assert.match(missing.message, /AMD HIP runtime is too old/);
});

/** Opens the fake HIP build and its control on one path; both are closed after `body`. */
function fakeHip(body: (gpu: GpuBackend, fake: FakeControl, path: string) => void): () => void {
  return () => {
    const path = buildFakeDriver({ hip: true });
    const fake = openFakeControl(path);
    fake.reset();
    let gpu: GpuBackend | null = null;
    try {
      gpu = openHip({ libraryPath: path });
      body(gpu, fake, path);
    } finally {
      gpu?.close();
      fake.reset();
      fake.close();
    }
  };
}

Deno.test(
  "hip fake: device info, including the gfx arch scanned from the properties",
  fakeHip((gpu, fake, path) => {
    assert.equal(gpu.kind, "hip");
    assert.deepEqual(gpu.info, {
      backend: "hip",
      name: "Denali Fake GPU",
      arch: "gfx90a",
      computeCapability: [9, 0],
      multiprocessors: 132,
      totalMemory: 2 ** 30,
      driverVersion: 60200000,
    });
    assert.equal(gpu.launchAbi.launchCallName, "hipModuleLaunchKernel");
    assert.equal(gpu.launchAbi.extraEnd, 3);

    // Without the properties call the arch is unknown rather than wrong.
    fake.failNext("hipGetDeviceProperties", 1);
    const second = openHip({ libraryPath: path });
    assert.equal(second.info.arch, "gfx-unknown");
    second.close();

    fake.setDeviceCount(0);
    const none = errorOf(NoDeviceError, () => openHip({ libraryPath: path }));
    assert.match(none.message, /^no AMD GPU found: the HIP runtime reports hipErrorNoDevice/);
  }),
);

Deno.test(
  "hip fake: memory round trip",
  fakeHip((gpu, fake) => {
    const buffer = gpu.alloc(777);
    assert.equal(fake.bytesAllocated(), 777);
    assert.equal(gpu.memoryInfo().free, 2 ** 30 - 777);
    const src = crypto.getRandomValues(new Uint8Array(777));
    const stream = gpu.createStream();
    gpu.copyToDevice(buffer, src, stream);
    gpu.memset(buffer.slice(700, 7), 0x42, stream);
    const back = new Uint8Array(777);
    gpu.copyToHost(back, buffer, stream);
    stream.synchronize();
    stream.destroy();
    const expected = src.slice();
    expected.fill(0x42, 700, 707);
    assert.deepEqual(back, expected);
    gpu.free(buffer);
    assert.equal(fake.bytesAllocated(), 0);
  }),
);

Deno.test(
  "hip fake: an extra-packed launch ends with HIP's marker 3 and carries exact bytes; occupancy",
  fakeHip((gpu, fake) => {
    const module = gpu.loadModule({ format: "hsaco", bytes: new TextEncoder().encode("hsaco\0") });
    const fn = module.getFunction("rms_norm");
    const signature: KernelSignature = {
      name: "rms_norm",
      params: [
        { name: "out", type: "ptr" },
        { name: "x", type: "ptr" },
        { name: "rows", type: "i32" },
        { name: "eps", type: "f16" },
      ],
    };
    const variants = [{ fn, assumes: {} }];
    const { launch, packing } = createLauncher(gpu.launchAbi, signature, variants, {
      packing: "extra",
    });
    assert.equal(packing, "extra");
    const out = gpu.alloc(512);
    const x = gpu.alloc(512);

    // The fake accepts an extra array only when it ends with 3 (CUDA's 0 is rejected).
    launch(6, 1, 1, 256, 1, 1, 1024, gpu.defaultStream, out, x.slice(64), -7, 0x1400);
    assert.equal(fake.launchCount(), 1);
    const last = fake.lastLaunch();
    assert.equal(last.functionName, "rms_norm");
    assert.deepEqual(last.grid, [6, 1, 1]);
    assert.deepEqual(last.block, [256, 1, 1]);
    assert.equal(last.sharedMem, 1024);
    assert.equal(last.stream, 0n);
    // Offsets 0, 8, 16 and 20: 22 bytes, as the driver wants the kernel's exact parameter size.
    const want = new Uint8Array(22);
    const view = new DataView(want.buffer);
    view.setBigUint64(0, BigInt(out.ptr), true);
    view.setBigUint64(8, BigInt(x.ptr + 64), true);
    view.setInt32(16, -7, true);
    view.setUint16(20, 0x1400, true);
    assert.deepEqual(last.args, want);

    // Ended with CUDA's marker 0 instead, the same launch is rejected.
    const cudaEnded = createLauncher({ ...gpu.launchAbi, extraEnd: 0 }, signature, variants, {
      packing: "extra",
    });
    const rejected = errorOf(
      DriverError,
      () => cudaEnded.launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, out, x, 1, 0),
    );
    assert.equal(rejected.call, "hipModuleLaunchKernel");
    assert.equal(rejected.codeName, "hipErrorInvalidValue");
    assert.equal(fake.launchCount(), 1);

    // A failed launch is a DriverError naming hipModuleLaunchKernel.
    fake.failNext("hipModuleLaunchKernel", 700);
    const failed = errorOf(
      DriverError,
      () => launch(1, 1, 1, 1, 1, 1, 0, gpu.defaultStream, out, x, 1, 0),
    );
    assert.equal(
      failed.message,
      "hipModuleLaunchKernel failed: hipErrorIllegalAddress (700): " +
        "an illegal memory access was encountered",
    );
    assert.equal(fake.launchCount(), 1);

    // Occupancy goes through HIP's own module call, and its failure names it.
    fake.setBlocksPerSm("rms_norm", 5);
    assert.equal(fn.maxBlocksPerSm(256, 0), 5);
    fake.failNext("hipModuleOccupancyMaxActiveBlocksPerMultiprocessor", 1);
    assert.equal(
      errorOf(DriverError, () => fn.maxBlocksPerSm(256, 0)).call,
      "hipModuleOccupancyMaxActiveBlocksPerMultiprocessor",
    );
    gpu.free(out);
    gpu.free(x);
    module.unload();
  }),
);

Deno.test(
  "hip fake: a failed hipMalloc carries HIP's error name and text",
  fakeHip((gpu, fake) => {
    fake.failNext("hipMalloc", 2);
    const oom = errorOf(DriverError, () => gpu.alloc(3 * 2 ** 20));
    assert.equal(oom.backend, "hip");
    assert.equal(oom.call, "hipMalloc");
    assert.equal(oom.code, 2);
    assert.equal(oom.codeName, "hipErrorOutOfMemory");
    assert.equal(oom.driverMessage, "out of memory");
    assert.match(
      oom.message,
      /^hipMalloc failed: hipErrorOutOfMemory \(2\): out of memory\. Asked for 3\.0 MiB with /,
    );

    fake.failNext("memAlloc", 1);
    const invalid = errorOf(DriverError, () => gpu.alloc(16));
    assert.equal(invalid.message, "hipMalloc failed: hipErrorInvalidValue (1): invalid argument");

    // A code HIP has no name for still reads sensibly.
    fake.failNext("hipMalloc", 4242);
    const unknown = errorOf(DriverError, () => gpu.alloc(16));
    assert.equal(unknown.codeName, "hipErrorUnknown");
    assert.equal(unknown.driverMessage, "unknown error");
    assert.equal(fake.bytesAllocated(), 0);
  }),
);
