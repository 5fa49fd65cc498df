/**
 * The runtime on a real NVIDIA GPU (`deno task test:gpu`, on the device machine): parameter
 * marshalling read back from the device, vector add against the CPU, graph replay, event timing,
 * the benchmarks' read-only kernel against a CPU checksum, and the driver's own errors (bad PTX
 * with its JIT log, out of memory, a bad launch).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, Stream } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import { DriverError, ModuleLoadError } from "../../backends/errors.ts";
import type { ArgumentPacking } from "../../kernels/launcher.ts";
import { launcherWith, type LoadedKernels, loadKernels } from "../../kernels/modules.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

/** Opens the GPU and the runtime_test module once per test, and closes it after. */
function gpuTest(
  name: string,
  body: (gpu: Backend, kernels: LoadedKernels, stream: Stream) => void | Promise<void>,
  packing: ArgumentPacking = "params",
) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const kernels = await loadKernels(gpu, "runtime_test", { packing });
      await body(gpu, kernels, gpu.createStream());
    } finally {
      gpu.close();
    }
  });
}

/** Seeded xorshift, so failures reproduce. */
function randomFloats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 200 - 100;
  }
  return out;
}

gpuTest("gpu: device info is a real CUDA device", (gpu) => {
  assert.equal(gpu.info.backend, "cuda");
  assert.match(gpu.info.arch, /^sm_\d+$/);
  assert.ok(gpu.info.computeCapability[0] >= 8, `needs sm_80+, got ${gpu.info.arch}`);
  const { free, total } = gpu.memoryInfo();
  assert.ok(free > 0 && free <= total && total === gpu.info.totalMemory);
  console.log(`device: ${gpu.info.name} ${gpu.info.arch}, ${gpu.info.multiprocessors} SMs`);
});

for (const packing of ["params", "extra"] as ArgumentPacking[]) {
  gpuTest(`gpu (${packing}): every parameter type reaches the kernel bit for bit`, (gpu, k, s) => {
    const out = gpu.alloc(32);
    gpu.memset(out, 0xa5);
    const cases = [
      [-123456, 4000000000, -(2 ** 40) - 5, 2 ** 52 + 7, 1.5, 0x3c00, 0x3f80],
      [-1, 0, -(2n ** 63n), 2n ** 64n - 1n, -0.0625, 0xffff, 0x0001],
    ] as const;
    for (const [i32, u32, i64, u64, f32, f16, bf16] of cases) {
      k.launchers.echo_params.launch(
        1,
        1,
        1,
        32,
        1,
        1,
        0,
        s,
        out,
        i32,
        u32,
        i64,
        u64,
        f32,
        f16,
        bf16,
      );
      s.synchronize();
      const got = new DataView(new ArrayBuffer(32));
      gpu.copyToHost(got, out);
      assert.equal(got.getInt32(0, true), i32);
      assert.equal(got.getUint32(4, true), u32);
      assert.equal(got.getBigInt64(8, true), BigInt(i64));
      assert.equal(got.getBigUint64(16, true), BigInt(u64));
      assert.equal(got.getFloat32(24, true), f32);
      assert.equal(got.getUint16(28, true), f16);
      assert.equal(got.getUint16(30, true), bf16);
    }
  }, packing);

  gpuTest(`gpu (${packing}): vec_add matches the CPU, generic and specialised`, (gpu, k, s) => {
    // 4096 with aligned pointers takes the float4 variant; 1000 and a misaligned view do not.
    for (const [n, offset] of [[4096, 0], [1000, 0], [4096, 4]]) {
      const a = randomFloats(n, 1 + n), b = randomFloats(n, 7 + n);
      const bytes = 4 * n + 16;
      const [da, db, dc] = [gpu.alloc(bytes), gpu.alloc(bytes), gpu.alloc(bytes)];
      const [va, vb, vc] = [da, db, dc].map((d) => d.slice(offset, 4 * n));
      gpu.copyToDevice(va, a);
      gpu.copyToDevice(vb, b);
      gpu.memset(vc, 0xff); // NaN everywhere: an unwritten element cannot pass
      k.launchers.vec_add_f32.launch(8, 1, 1, 128, 1, 1, 0, s, va, vb, vc, n);
      s.synchronize();
      const c = new Float32Array(n);
      gpu.copyToHost(c, vc);
      for (let i = 0; i < n; i++) {
        assert.equal(c[i], Math.fround(a[i] + b[i]), `n=${n} offset=${offset} at ${i}`);
      }
      [da, db, dc].forEach((d) => gpu.free(d));
    }
  }, packing);
}

