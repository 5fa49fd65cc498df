/**
 * Tests of the fake GPU driver itself, through raw `Deno.dlopen` of the real symbol tables: the
 * backend tests trust the fake's byte-level behaviour, so it is pinned down here first.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CUDA_SYMBOLS } from "../backends/cuda_ffi.ts";
import { HIP_SYMBOLS } from "../backends/hip_ffi.ts";
import {
  buildFakeDriver,
  type FakeControl,
  type FakeDriverOptions,
  openFakeControl,
} from "./fake_driver/fake.ts";

type Cuda = Deno.DynamicLibrary<typeof CUDA_SYMBOLS>["symbols"];
type Hip = Deno.DynamicLibrary<typeof HIP_SYMBOLS>["symbols"];

/** Opens the CUDA build and its control on one path, resets it, and closes both afterwards. */
function withCuda(
  body: (cu: Cuda, fake: FakeControl) => void,
  options: FakeDriverOptions = {},
): () => void {
  return () => {
    const path = buildFakeDriver(options);
    const lib = Deno.dlopen(path, CUDA_SYMBOLS);
    const fake = openFakeControl(path);
    fake.reset();
    try {
      body(lib.symbols, fake);
    } finally {
      fake.close();
      lib.close();
    }
  };
}

/** The HIP counterpart of {@link withCuda}. */
function withHip(body: (hip: Hip, fake: FakeControl) => void): () => void {
  return () => {
    const path = buildFakeDriver({ hip: true });
    const lib = Deno.dlopen(path, HIP_SYMBOLS);
    const fake = openFakeControl(path);
    fake.reset();
    try {
      body(lib.symbols, fake);
    } finally {
      fake.close();
      lib.close();
    }
  };
}

/** The handle a driver call wrote into a one-slot out-parameter. */
function handle(out: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(out[0]);
}

