/**
 * The CUDA backend end to end through the fake libcuda: device info, memory, errors, streams,
 * events, modules, launches, graphs, and how a missing driver, symbol or device is reported.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DeviceBuffer } from "../backends/backend.ts";
import { CpuBackend } from "../backends/cpu.ts";
import { openCuda } from "../backends/cuda.ts";
import {
  DriverError,
  DriverNotFoundError,
  LaunchArgumentError,
  ModuleLoadError,
  NoDeviceError,
} from "../backends/errors.ts";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import { createLauncher } from "../kernels/launcher.ts";
import type { KernelSignature } from "../kernels/signature.ts";
import { buildFakeDriver, type FakeControl, openFakeControl } from "./fake_driver/fake.ts";

const GIB = 2 ** 30;
const JIT_LOG = "fake jit: ptxas syntax error at line 3";

/**
 * A test body run on `openCuda` over the fake, with the fake's control opened first on the same
 * path (so both share one library state) and reset before and after.
 */
function cuda(body: (gpu: GpuBackend, fake: FakeControl) => void): () => void {
  return () => {
    const libraryPath = buildFakeDriver();
    const fake = openFakeControl(libraryPath);
    try {
      fake.reset();
      const gpu = openCuda({ libraryPath });
      try {
        body(gpu, fake);
      } finally {
        gpu.close();
      }
    } finally {
      fake.reset();
      fake.close();
    }
  };
}

/** What `fn` threw; fails the test if it returned. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected an error, but the call returned");
}

/** Asserts that `fn` throws a DriverError for `call` with code `code` and the fake's text. */
function assertDriverError(
  fn: () => unknown,
  call: string,
  code: number,
  codeName: string,
  driverMessage: string,
): DriverError {
  const error = thrown(fn);
  assert.ok(error instanceof DriverError, `expected a DriverError, got ${error}`);
  assert.equal(error.name, error instanceof ModuleLoadError ? "ModuleLoadError" : "DriverError");
  assert.equal(error.backend, "cuda");
  assert.equal(error.call, call);
  assert.equal(error.code, code);
  assert.equal(error.codeName, codeName);
  assert.equal(error.driverMessage, driverMessage);
  assert.ok(
    error.message.startsWith(`${call} failed: ${codeName} (${code}): ${driverMessage}`),
    error.message,
  );
  return error;
}

function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** Reads a whole device buffer back to the host. */
function readBack(gpu: GpuBackend, buffer: DeviceBuffer): Uint8Array {
  const out = new Uint8Array(buffer.bytes);
  gpu.copyToHost(out, buffer);
  return out;
}

Deno.test(
  "cuda: device info comes from the driver",
  cuda((gpu) => {
    assert.equal(gpu.kind, "cuda");
    assert.deepEqual(gpu.info, {
      backend: "cuda",
      name: "Denali Fake GPU",
      arch: "sm_90",
      computeCapability: [9, 0],
      multiprocessors: 132,
      totalMemory: GIB,
      driverVersion: 12040,
    });
    assert.equal(gpu.defaultStream.native, null);
    assert.equal(gpu.launchAbi.launchCallName, "cuLaunchKernel");
    assert.equal(gpu.launchAbi.extraEnd, 0);
    assert.deepEqual(gpu.memoryInfo(), { free: GIB, total: GIB });
  }),
);

Deno.test(
  "cuda: bytes round-trip with and without a stream",
  cuda((gpu, fake) => {
    const buffer = gpu.alloc(4099);
    assert.equal(fake.bytesAllocated(), 4099);
    const src = randomBytes(4099);
    gpu.copyToDevice(buffer, src);
    assert.deepEqual(readBack(gpu, buffer), src);

    const stream = gpu.createStream();
    assert.notEqual(stream.native, null);
    const again = randomBytes(4099);
    gpu.copyToDevice(buffer, again, stream);
    const back = new Uint8Array(4099);
    gpu.copyToHost(back, buffer, stream);
    stream.synchronize();
    assert.deepEqual(back, again);
    stream.destroy();

    // Any typed array is copied as its bytes, including a view into the middle of a buffer.
    const floats = new Float32Array([0, 1.5, -2.25, 3e9, 7]).subarray(1, 4);
    gpu.copyToDevice(buffer, floats);
    const floatsBack = new Float32Array(3);
    gpu.copyToHost(floatsBack, buffer);
    assert.deepEqual([...floatsBack], [1.5, -2.25, 3e9]);

    gpu.free(buffer);
    assert.equal(fake.bytesAllocated(), 0);
  }),
);