gpuTest("gpu: a captured graph replays its launches", (gpu, k, s) => {
  const n = 3000;
  const x0 = randomFloats(n, 42).map((v) => v / 100);
  const x = gpu.alloc(4 * n);
  gpu.copyToDevice(x, x0);
  const scaleAdd = k.launchers.scale_add_f32.launch;
  gpu.beginCapture(s);
  for (let i = 0; i < 3; i++) scaleAdd(4, 1, 1, 256, 1, 1, 0, s, x, 1.25, 0.5, n);
  const graph = gpu.endCapture(s);
  // Capture records work without running it.
  const untouched = new Float32Array(n);
  gpu.copyToHost(untouched, x);
  assert.deepEqual(untouched, x0);
  graph.launch(s);
  graph.launch(s);
  s.synchronize();
  const got = new Float32Array(n);
  gpu.copyToHost(got, x);
  for (let i = 0; i < n; i++) {
    let want = x0[i];
    for (let step = 0; step < 6; step++) want = Math.fround(Math.fround(want * 1.25) + 0.5);
    // The device may fuse the multiply-add (one rounding); allow a few ulps.
    assert.ok(Math.abs(got[i] - want) <= 4e-6 * Math.max(1, Math.abs(want)), `at ${i}`);
  }
  graph.destroy();
});

gpuTest("gpu: events time a kernel of known length", (gpu, k, s) => {
  const [start, stop] = [gpu.createEvent(), gpu.createEvent()];
  start.record(s);
  k.launchers.spin_ns.launch(1, 1, 1, 1, 1, 1, 0, s, 2_000_000);
  stop.record(s);
  stop.synchronize();
  const ms = stop.elapsedMsSince(start);
  assert.ok(ms >= 1.99 && ms < 50, `a 2 ms spin measured ${ms} ms`);
  start.destroy();
  stop.destroy();
});

gpuTest("gpu: stream_read (the benchmarks' read-only kernel) reads every byte", (gpu, k, s) => {
  // A partial last block, and a launch programmatic where the device allows, as measure.ts runs it.
  const chunks = 3 * 1024 + 37, perBlock = 1024, blocks = Math.ceil(chunks / perBlock);
  const words = new Uint32Array(chunks * 4);
  const floats = randomFloats(words.length, 11);
  words.set(new Uint32Array(floats.buffer));
  const src = gpu.alloc(words.byteLength), out = gpu.alloc(4 * blocks);
  gpu.copyToDevice(src, new Uint8Array(words.buffer));
  const { launch } = launcherWith(gpu, k, "stream_read", { programmatic: true });
  launch(blocks, 1, 1, 256, 1, 1, 0, s, out, src, perBlock, chunks);
  s.synchronize();
  const got = new Uint32Array(blocks);
  gpu.copyToHost(new Uint8Array(got.buffer), out);
  for (let b = 0; b < blocks; b++) {
    let bits = 0;
    for (let w = b * perBlock * 4; w < Math.min((b + 1) * perBlock, chunks) * 4; w++) {
      bits ^= words[w];
    }
    assert.equal(got[b], (bits & 0x3fffffff) >>> 0, `block ${b}`);
  }
  gpu.free(src);
  gpu.free(out);
});

gpuTest("gpu: bad PTX fails with the JIT log", (gpu) => {
  const bad = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry broken() {\n" +
    "  this is not ptx;\n}\n";
  assert.throws(
    () => gpu.loadModule({ format: "ptx", text: bad }),
    (e: Error) => {
      assert.ok(e instanceof ModuleLoadError, `got ${e.name}: ${e.message}`);
      assert.equal(e.call, "cuModuleLoadDataEx");
      assert.match(e.codeName, /^CUDA_ERROR_/);
      assert.match(e.jitLog, /line \d+/, `JIT log: ${e.jitLog}`);
      return true;
    },
  );
});

gpuTest("gpu: driver errors carry the call and the driver's text", (gpu, k, s) => {
  assert.throws(
    () => gpu.alloc(2 ** 50),
    (e: Error) =>
      e instanceof DriverError && e.call === "cuMemAlloc_v2" &&
      e.codeName === "CUDA_ERROR_OUT_OF_MEMORY" && /Asked for 1073741824\.0 MiB/.test(e.message),
  );
  // 2048 threads per block exceeds every NVIDIA GPU's limit.
  const x = gpu.alloc(64);
  assert.throws(
    () => k.launchers.scale_add_f32.launch(1, 1, 1, 2048, 1, 1, 0, s, x, 1, 0, 16),
    (e: Error) =>
      e instanceof DriverError && e.call === "cuLaunchKernel" &&
      e.codeName === "CUDA_ERROR_INVALID_VALUE",
  );
  // The context survives a rejected launch.
  k.launchers.scale_add_f32.launch(1, 1, 1, 16, 1, 1, 0, s, x, 1, 0, 16);
  s.synchronize();
});
