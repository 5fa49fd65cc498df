/**
 * cuBLASLt on a real NVIDIA GPU (`deno task test:gpu`, on the device machine): the real library
 * binds every symbol Denali declares, its gemm matches the CPU backend's linear op for decode and
 * prefill shapes (also on a 2-byte aligned view and replayed from a captured graph), and the CUDA
 * backend opens it as its accelerator.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer, GemmAccelerator, Stream } from "../../backends/backend.ts";
import { decodeBf16, encodeBf16, roundBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuLinearOps } from "../../ops/cpu/linear.ts";
import { CUBLASLT_PATHS, openCublasLt, openLtLibrary } from "../../backends/cublaslt.ts";
import { CUBLASLT_SYMBOLS } from "../../backends/cublaslt_ffi.ts";
import { openCuda } from "../../backends/cuda.ts";
import { cStringFrom } from "../../backends/dlopen.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { readBf16 } from "../support/device.ts";
import { assertClose, randomArray } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

// bf16 output: each element carries up to half an ulp (2^-9 relative) of rounding on each side,
// and the two sides may round a tie differently; fp32 accumulation order adds ~1e-6. 1e-2 leaves
// room for those while a wrong transpose or stride (error ~1) cannot pass.
const TOLERANCE = 1e-2;

/** Opens the GPU and cuBLASLt over it (failing with the reason if cuBLASLt is absent). */
function ltTest(
  name: string,
  body: (gpu: GpuBackend, lt: GemmAccelerator, stream: Stream) => void,
): void {
  Deno.test({ name, ignore, sanitizeResources: false }, () => {
    const gpu = openCuda();
    let reason = "";
    const lt = openCublasLt({ memory: gpu, onUnavailable: (r) => reason = r });
    try {
      assert.ok(lt, `cuBLASLt is not available on this machine: ${reason}`);
      body(gpu, lt, gpu.createStream());
    } finally {
      lt?.close();
      gpu.close();
    }
  });
}

/** `n` random bf16-exact values in [-1, 1). */
function bf16Random(n: number, seed: number): Float32Array {
  return randomArray(n, seed).map(roundBf16);
}

/** The same bf16 values on the GPU and on the CPU backend. */
function uploadBoth(gpu: GpuBackend, cpu: CpuBackend, values: Float32Array) {
  const bits = encodeBf16(values);
  const g = gpu.alloc(bits.byteLength);
  const c = cpu.alloc(bits.byteLength);
  gpu.copyToDevice(g, bits);
  cpu.copyToDevice(c, bits);
  return { g, c };
}

/**
 * Row blocks [start, count) to recompute on the CPU: every row for small problems, else two rows
 * at the start, middle and end, which keeps the TypeScript reference to ~10^8 multiply-adds.
 */
function rowBlocks(m: number, n: number, k: number): [number, number][] {
  if (m <= 6 || m * n * k <= 2 ** 26) return [[0, m]];
  return [[0, 2], [Math.floor(m / 2) - 1, 2], [m - 2, 2]];
}

/**
 * Checks rows of the GPU result against the CPU backend's linear op on the same inputs. For large
 * M only some row blocks are computed on the CPU; every element is still checked for NaN, which
 * an unwritten (poisoned) element would be.
 */
function checkAgainstCpu(
  got: Float32Array,
  cpu: CpuBackend,
  xCpu: DeviceBuffer,
  wCpu: DeviceBuffer,
  m: number,
  n: number,
  k: number,
  what: string,
): void {
  for (let i = 0; i < got.length; i++) {
    if (!Number.isFinite(got[i])) assert.fail(`${what}: element ${i} is ${got[i]} (unwritten?)`);
  }
  const linear = cpuLinearOps().linear;
  for (const [start, count] of rowBlocks(m, n, k)) {
    const out = cpu.alloc(count * n * 2);
    linear(out, xCpu.slice(start * k * 2, count * k * 2), wCpu, count, n, k, cpu.defaultStream);
    const want = decodeBf16(new Uint16Array(out.host!.buffer, out.host!.byteOffset, count * n));
    const rows = got.subarray(start * n, (start + count) * n);
    assertClose(rows, want, TOLERANCE, `${what} rows ${start}..${start + count - 1}`);
    cpu.free(out);
  }
}

Deno.test({ name: "gpu: the real cuBLASLt binds every symbol Denali declares", ignore }, () => {
  let reason = "";
  const configured = Deno.env.get("DENALI_LIBCUBLASLT");
  const paths = configured ? [configured] : CUBLASLT_PATHS;
  const library = openLtLibrary(paths, CUBLASLT_SYMBOLS, "cuBLASLt library", {
    onUnavailable: (r) => reason = r,
  });
  assert.ok(library, `cuBLASLt is not available on this machine: ${reason}`);
  try {
    const s = library.symbols;
    const version = Number(s.cublasLtGetVersion());
    assert.ok(version >= 120000, `cuBLASLt ${version} is older than 12`);
    // Status codes from cublas_api.h, named by the library itself.
    assert.equal(cStringFrom(s.cublasLtGetStatusName(7), ""), "CUBLAS_STATUS_INVALID_VALUE");
    assert.equal(cStringFrom(s.cublasLtGetStatusName(15), ""), "CUBLAS_STATUS_NOT_SUPPORTED");
    assert.ok(cStringFrom(s.cublasLtGetStatusString(7), "").length > 0);
    console.log(`cuBLASLt version ${version}`);
  } finally {
    library.close();
  }
});