Deno.test(
  "cuda: slices, memset and device copies land at the right offsets",
  cuda((gpu) => {
    const a = gpu.alloc(256);
    const b = gpu.alloc(64);
    gpu.memset(a, 0);
    gpu.memset(b, 0x5a);

    const middle = a.slice(100, 50);
    assert.equal(middle.ptr, a.ptr + 100);
    assert.equal(middle.base, a);
    assert.equal(middle.slice(10).base, a);
    const data = randomBytes(50);
    gpu.copyToDevice(middle, data);
    let host = readBack(gpu, a);
    assert.deepEqual(host.subarray(100, 150), data);
    assert.ok(host.subarray(0, 100).every((x) => x === 0));
    assert.ok(host.subarray(150).every((x) => x === 0));

    // Reading a slice starts at its offset.
    const part = new Uint8Array(20);
    gpu.copyToHost(part, middle.slice(30));
    assert.deepEqual(part, data.subarray(30, 50));

    gpu.memset(a.slice(200, 8), 0xee);
    // copyDevice copies the smaller length: all 64 bytes of b into a 100-byte slice.
    gpu.copyDevice(a.slice(0, 100), b);
    host = readBack(gpu, a);
    assert.ok(host.subarray(0, 64).every((x) => x === 0x5a));
    assert.ok(host.subarray(64, 100).every((x) => x === 0));
    assert.deepEqual(host.subarray(100, 150), data);
    assert.deepEqual([...host.subarray(199, 209)], [0, ...new Array(8).fill(0xee), 0]);

    // And into a smaller destination, only as much as fits (on a stream this time).
    const stream = gpu.createStream();
    gpu.copyDevice(b.slice(0, 16), a.slice(100), stream);
    gpu.memset(b.slice(60), 1, stream);
    stream.synchronize();
    stream.destroy();
    const bHost = readBack(gpu, b);
    assert.deepEqual(bHost.subarray(0, 16), data.subarray(0, 16));
    assert.ok(bHost.subarray(16, 60).every((x) => x === 0x5a));
    assert.deepEqual([...bHost.subarray(60)], [1, 1, 1, 1]);

    assert.throws(() => gpu.memset(a, 256), RangeError);
    assert.throws(() => gpu.memset(a, -1), RangeError);
    gpu.free(a);
    gpu.free(b);
  }),
);

Deno.test(
  "cuda: memoryInfo tracks allocations",
  cuda((gpu, fake) => {
    const before = gpu.memoryInfo();
    const size = 3 * 2 ** 20 + 17;
    const buffer = gpu.alloc(size);
    const during = gpu.memoryInfo();
    assert.equal(during.free, before.free - size);
    assert.equal(during.total, GIB);
    assert.equal(fake.bytesAllocated(), size);
    gpu.free(buffer);
    assert.deepEqual(gpu.memoryInfo(), before);
  }),
);

Deno.test(
  "cuda: misuse of alloc, free and copies is rejected before the driver sees it",
  cuda((gpu, fake) => {
    for (const bad of [0, -1, 1.5, NaN, 2 ** 53]) {
      assert.throws(() => gpu.alloc(bad), RangeError, `alloc(${bad})`);
    }
    assert.throws(() => gpu.allocHost(0), RangeError);
    assert.equal(fake.bytesAllocated(), 0);

    const buffer = gpu.alloc(64);
    assert.throws(() => gpu.free(buffer.slice(8)), {
      name: "TypeError",
      message: /not a slice/,
    });
    assert.throws(() => gpu.free(new DeviceBuffer(buffer.ptr + 8, 8)), {
      name: "TypeError",
      message: new RegExp(`0x${(buffer.ptr + 8).toString(16)} is not a live allocation`),
    });
    assert.throws(() => gpu.copyToDevice(buffer, new Uint8Array(65)), {
      name: "RangeError",
      message: /65 bytes but the device buffer only 64/,
    });
    assert.throws(() => gpu.copyToHost(new Uint8Array(33), buffer.slice(32)), RangeError);
    assert.throws(() => buffer.slice(60, 8), RangeError);
    assert.throws(() => buffer.slice(-1), RangeError);

    gpu.free(buffer);
    assert.equal(fake.bytesAllocated(), 0);
    assert.throws(() => gpu.free(buffer), { name: "TypeError", message: /not a live allocation/ });
  }),
);