/** The address of a typed array's bytes, as a pointer-sized integer for void** arrays. */
function addr(buf: ArrayBufferView<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** A NUL-terminated copy of `text`, as C expects names and images. */
function cstr(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}

/** Loads a module and gets a function from it (same calls in both builds). */
function kernel(
  d: Cuda | Hip,
  name: string,
): { fn: Deno.PointerValue; module: Deno.PointerValue } {
  const mod = new BigUint64Array(1);
  assert.equal(d.moduleLoadDataEx(mod, cstr(".version 8.0"), 0, null, null), 0);
  const fn = new BigUint64Array(1);
  assert.equal(d.moduleGetFunction(fn, handle(mod), cstr(name)), 0);
  return { fn: handle(fn), module: handle(mod) };
}

/** A launch `extra` array: BUFFER_POINTER, BUFFER_SIZE, then the given END marker. */
function extraArray(
  args: Uint8Array<ArrayBuffer>,
  size: BigUint64Array<ArrayBuffer>,
  end: bigint,
) {
  return new BigUint64Array([1n, addr(args), 2n, addr(size), end]);
}

Deno.test(
  "cuda fake: device queries",
  withCuda((cu, fake) => {
    assert.equal(cu.init(0), 0);
    const n = new Int32Array(1);
    assert.equal(cu.deviceGetCount(n), 0);
    assert.equal(n[0], 1);
    const name = new Uint8Array(64);
    assert.equal(cu.deviceGetName(name, name.length, 0), 0);
    assert.equal(new TextDecoder().decode(name.subarray(0, name.indexOf(0))), "Denali Fake GPU");
    const v = new Int32Array(1);
    for (const [attr, want] of [[75, 9], [76, 0], [16, 132]]) {
      assert.equal(cu.deviceGetAttribute(v, attr, 0), 0);
      assert.equal(v[0], want);
    }
    assert.equal(cu.deviceGetAttribute(v, 75, 1), 101);
    const free = new BigUint64Array(1), total = new BigUint64Array(1);
    assert.equal(cu.memGetInfo(free, total), 0);
    assert.equal(total[0], 1n << 30n);

    fake.setDeviceCount(0);
    assert.equal(cu.init(0), 100);
    assert.equal(cu.deviceGetCount(n), 0);
    assert.equal(n[0], 0);
  }),
);

Deno.test(
  "cuda fake: alloc, copy and free round-trip bytes",
  withCuda((cu, fake) => {
    const dptr = new BigUint64Array(1);
    assert.equal(cu.memAlloc(dptr, 1000n), 0);
    const d = dptr[0];
    assert.equal(d % 256n, 0n);
    assert.equal(fake.bytesAllocated(), 1000);

    const src = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    assert.equal(cu.memcpyHtoDAsync(d, src, BigInt(src.length), null), 0);
    const back = new Uint8Array(1000);
    assert.equal(cu.memcpyDtoHAsync(back, d, BigInt(back.length), null), 0);
    assert.deepEqual(back, src);

    assert.equal(cu.memsetD8Async(d + 10n, 0xab, 5n, null), 0);
    assert.equal(cu.memcpyDtoDAsync(d + 500n, d + 8n, 10n, null), 0);
    assert.equal(cu.memcpyDtoHAsync(back, d, BigInt(back.length), null), 0);
    assert.deepEqual([...back.subarray(500, 510)], [
      src[8],
      src[9],
      171,
      171,
      171,
      171,
      171,
      ...src.subarray(15, 18),
    ]);

    // Out of bounds and unknown pointers are rejected rather than corrupting the heap.
    assert.equal(cu.memcpyDtoHAsync(back, d + 1n, 1000n, null), 1);
    assert.equal(cu.memFree(d + 256n), 1);

    const free = new BigUint64Array(1), total = new BigUint64Array(1);
    assert.equal(cu.memGetInfo(free, total), 0);
    assert.equal(free[0], (1n << 30n) - 1000n);
    assert.equal(cu.memAlloc(dptr, free[0] + 1n), 2);

    assert.equal(cu.memFree(d), 0);
    assert.equal(cu.memFree(d), 1);
    assert.equal(fake.bytesAllocated(), 0);
  }),
);

Deno.test(
  "cuda fake: extra-array launch copies exact bytes, END is 0",
  withCuda((cu, fake) => {
    const { fn, module } = kernel(cu, "rms_norm_f16");
    const stream = new BigUint64Array(1);
    assert.equal(cu.streamCreate(stream, 1), 0);
    const args = Uint8Array.from({ length: 40 }, (_, i) => i + 1);
    const size = new BigUint64Array([40n]);

    const extraArgs = extraArray(args, size, 0n);
    const extra = Deno.UnsafePointer.of(extraArgs);
    assert.equal(cu.launchKernel(fn, 3, 2, 1, 128, 1, 1, 1024, handle(stream), null, extra), 0);
    assert.equal(fake.launchCount(), 1);
    const last = fake.lastLaunch();
    assert.deepEqual(last.grid, [3, 2, 1]);
    assert.deepEqual(last.block, [128, 1, 1]);
    assert.equal(last.sharedMem, 1024);
    assert.equal(last.stream, stream[0]);
    assert.equal(last.functionName, "rms_norm_f16");
    assert.deepEqual(last.args, args);

    // HIP's END marker (3) is not CUDA's: the walk must reject it, and keep the last record.
    const hipEnd = extraArray(args, size, 3n);
    assert.equal(
      cu.launchKernel(fn, 1, 1, 1, 1, 1, 1, 0, null, null, Deno.UnsafePointer.of(hipEnd)),
      1,
    );
    assert.equal(fake.launchCount(), 1);
    assert.deepEqual(fake.lastLaunch().args, args);

    // Exactly one of kernelParams and extra; no zero dimension.
    assert.equal(cu.launchKernel(fn, 1, 1, 1, 1, 1, 1, 0, null, null, null), 1);
    assert.equal(cu.launchKernel(fn, 1, 1, 1, 1, 1, 1, 0, null, extra, extra), 1);
    assert.equal(cu.launchKernel(fn, 1, 0, 1, 1, 1, 1, 0, null, null, extra), 1);
    assert.equal(cu.launchKernel(fn, 1, 1, 1, 1, 1, 0, 0, null, null, extra), 1);
    assert.equal(fake.launchCount(), 1);

    assert.equal(cu.streamDestroy(handle(stream)), 0);
    assert.equal(cu.moduleUnload(module), 0);
  }),
);

Deno.test(
  "hip fake: extra-array launch copies exact bytes, END is 3",
  withHip((hip, fake) => {
    assert.equal(hip.init(0), 0);
    assert.equal(hip.hipSetDevice(0), 0);
    const { fn, module } = kernel(hip, "gemm_q4");
    const args = Uint8Array.from({ length: 24 }, (_, i) => 200 - i);
    const size = new BigUint64Array([24n]);
    const extra = extraArray(args, size, 3n);
    assert.equal(
      hip.launchKernel(fn, 8, 1, 1, 64, 4, 1, 0, null, null, Deno.UnsafePointer.of(extra)),
      0,
    );
    const last = fake.lastLaunch();
    assert.deepEqual(last.grid, [8, 1, 1]);
    assert.deepEqual(last.block, [64, 4, 1]);
    assert.equal(last.stream, 0n);
    assert.equal(last.functionName, "gemm_q4");
    assert.deepEqual(last.args, args);

    // CUDA's END marker (0) is not HIP's.
    const cudaEnd = extraArray(args, size, 0n);
    assert.equal(
      hip.launchKernel(fn, 1, 1, 1, 1, 1, 1, 0, null, null, Deno.UnsafePointer.of(cudaEnd)),
      1,
    );
    assert.equal(fake.launchCount(), 1);
    assert.equal(hip.moduleUnload(module), 0);
  }),
);

Deno.test(
  "hip fake: device queries, properties and error text",
  withHip((hip, fake) => {
    const v = new Int32Array(1);
    for (const [attr, want] of [[23, 9], [61, 0], [63, 132]]) {
      assert.equal(hip.deviceGetAttribute(v, attr, 0), 0);
      assert.equal(v[0], want);
    }
    const props = new Uint8Array(1024);
    assert.equal(hip.hipGetDeviceProperties!(props, 0), 0);
    assert.ok(new TextDecoder().decode(props).includes("gfx90a"));

    const text = (p: Deno.PointerValue) => Deno.UnsafePointerView.getCString(p!);
    assert.equal(text(hip.hipGetErrorName(1)), "hipErrorInvalidValue");
    assert.equal(text(hip.hipGetErrorString(1)), "invalid argument");
    assert.equal(text(hip.hipGetErrorName(100)), "hipErrorNoDevice");
    assert.equal(text(hip.hipGetErrorName(12345)), "hipErrorUnknown");

    const dptr = new BigUint64Array(1);
    assert.equal(hip.memAlloc(dptr, 64n), 0);
    assert.equal(fake.bytesAllocated(), 64);
    assert.equal(hip.memFree(dptr[0]), 0);

    fake.setDeviceCount(0);
    assert.equal(hip.init(0), 100);
  }),
);

Deno.test(
  "cuda fake: kernelParams are packed at size-aligned offsets",
  withCuda((cu, fake) => {
    const { fn, module } = kernel(cu, "packed");
    fake.setParamSizes([8, 4, 2, 8, 4]);
    const p0 = new BigUint64Array([0x0102030405060708n]);
    const p1 = new Uint32Array([0xaabbccdd]);
    const p2 = new Uint16Array([0x1122]);
    const p3 = new BigUint64Array([0xfffefdfcfbfaf9f8n]);
    const p4 = new Float32Array([1.5]);
    const params = new BigUint64Array([addr(p0), addr(p1), addr(p2), addr(p3), addr(p4)]);
    assert.equal(
      cu.launchKernel(fn, 1, 1, 1, 32, 1, 1, 0, null, Deno.UnsafePointer.of(params), null),
      0,
    );

    // Offsets 0, 8, 12, then 14 rounds up to 16 for the 8-byte pointer, then 24: 28 bytes.
    const want = new Uint8Array(28);
    const view = new DataView(want.buffer);
    view.setBigUint64(0, p0[0], true);
    view.setUint32(8, p1[0], true);
    view.setUint16(12, p2[0], true);
    view.setBigUint64(16, p3[0], true);
    view.setFloat32(24, 1.5, true);
    assert.deepEqual(fake.lastLaunch().args, want);
    assert.equal(cu.moduleUnload(module), 0);
  }),
);

Deno.test(
  "cuda fake: failNext fails exactly one call",
  withCuda((cu, fake) => {
    const dptr = new BigUint64Array(1);
    fake.failNext("cuMemAlloc_v2", 2);
    assert.equal(cu.memAlloc(dptr, 16n), 2);
    assert.equal(fake.bytesAllocated(), 0);
    assert.equal(cu.memAlloc(dptr, 16n), 0);
    assert.equal(cu.memFree(dptr[0]), 0);

    // Roles work too, and other calls are untouched.
    fake.failNext("init", 700);
    const n = new Int32Array(1);
    assert.equal(cu.deviceGetCount(n), 0);
    assert.equal(cu.init(0), 700);
    assert.equal(cu.init(0), 0);
  }),
);

Deno.test(
  "cuda fake: error names and strings",
  withCuda((cu) => {
    const out = new BigUint64Array(1);
    const text = () => Deno.UnsafePointerView.getCString(handle(out)!);
    for (
      const [code, name, message] of [
        [0, "CUDA_SUCCESS", "no error"],
        [1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"],
        [2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"],
        [100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"],
        [218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"],
        [500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"],
        [700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"],
      ] as const
    ) {
      assert.equal(cu.cuGetErrorName(code, out), 0);
      assert.equal(text(), name);
      assert.equal(cu.cuGetErrorString(code, out), 0);
      assert.equal(text(), message);
    }
    out[0] = 42n;
    assert.equal(cu.cuGetErrorName(12345, out), 1);
    assert.equal(out[0], 42n);
  }),
);

Deno.test(
  "cuda fake: bad PTX fills the JIT log, missing kernels are not found",
  withCuda((cu) => {
    const mod = new BigUint64Array(1);
    const log = new Uint8Array(16);
    const options = new Int32Array([5, 6]);
    const values = new BigUint64Array([addr(log), BigInt(log.length)]);
    assert.equal(cu.moduleLoadDataEx(mod, cstr("FAKE_BAD_PTX"), 2, options, values), 218);
    // The log is capped at the buffer size, NUL included.
    assert.equal(new TextDecoder().decode(log.subarray(0, 15)), "fake jit: ptxas");
    assert.equal(log[15], 0);

    const { fn, module } = kernel(cu, "present");
    assert.ok(fn);
    const out = new BigUint64Array(1);
    assert.equal(cu.moduleGetFunction(out, module, cstr("missing_kernel")), 500);
    assert.equal(cu.moduleUnload(module), 0);
  }),
);

Deno.test(
  "cuda fake: capture, instantiate and replay a graph",
  withCuda((cu, fake) => {
    const { fn, module } = kernel(cu, "step");
    const s = new BigUint64Array(1);
    assert.equal(cu.streamCreate(s, 1), 0);
    const stream = handle(s);
    const args = new Uint8Array([9, 8, 7, 6]);
    const size = new BigUint64Array([4n]);
    const extraArgs = extraArray(args, size, 0n);
    const extra = Deno.UnsafePointer.of(extraArgs);

    assert.equal(cu.streamBeginCapture(stream, 0), 0);
    for (let i = 0; i < 3; i++) {
      assert.equal(cu.launchKernel(fn, i + 1, 1, 1, 1, 1, 1, 0, stream, null, extra), 0);
    }
    assert.equal(fake.launchCount(), 0);
    assert.deepEqual(fake.lastCapturedLaunch().grid, [3, 1, 1]);
    assert.deepEqual(fake.lastCapturedLaunch().args, args);

    const graph = new BigUint64Array(1), exec = new BigUint64Array(1);
    assert.equal(cu.streamEndCapture(stream, graph), 0);
    assert.equal(cu.graphInstantiateWithFlags(exec, handle(graph), 0n), 0);
    assert.equal(cu.graphLaunch(handle(exec), stream), 0);
    assert.equal(cu.graphLaunch(handle(exec), stream), 0);
    assert.equal(fake.graphNodesReplayed(), 6);

    assert.equal(cu.streamBeginCapture(stream, 0), 0);
    assert.equal(cu.graphLaunch(handle(exec), stream), 1);
    fake.reset(); // abandons the capture

    assert.equal(cu.graphExecDestroy(handle(exec)), 0);
    assert.equal(cu.graphDestroy(handle(graph)), 0);
    assert.equal(cu.streamDestroy(stream), 0);
    assert.equal(cu.moduleUnload(module), 0);
  }),
);

Deno.test(
  "cuda fake: event elapsed time follows the fake clock",
  withCuda((cu, fake) => {
    const a = new BigUint64Array(1), b = new BigUint64Array(1);
    assert.equal(cu.eventCreate(a, 0), 0);
    assert.equal(cu.eventCreate(b, 0), 0);
    fake.freezeClock(true);
    assert.equal(cu.eventRecord(handle(a), null), 0);
    fake.advanceClockNs(2_500_000);
    assert.equal(cu.eventRecord(handle(b), null), 0);
    const ms = new Float32Array(1);
    assert.equal(cu.eventElapsedTime(ms, handle(a), handle(b)), 0);
    assert.equal(ms[0], 2.5);
    assert.equal(cu.eventDestroy(handle(a)), 0);
    assert.equal(cu.eventDestroy(handle(b)), 0);
  }),
);

Deno.test("fake without graph launch lacks the symbol", () => {
  const path = buildFakeDriver({ omitGraphLaunch: true });
  assert.throws(() => Deno.dlopen(path, CUDA_SYMBOLS), /cuGraphLaunch/);
  const hipPath = buildFakeDriver({ hip: true, omitGraphLaunch: true });
  assert.throws(() => Deno.dlopen(hipPath, HIP_SYMBOLS), /hipGraphLaunch/);
  // Everything else is still there.
  const { graphLaunch: _, ...rest } = CUDA_SYMBOLS;
  Deno.dlopen(path, rest).close();
});

/**
 * A CUlaunchConfig followed by its attributes, written field by field at the offsets of cuda.h
 * (checked against the real header: config 56 bytes with hStream at 32, attrs at 40, numAttrs at
 * 48; attribute 72 bytes with the value union at 8), independently of kernels/launcher.ts.
 */
function launchConfig(
  grid: number[],
  block: number[],
  shared: number,
  stream: bigint,
  attributes: [id: number, value: number][],
): { config: Deno.PointerValue; keep: ArrayBuffer } {
  const buffer = new ArrayBuffer(56 + 72 * attributes.length);
  const dv = new DataView(buffer);
  [...grid, ...block, shared].forEach((v, i) => dv.setUint32(4 * i, v, true));
  dv.setBigUint64(32, stream, true);
  const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
  dv.setBigUint64(40, attributes.length ? base + 56n : 0n, true);
  dv.setUint32(48, attributes.length, true);
  attributes.forEach(([id, value], i) => {
    dv.setUint32(56 + 72 * i, id, true);
    dv.setInt32(56 + 72 * i + 8, value, true);
  });
  return { config: Deno.UnsafePointer.of(buffer), keep: buffer };
}

Deno.test("cuda fake: cuLaunchKernelEx exists only in the launchEx build", () => {
  const plain = Deno.dlopen(buildFakeDriver(), CUDA_SYMBOLS);
  const ex = Deno.dlopen(buildFakeDriver({ launchEx: true }), CUDA_SYMBOLS);
  try {
    assert.equal(plain.symbols.launchKernelEx, null);
    assert.equal(typeof ex.symbols.launchKernelEx, "function");
  } finally {
    plain.close();
    ex.close();
  }
  assert.throws(() => buildFakeDriver({ hip: true, launchEx: true }), /CUDA-only/);
});

Deno.test(
  "cuda fake: cuLaunchKernelEx reads grid, block, stream and attributes where cuda.h puts them",
  withCuda((cu, fake) => {
    const launchEx = cu.launchKernelEx!;
    const { fn, module } = kernel(cu, "gemv");
    const s = new BigUint64Array(1);
    assert.equal(cu.streamCreate(s, 1), 0);
    const args = Uint8Array.from({ length: 36 }, (_, i) => 3 * i + 1);
    const size = new BigUint64Array([36n]);
    const extraArgs = extraArray(args, size, 0n);
    const extra = Deno.UnsafePointer.of(extraArgs);

    // Programmatic stream serialization allowed: id 6, value 1, after an ignored entry.
    let c = launchConfig([5, 4, 3], [64, 2, 1], 2048, s[0], [[0, 7], [6, 1]]);
    assert.equal(launchEx(c.config, fn, null, extra), 0);
    let last = fake.lastLaunch();
    assert.deepEqual(last.grid, [5, 4, 3]);
    assert.deepEqual(last.block, [64, 2, 1]);
    assert.equal(last.sharedMem, 2048);
    assert.equal(last.stream, s[0]);
    assert.equal(last.functionName, "gemv");
    assert.deepEqual(last.args, args);
    assert.deepEqual([last.launchEx, last.programmatic], [true, true]);
    assert.equal(fake.launchCount(), 1);

    // Value 0, or no attributes: a plain launch through the Ex call.
    for (const attributes of [[[6, 0]], []] as [number, number][][]) {
      c = launchConfig([1, 1, 1], [32, 1, 1], 0, 0n, attributes);
      assert.equal(launchEx(c.config, fn, null, extra), 0);
      last = fake.lastLaunch();
      assert.deepEqual([last.launchEx, last.programmatic, last.stream], [true, false, 0n]);
    }
    // cuLaunchKernel records neither flag.
    assert.equal(cu.launchKernel(fn, 1, 1, 1, 1, 1, 1, 0, null, null, extra), 0);
    assert.deepEqual([fake.lastLaunch().launchEx, fake.lastLaunch().programmatic], [false, false]);
    assert.equal(fake.launchCount(), 4);

    // What a misplaced field would look like is refused: an unknown attribute, a value that is
    // no boolean, attributes without their array, a stream that is no stream, no config.
    const bad: [ReturnType<typeof launchConfig>, number][] = [
      [launchConfig([1, 1, 1], [1, 1, 1], 0, 0n, [[99, 1]]), 1],
      [launchConfig([1, 1, 1], [1, 1, 1], 0, 0n, [[6, 256]]), 1],
      // Another handle kind where the stream belongs (the fake dereferences handles).
      [launchConfig([1, 1, 1], [1, 1, 1], 0, BigInt(Deno.UnsafePointer.value(fn)), [[6, 1]]), 400],
      [launchConfig([1, 0, 1], [1, 1, 1], 0, 0n, [[6, 1]]), 1],
    ];
    for (const [config, code] of bad) assert.equal(launchEx(config.config, fn, null, extra), code);
    const noArray = launchConfig([1, 1, 1], [1, 1, 1], 0, 0n, []);
    new DataView(noArray.keep).setUint32(48, 1, true);
    assert.equal(launchEx(noArray.config, fn, null, extra), 1);
    assert.equal(launchEx(null, fn, null, extra), 1);
    fake.failNext("launchKernelEx", 700);
    c = launchConfig([1, 1, 1], [1, 1, 1], 0, 0n, [[6, 1]]);
    assert.equal(launchEx(c.config, fn, null, extra), 700);
    assert.equal(fake.launchCount(), 4);

    // Captured into a graph with its flags.
    const stream = handle(s);
    assert.equal(cu.streamBeginCapture(stream, 0), 0);
    c = launchConfig([9, 1, 1], [128, 1, 1], 0, s[0], [[6, 1]]);
    assert.equal(launchEx(c.config, fn, null, extra), 0);
    assert.equal(fake.launchCount(), 4);
    const captured = fake.lastCapturedLaunch();
    assert.deepEqual([captured.grid[0], captured.launchEx, captured.programmatic], [9, true, true]);
    const graph = new BigUint64Array(1);
    assert.equal(cu.streamEndCapture(stream, graph), 0);
    assert.equal(cu.graphDestroy(handle(graph)), 0);
    assert.equal(cu.streamDestroy(stream), 0);
    assert.equal(cu.moduleUnload(module), 0);
  }, { launchEx: true }),
);

Deno.test(
  "cuda fake: compute capability and driver version are settable, and reset restores them",
  withCuda((cu, fake) => {
    const v = new Int32Array(1);
    fake.setComputeCapability(8, 6);
    fake.setDriverVersion(12020);
    assert.equal(cu.deviceGetAttribute(v, 75, 0), 0);
    assert.equal(v[0], 8);
    assert.equal(cu.deviceGetAttribute(v, 76, 0), 0);
    assert.equal(v[0], 6);
    assert.equal(cu.driverGetVersion(v), 0);
    assert.equal(v[0], 12020);
    fake.reset();
    assert.equal(cu.deviceGetAttribute(v, 75, 0), 0);
    assert.equal(v[0], 9);
    assert.equal(cu.driverGetVersion(v), 0);
    assert.equal(v[0], 12040);
  }),
);