ltTest("gpu: cuBLASLt gemm matches the CPU linear op", (gpu, lt, stream) => {
  console.log(`accelerator: ${lt.name} on ${gpu.info.name}`);
  const cpu = new CpuBackend();
  for (const [n, k] of [[4096, 4096], [1000, 1000]]) {
    const w = uploadBoth(gpu, cpu, bf16Random(n * k, n + k));
    for (const m of [1, 16, 300]) {
      const x = uploadBoth(gpu, cpu, bf16Random(m * k, 7 * m + k));
      const out = gpu.alloc(m * n * 2);
      gpu.memset(out, 0xff, stream); // NaN everywhere: an unwritten element cannot pass
      lt.gemm(out, x.g, w.g, m, n, k, stream);
      stream.synchronize();
      const what = `out[${m}, ${n}] = x[${m}, ${k}] · W[${n}, ${k}]ᵀ`;
      checkAgainstCpu(readBf16(gpu, out, m * n), cpu, x.c, w.c, m, n, k, what);
      gpu.free(out);
      gpu.free(x.g);
    }
    gpu.free(w.g);
  }
});

ltTest("gpu: cuBLASLt gemm on a 2-byte aligned view of x", (gpu, lt, stream) => {
  const cpu = new CpuBackend();
  const [m, n, k] = [16, 1000, 1000];
  const w = uploadBoth(gpu, cpu, bf16Random(n * k, 11));
  // One leading element shifts x's start by 2 bytes off every wider alignment.
  const x = uploadBoth(gpu, cpu, bf16Random(m * k + 1, 12));
  const out = gpu.alloc(m * n * 2);
  gpu.memset(out, 0xff, stream);
  lt.gemm(out, x.g.slice(2), w.g, m, n, k, stream);
  stream.synchronize();
  checkAgainstCpu(readBf16(gpu, out, m * n), cpu, x.c.slice(2), w.c, m, n, k, "x offset by 2");
});

ltTest("gpu: a captured cuBLASLt gemm replays to the same result", (gpu, lt, stream) => {
  const cpu = new CpuBackend();
  const [m, n, k] = [16, 4096, 4096];
  const w = uploadBoth(gpu, cpu, bf16Random(n * k, 21));
  const x = uploadBoth(gpu, cpu, bf16Random(m * k, 22));
  const eager = gpu.alloc(m * n * 2), replayed = gpu.alloc(m * n * 2);
  // Planned eagerly first, as prepareLinear does before any capture.
  lt.gemm(eager, x.g, w.g, m, n, k, stream);
  gpu.memset(replayed, 0xff, stream);
  gpu.beginCapture(stream);
  lt.gemm(replayed, x.g, w.g, m, n, k, stream);
  const graph = gpu.endCapture(stream);
  graph.launch(stream);
  stream.synchronize();
  const want = readBf16(gpu, eager, m * n);
  checkAgainstCpu(want, cpu, x.c, w.c, m, n, k, "eager");
  assertClose(readBf16(gpu, replayed, m * n), want, 1e-3, "graph replay against eager");

  // Median of 20 timed calls, for information only.
  const [start, stop] = [gpu.createEvent(), gpu.createEvent()];
  const times: number[] = [];
  for (let rep = 0; rep < 25; rep++) {
    start.record(stream);
    lt.gemm(eager, x.g, w.g, m, n, k, stream);
    stop.record(stream);
    stop.synchronize();
    if (rep >= 5) times.push(stop.elapsedMsSince(start) * 1000);
  }
  times.sort((a, b) => a - b);
  console.log(`${lt.name}: [${m}, ${k}] x [${n}, ${k}]T in ${times[10].toFixed(1)} us (median)`);
  graph.destroy();
  start.destroy();
  stop.destroy();
});

Deno.test({ name: "gpu: the CUDA backend opens cuBLASLt as its accelerator", ignore }, () => {
  const gpu = openCuda();
  try {
    const accelerator = gpu.gemmAccelerator;
    assert.ok(
      accelerator,
      "openCuda() has no gemmAccelerator: is openAccelerator wired in cuda.ts?",
    );
    assert.match(accelerator.name, /^cuBLASLt \d+\.\d+\.\d+$/);
    const cpu = new CpuBackend();
    const [m, n, k] = [3, 1000, 1000];
    const w = uploadBoth(gpu, cpu, bf16Random(n * k, 31));
    const x = uploadBoth(gpu, cpu, bf16Random(m * k, 32));
    const out = gpu.alloc(m * n * 2);
    gpu.memset(out, 0xff);
    accelerator.gemm(out, x.g, w.g, m, n, k, gpu.defaultStream);
    gpu.defaultStream.synchronize();
    checkAgainstCpu(readBf16(gpu, out, m * n), cpu, x.c, w.c, m, n, k, "backend accelerator");
  } finally {
    gpu.close();
  }
});