Deno.test(
  "cuda: out of memory names the call, the driver's text and the size asked for",
  cuda((gpu, fake) => {
    const held = gpu.alloc(GIB / 4);
    const error = assertDriverError(
      () => gpu.alloc(GIB),
      "cuMemAlloc_v2",
      2,
      "CUDA_ERROR_OUT_OF_MEMORY",
      "out of memory",
    );
    assert.match(error.message, /Asked for 1024\.0 MiB with 768\.0 MiB free of 1024\.0 MiB/);
    assert.match(error.message, /KV-cache fraction/);
    // The failed allocation took nothing.
    assert.equal(fake.bytesAllocated(), GIB / 4);
    assert.equal(gpu.memoryInfo().free, GIB - GIB / 4);

    // The state query failing too must not mask the out-of-memory error.
    fake.failNext("cuMemAlloc_v2", 2);
    fake.failNext("cuMemGetInfo_v2", 999);
    const masked = assertDriverError(
      () => gpu.alloc(5 * 2 ** 20),
      "cuMemAlloc_v2",
      2,
      "CUDA_ERROR_OUT_OF_MEMORY",
      "out of memory",
    );
    assert.match(masked.message, /Asked for 5\.0 MiB; free memory/);

    // Other allocation failures get no memory hint.
    fake.failNext("memAlloc", 1);
    const invalid = assertDriverError(
      () => gpu.alloc(16),
      "cuMemAlloc_v2",
      1,
      "CUDA_ERROR_INVALID_VALUE",
      "invalid argument",
    );
    assert.equal(
      invalid.message,
      "cuMemAlloc_v2 failed: CUDA_ERROR_INVALID_VALUE (1): invalid argument",
    );
    gpu.free(held);
  }),
);

Deno.test(
  "cuda: injected failures carry the call name and the driver's error name and text",
  cuda((gpu, fake) => {
    const buffer = gpu.alloc(32);
    const event = gpu.createEvent();
    const cases: [string, number, string, string, () => unknown][] = [
      ["cuStreamCreate", 999, "CUDA_ERROR_UNKNOWN", "unknown error", () => gpu.createStream()],
      [
        "cuMemcpyHtoDAsync_v2",
        700,
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "an illegal memory access was encountered",
        () => gpu.copyToDevice(buffer, new Uint8Array(32)),
      ],
      [
        "cuEventRecord",
        400,
        "CUDA_ERROR_INVALID_HANDLE",
        "invalid resource handle",
        () => event.record(gpu.defaultStream),
      ],
      [
        "cuStreamSynchronize",
        700,
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "an illegal memory access was encountered",
        () => gpu.memset(buffer, 1),
      ],
      [
        "cuCtxSynchronize",
        3,
        "CUDA_ERROR_NOT_INITIALIZED",
        "initialization error",
        () => gpu.synchronize(),
      ],
      [
        "cuMemFree_v2",
        1,
        "CUDA_ERROR_INVALID_VALUE",
        "invalid argument",
        () => gpu.free(gpu.alloc(8)),
      ],
    ];
    for (const [call, code, codeName, text, run] of cases) {
      fake.failNext(call, code);
      const error = assertDriverError(run, call, code, codeName, text);
      assert.equal(error.message, `${call} failed: ${codeName} (${code}): ${text}`);
    }

    // A code the driver has no name for still produces a readable error.
    fake.failNext("cuCtxSynchronize", 12345);
    assertDriverError(
      () => gpu.synchronize(),
      "cuCtxSynchronize",
      12345,
      "unknown CUresult",
      "the driver has no text for this code",
    );

    // Each injection fails exactly one call; the backend keeps working afterwards.
    const src = randomBytes(32);
    gpu.copyToDevice(buffer, src);
    assert.deepEqual(readBack(gpu, buffer), src);
    event.record(gpu.defaultStream);
    event.destroy();
    gpu.free(buffer);
  }),
);

