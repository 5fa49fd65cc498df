/**
 * Choosing a backend by name or with `auto`, and the CPU backend it falls back to.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { BackendKind } from "../backends/backend.ts";
import { CpuBackend } from "../backends/cpu.ts";
import { GpuBackend } from "../backends/gpu_backend.ts";
import { AUTO_ORDER, type BackendChoice, openBackend } from "../backends/select.ts";
import { buildFakeDriver } from "./fake_driver/fake.ts";
import { withEnv } from "./support/env.ts";
import { hipRuntime } from "./support/hip_runtime.ts";

const realHip = hipRuntime();

/** Opens `auto`, collecting every backend it passed over and why. */
function openAuto(): { kind: BackendKind; name: string; skipped: [BackendKind, string][] } {
  const skipped: [BackendKind, string][] = [];
  const backend = openBackend("auto", { onSkip: (kind, reason) => skipped.push([kind, reason]) });
  const { kind, info } = backend;
  backend.close();
  return { kind, name: info.name, skipped };
}

Deno.test("select: cpu by name is the CPU backend", () => {
  const backend = openBackend("cpu");
  assert.ok(backend instanceof CpuBackend);
  assert.equal(backend.kind, "cpu");
  assert.equal(backend.launchAbi, null);
  assert.equal(backend.info.arch, "cpu");
  assert.deepEqual(backend.info.computeCapability, [0, 0]);
  assert.equal(backend.info.multiprocessors, navigator.hardwareConcurrency);
  assert.equal(backend.info.totalMemory, Deno.systemMemoryInfo().total);
  backend.close();
});

Deno.test({
  name: "select: auto without a GPU skips cuda and hip, saying why, and opens the CPU",
  ignore: realHip.ignore,
}, () => {
  // A libcuda path that cannot exist makes the cuda step fail the same way on any machine.
  withEnv({ DENALI_LIBCUDA: "/nonexistent/libcuda.so.1", DENALI_LIBHIP: undefined }, () => {
    const { kind, skipped } = openAuto();
    assert.equal(kind, "cpu");
    assert.deepEqual(skipped.map(([k]) => k), ["cuda", "hip"]);
    const [[, cudaWhy], [, hipWhy]] = skipped;
    assert.match(cudaWhy, /^no NVIDIA driver \(\/nonexistent\/libcuda\.so\.1\) found/);
    assert.match(cudaWhy, /--backend cpu/);
    // The real HIP runtime is installed (see hip_backend_test.ts), and there is no AMD GPU.
    assert.match(hipWhy, /^no AMD GPU found/);
  });
});

Deno.test("select: auto as configured skips exactly the backends before the one it opens", () => {
  const { kind, skipped } = openAuto();
  assert.deepEqual(
    skipped.map(([k]) => k),
    AUTO_ORDER.slice(0, AUTO_ORDER.indexOf(kind)),
  );
  for (const [k, reason] of skipped) assert.ok(reason.length > 0, `no reason given for ${k}`);
});

Deno.test("select: auto picks cuda when DENALI_LIBCUDA finds a driver with a GPU", () => {
  withEnv({ DENALI_LIBCUDA: buildFakeDriver() }, () => {
    const { kind, name, skipped } = openAuto();
    assert.equal(kind, "cuda");
    assert.equal(name, "Denali Fake GPU");
    assert.deepEqual(skipped, []);

    // Named choices honour the environment and the device option too.
    const cuda = openBackend("cuda");
    assert.ok(cuda instanceof GpuBackend);
    assert.equal(cuda.info.arch, "sm_90");
    cuda.close();
    assert.throws(() => openBackend("cuda", { device: 3 }), {
      name: "RangeError",
      message: /CUDA device 3 does not exist/,
    });
  });
  withEnv({ DENALI_LIBHIP: buildFakeDriver({ hip: true }) }, () => {
    const hip = openBackend("hip");
    assert.equal(hip.kind, "hip");
    assert.equal(hip.info.arch, "gfx90a");
    hip.close();
  });
});

Deno.test("select: an unknown backend name lists the choices", () => {
  for (const name of ["toString", "constructor", "metal", "CUDA", ""]) {
    assert.throws(() => openBackend(name as BackendChoice), {
      name: "TypeError",
      message: `unknown backend '${name}'; use auto, cuda, hip, cpu`,
    });
  }
});

Deno.test("cpu: memory operations round-trip through slices", () => {
  const cpu = new CpuBackend();
  const a = cpu.alloc(128);
  const b = cpu.alloc(32);
  assert.equal(a.host?.length, 128);
  cpu.memset(a, 7);
  const data = crypto.getRandomValues(new Uint8Array(40));
  const middle = a.slice(50, 40);
  assert.equal(middle.ptr, a.ptr + 50);
  cpu.copyToDevice(middle, data);

  const back = new Uint8Array(128);
  cpu.copyToHost(back, a);
  assert.deepEqual(back.subarray(50, 90), data);
  assert.ok(back.subarray(0, 50).every((x) => x === 7));
  assert.ok(back.subarray(90).every((x) => x === 7));

  // copyDevice copies the shorter length; copyToHost reads from the slice's start.
  cpu.copyDevice(b, middle.slice(8));
  const bBack = new Uint8Array(32);
  cpu.copyToHost(bBack, b);
  assert.deepEqual(bBack, data.subarray(8, 40));
  const floats = new Float32Array(2);
  cpu.copyToDevice(b, new Float32Array([1.25, -3]));
  cpu.copyToHost(floats, b.slice(0, 8));
  assert.deepEqual([...floats], [1.25, -3]);

  assert.throws(() => cpu.copyToDevice(b, new Uint8Array(33)), RangeError);
  assert.throws(() => cpu.copyToHost(new Uint8Array(33), b), RangeError);
  assert.throws(() => cpu.memset(b, 256), RangeError);
  for (const bad of [0, -1, 1.5]) assert.throws(() => cpu.alloc(bad), RangeError);
  assert.throws(() => cpu.free(middle), TypeError);
  cpu.free(a);
  assert.throws(() => cpu.free(a), { name: "TypeError", message: /not a live allocation/ });
  cpu.free(b);

  const pinned = cpu.allocHost(16);
  assert.equal(pinned.bytes.length, 16);
  pinned.free();
  pinned.free();
  cpu.close();
});

Deno.test("cpu: modules and graphs are refused with the remedy", () => {
  const cpu = new CpuBackend();
  assert.throws(() => cpu.loadModule(), /use --backend cuda or --backend hip/);
  assert.throws(() => cpu.beginCapture(), /the CPU backend has no graphs; run the eager path/);
  assert.throws(() => cpu.endCapture(), /run the eager path/);

  // Streams and events exist but never wait.
  const stream = cpu.createStream();
  const start = cpu.createEvent();
  const end = cpu.createEvent();
  start.record(stream);
  end.record(stream);
  stream.synchronize();
  const elapsed = end.elapsedMsSince(start);
  assert.ok(elapsed >= 0 && elapsed < 1000, `elapsed ${elapsed} ms`);
  const memory = cpu.memoryInfo();
  assert.ok(memory.free > 0 && memory.free <= memory.total);
  cpu.close();
});