Deno.test(
  "cuda: pinned host memory is usable and freeing it twice is harmless",
  cuda((gpu, fake) => {
    const pinned = gpu.allocHost(1 << 16);
    assert.equal(pinned.bytes.length, 1 << 16);
    assert.equal(fake.bytesAllocated(), 0, "pinned memory is not device memory");
    pinned.bytes.set(randomBytes(1 << 16));
    const expected = pinned.bytes.slice();

    const device = gpu.alloc(1 << 16);
    const stream = gpu.createStream();
    gpu.copyToDevice(device, pinned.bytes, stream);
    pinned.bytes.fill(0);
    gpu.copyToHost(pinned.bytes, device, stream);
    stream.synchronize();
    assert.deepEqual(pinned.bytes, expected);
    stream.destroy();
    gpu.free(device);

    pinned.free();
    // A second cuMemFreeHost of the same pointer would fail with CUDA_ERROR_INVALID_VALUE.
    pinned.free();

    fake.failNext("cuMemHostAlloc", 2);
    assertDriverError(
      () => gpu.allocHost(64),
      "cuMemHostAlloc",
      2,
      "CUDA_ERROR_OUT_OF_MEMORY",
      "out of memory",
    );
  }),
);

Deno.test(
  "cuda: events time the fake clock, and the default stream cannot be destroyed",
  cuda((gpu, fake) => {
    const stream = gpu.createStream();
    const start = gpu.createEvent();
    const end = gpu.createEvent();
    fake.freezeClock(true);
    start.record(stream);
    fake.advanceClockNs(2_500_000);
    end.record(stream);
    end.synchronize();
    assert.equal(end.query(), true);
    // Not ready yet is false, not an error; any other code is a DriverError.
    fake.failNext("cuEventQuery", 600);
    assert.equal(end.query(), false);
    fake.failNext("cuEventQuery", 400);
    assertDriverError(
      () => end.query(),
      "cuEventQuery",
      400,
      "CUDA_ERROR_INVALID_HANDLE",
      "invalid resource handle",
    );
    assert.equal(end.elapsedMsSince(start), 2.5);
    assert.equal(start.elapsedMsSince(end), -2.5);

    // An event that was never recorded has no time.
    const unrecorded = gpu.createEvent();
    assertDriverError(
      () => unrecorded.elapsedMsSince(start),
      "cuEventElapsedTime",
      400,
      "CUDA_ERROR_INVALID_HANDLE",
      "invalid resource handle",
    );
    const cpu = new CpuBackend();
    assert.throws(() => end.elapsedMsSince(cpu.createEvent()), TypeError);
    for (const event of [start, end, unrecorded]) event.destroy();

    assert.throws(() => gpu.defaultStream.destroy(), {
      name: "TypeError",
      message: /default stream cannot be destroyed/,
    });
    gpu.defaultStream.synchronize();
    stream.destroy();
  }),
);

Deno.test(
  "cuda: a bad module carries the JIT log, a missing kernel names cuModuleGetFunction; occupancy",
  cuda((gpu, fake) => {
    const bad = assertDriverError(
      () => gpu.loadModule({ format: "ptx", text: ".version 8.0\nFAKE_BAD_PTX\n" }),
      "cuModuleLoadDataEx",
      218,
      "CUDA_ERROR_INVALID_PTX",
      "a PTX JIT compilation failed",
    );
    assert.ok(bad instanceof ModuleLoadError);
    assert.equal(bad.jitLog, JIT_LOG);
    assert.ok(bad.message.endsWith(`\nJIT log:\n${JIT_LOG}`), bad.message);

    // A failure that writes no log says so rather than printing an empty section.
    fake.failNext("cuModuleLoadDataEx", 200);
    const empty = thrown(() => gpu.loadModule({ format: "ptx", text: ".version 8.0" }));
    assert.ok(empty instanceof ModuleLoadError);
    assert.equal(empty.jitLog, "");
    assert.match(empty.message, /CUDA_ERROR_INVALID_IMAGE .*\(the JIT log is empty\)$/);

    const module = gpu.loadModule({ format: "ptx", text: ".version 8.0" });
    const fn = module.getFunction("scale");
    assert.equal(fn.name, "scale");
    assert.notEqual(fn.native, null);
    assertDriverError(
      () => module.getFunction("missing_kernel"),
      "cuModuleGetFunction",
      500,
      "CUDA_ERROR_NOT_FOUND",
      "named symbol not found",
    );
    assertDriverError(
      () => fn.setMaxDynamicSharedMemory(300_000),
      "cuFuncSetAttribute",
      1,
      "CUDA_ERROR_INVALID_VALUE",
      "invalid argument",
    );
    // Occupancy: what the driver says (the fake: 2, or what a test set), 0 past the function's
    // dynamic shared limit, and a driver failure as a typed error naming the call.
    assert.equal(fn.maxBlocksPerSm(256, 0), 2);
    fake.setBlocksPerSm("scale", 3);
    assert.equal(fn.maxBlocksPerSm(256, 0), 3);
    assert.equal(fn.maxBlocksPerSm(256, 100_000), 0);
    fn.setMaxDynamicSharedMemory(100_000);
    assert.equal(fn.maxBlocksPerSm(256, 100_000), 3);
    assertDriverError(
      () => fn.maxBlocksPerSm(2048, 0),
      "cuOccupancyMaxActiveBlocksPerMultiprocessor",
      1,
      "CUDA_ERROR_INVALID_VALUE",
      "invalid argument",
    );
    module.unload();
  }),
);

const SCALE: KernelSignature = {
  name: "scale",
  params: [
    { name: "x", type: "ptr" },
    { name: "n", type: "u32" },
    { name: "alpha", type: "f32" },
  ],
};

/** The bytes `scale(x, n, alpha)` packs to: offsets 0, 8 and 12. */
function scaleArgs(x: number, n: number, alpha: number): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(x), true);
  view.setUint32(8, n, true);
  view.setFloat32(12, alpha, true);
  return bytes;
}

Deno.test(
  "cuda: generated launches reach cuLaunchKernel with exact bytes",
  cuda((gpu, fake) => {
    const module = gpu.loadModule({ format: "ptx", text: ".version 8.0" });
    const fn = module.getFunction("scale");
    const { launch } = createLauncher(gpu.launchAbi, SCALE, [{ fn, assumes: {} }], {
      checks: "deep",
    });
    fake.setParamSizes([8, 4, 4]);
    const x = gpu.alloc(1024);
    const stream = gpu.createStream();

    launch(4, 2, 1, 128, 1, 1, 0, stream, x.slice(256), 192, -0.75);
    assert.equal(fake.launchCount(), 1);
    const last = fake.lastLaunch();
    assert.deepEqual(last.grid, [4, 2, 1]);
    assert.deepEqual(last.block, [128, 1, 1]);
    assert.equal(last.functionName, "scale");
    assert.equal(last.stream, BigInt(Deno.UnsafePointer.value(stream.native)));
    assert.deepEqual(last.args, scaleArgs(x.ptr + 256, 192, -0.75));

    // The deep check asks the backend which pointers are live.
    assert.throws(
      () => launch(1, 1, 1, 1, 1, 1, 0, stream, x.ptr + 4096, 1, 1),
      LaunchArgumentError,
    );
    assert.equal(gpu.launchAbi.isDevicePointer(x.ptr + 1023), true);

    // More dynamic shared memory than the default needs the attribute first.
    assertDriverError(
      () => launch(1, 1, 1, 32, 1, 1, 100_000, stream, x, 1, 1),
      "cuLaunchKernel",
      1,
      "CUDA_ERROR_INVALID_VALUE",
      "invalid argument",
    );
    fn.setMaxDynamicSharedMemory(100_000);
    launch(1, 1, 1, 32, 1, 1, 100_000, stream, x, 1, 1);
    assert.equal(fake.launchCount(), 2);
    assert.equal(fake.lastLaunch().sharedMem, 100_000);

    stream.destroy();
    gpu.free(x);
    assert.equal(gpu.launchAbi.isDevicePointer(x.ptr), false);
    module.unload();
  }),
);

Deno.test(
  "cuda: a captured graph replays its nodes without executing at capture time",
  cuda((gpu, fake) => {
    const module = gpu.loadModule({ format: "ptx", text: ".version 8.0" });
    const fn = module.getFunction("scale");
    const { launch } = createLauncher(gpu.launchAbi, SCALE, [{ fn, assumes: {} }]);
    fake.setParamSizes([8, 4, 4]);
    const x = gpu.alloc(64);
    const stream = gpu.createStream();

    launch(1, 1, 1, 64, 1, 1, 0, stream, x, 64, 1);
    assert.equal(fake.launchCount(), 1);

    gpu.beginCapture(stream);
    for (let i = 1; i <= 3; i++) launch(i, 1, 1, 64, 1, 1, 0, stream, x, 64 * i, 2);
    assert.equal(fake.launchCount(), 1, "captured launches must not execute");
    assert.deepEqual(fake.lastCapturedLaunch().args, scaleArgs(x.ptr, 192, 2));
    // Synchronising a capturing stream is illegal, and the error says which call.
    assertDriverError(
      () => stream.synchronize(),
      "cuStreamSynchronize",
      401,
      "CUDA_ERROR_ILLEGAL_STATE",
      "the operation cannot be performed in the present state",
    );
    const graph = gpu.endCapture(stream);
    assert.equal(fake.graphNodesReplayed(), 0);

    graph.launch(stream);
    graph.launch(stream);
    stream.synchronize();
    assert.equal(fake.graphNodesReplayed(), 2 * 3);
    assert.equal(fake.launchCount(), 1);
    graph.destroy();

    // The default (legacy) stream cannot be captured.
    assertDriverError(
      () => gpu.beginCapture(gpu.defaultStream),
      "cuStreamBeginCapture_v2",
      1,
      "CUDA_ERROR_INVALID_VALUE",
      "invalid argument",
    );
    assertDriverError(
      () => gpu.endCapture(stream),
      "cuStreamEndCapture",
      401,
      "CUDA_ERROR_ILLEGAL_STATE",
      "the operation cannot be performed in the present state",
    );
    stream.destroy();
    gpu.free(x);
    module.unload();
  }),
);

Deno.test("cuda: a missing libcuda says which backend to use instead", () => {
  const error = thrown(() => openCuda({ libraryPath: "/nonexistent/libcuda.so.1" }));
  assert.ok(error instanceof DriverNotFoundError, `got ${error}`);
  assert.equal(error.name, "DriverNotFoundError");
  assert.ok(error.message.startsWith("no NVIDIA driver (/nonexistent/libcuda.so.1) found"));
  assert.match(error.message, /--backend cpu/);
  assert.doesNotMatch(error.message, /Could not open library/);
  assert.match(error.message, /cannot open shared object file/);
});

Deno.test("cuda: a driver without cuGraphLaunch is reported as too old", () => {
  const libraryPath = buildFakeDriver({ omitGraphLaunch: true });
  const error = thrown(() => openCuda({ libraryPath }));
  assert.ok(error instanceof DriverNotFoundError, `got ${error}`);
  assert.match(error.message, /lacks the symbol cuGraphLaunch/);
  assert.match(error.message, /NVIDIA driver is too old/);
  assert.match(error.message, /--backend cpu/);
});

Deno.test("cuda: a driver that sees no GPU, or the wrong ordinal, is reported as such", () => {
  const libraryPath = buildFakeDriver();
  const fake = openFakeControl(libraryPath);
  try {
    fake.reset();
    fake.setDeviceCount(0);
    const none = thrown(() => openCuda({ libraryPath }));
    assert.ok(none instanceof NoDeviceError, `got ${none}`);
    assert.equal(none.name, "NoDeviceError");
    assert.match(none.message, /^no NVIDIA GPU found: cuInit reports no device/);
    assert.match(none.message, /--backend cpu/);
    // A driver whose cuInit succeeds but that counts no devices is reported the same way.
    fake.failNext("cuInit", 0);
    const zero = thrown(() => openCuda({ libraryPath }));
    assert.ok(zero instanceof NoDeviceError, `got ${zero}`);
    assert.match(zero.message, /^no NVIDIA GPU found\. Or pick another backend: --backend cpu/);

    fake.reset();
    assert.throws(() => openCuda({ libraryPath, device: 1 }), {
      name: "RangeError",
      message: "CUDA device 1 does not exist: there are 1 (0..0)",
    });
    fake.failNext("cuInit", 999);
    const init = thrown(() => openCuda({ libraryPath }));
    assert.ok(init instanceof DriverError, `got ${init}`);
    assert.equal(init.message, "cuInit failed: CUDA_ERROR_UNKNOWN (999): unknown error");

    // The failed opens left the library usable.
    const gpu = openCuda({ libraryPath });
    assert.equal(gpu.info.name, "Denali Fake GPU");
    gpu.close();
    gpu.close();
  } finally {
    fake.reset();
    fake.close();
  }
});
