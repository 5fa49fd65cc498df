/**
 * The 4-bit weight kernels (kernels/src/linear_awq.cu) on a real NVIDIA GPU (`deno task
 * test:gpu`, or DENALI_GPU_TESTS=1) against the CPU reference (ops/cpu/awq.ts) on the same
 * inputs:
 * - dequantizeAwq bit for bit (both compute the exact f32 (q − z)·s and round once to bf16),
 *   with random codes, zeros and f16-valued scales, group sizes 64 and 128;
 * - `linear` on 4-bit weights for M ∈ {1, 2, 3, 8, 9, 16, 17, 64} over (N, K, group) ∈
 *   {(4096, 4096, 128), (1024, 4096, 64), (1000, 1024, 128), (37, 256, 64), (14336, 4096, 128)
 *   at M = 1}: the tensor-core W4A16 GEMVs for M <= 16 (t8 and t16, r16 and r8, K splits 1..8),
 *   the same GEMVs over 16-row chunks for 17, the dequantize + bf16 GEMM path above 48 rows
 *   (64, 100, 256); a misaligned
 *   x (the dequantize path at M = 1); the q, k and v row views of a fused weight;
 * - the engine on a tiny AWQ checkpoint (tests/support/awq_checkpoint.ts) against the CPU
 *   engine.
 *
 * Tolerances. GEMV: the GPU rounds each weight to bf16 twice (its scale, then (q − z)·s: 2^-8
 * at most), sums exact products in f32 (in another order) and rounds once to bf16, the CPU sums
 * in double: relative L2 ≤ 1e-2 covers those roundings with room,
 * while a wrong nibble, zero or group moves outputs by tens of percent. Dequantize path: each
 * weight is first rounded to bf16 (2^-9 relative), within the same bound. Engine logits:
 * relative L2 ≤ 2e-2, the bf16 engine's GPU-vs-CPU bound.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { packRows } from "../../backends/awq.ts";
import { decodeBf16, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { Engine } from "../../engine/engine.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { GpuLinearOps } from "../../ops/gpu/linear.ts";
import { type AwqWeight, weightRows } from "../../ops/linear_weight.ts";
import { writeCheckpoint } from "../support/awq_checkpoint.ts";
import { GPU_TESTS_IGNORED, gpuLinearTest } from "../support/gpu_linear.ts";
import { assertClose, relativeError, rng } from "../support/numeric.ts";

const ignore = GPU_TESTS_IGNORED;
const cpu = new CpuBackend();
const ref = cpuOps();
const cs = cpu.defaultStream;

/** A random 4-bit weight on the CPU: codes 0..15, zeros 0..15, scales of f16 values. */
function randomWeight(n: number, k: number, g: number, seed: number): AwqWeight {
  const next = rng(seed);
  const groups = n * k / g;
  const codes = packRows(Uint8Array.from({ length: n * k }, () => Math.floor(next(0, 16))), n, k);
  const zeros = Uint8Array.from({ length: groups }, () => Math.floor(next(0, 16)));
  // f16 values around 2^-6, as real scales (a weight of ±0.1 over 15 steps).
  const scales = Float32Array.from(Float16Array.from({ length: groups }, () => next(0.002, 0.03)));
  const weight: AwqWeight = {
    format: "awq-int4",
    codes: cpu.alloc(codes.byteLength),
    zeros: cpu.alloc(zeros.byteLength),
    scales: cpu.alloc(scales.byteLength),
    groupSize: g,
    scratch: null,
  };
  cpu.copyToDevice(weight.codes, new Uint8Array(codes.buffer));
  cpu.copyToDevice(weight.zeros, zeros);
  cpu.copyToDevice(weight.scales, new Uint8Array(scales.buffer));
  return weight;
}

function upload(gpu: Backend, ops: GpuLinearOps, w: AwqWeight, n: number, k: number): AwqWeight {
  const copy = (b: DeviceBuffer) => {
    const out = gpu.alloc(b.bytes);
    gpu.copyToDevice(out, b.host!);
    return out;
  };
  return {
    ...w,
    codes: copy(w.codes),
    zeros: copy(w.zeros),
    scales: copy(w.scales),
    scratch: gpu.alloc(ops.awqScratchBytes(n, k)),
  };
}

function randomX(count: number, seed: number): Uint16Array {
  const next = rng(seed);
  return Uint16Array.from({ length: count }, () => toBf16Bits(next(-1, 1)));
}

function readGpu(gpu: Backend, buffer: DeviceBuffer, count: number): Uint16Array {
  const out = new Uint16Array(count);
  gpu.copyToHost(new Uint8Array(out.buffer), buffer);
  return out;
}

gpuLinearTest(
  "gpu dequantizeAwq: equal to the CPU bit for bit (group sizes 64 and 128)",
  (gpu, ops) => {
    for (const [n, k, g] of [[1024, 4096, 128], [1000, 1024, 64], [24, 256, 128]]) {
      const w = randomWeight(n, k, g, n + k);
      const gw = upload(gpu, ops, w, n, k);
      const s = gpu.createStream();
      const out = gpu.alloc(2 * n * k);
      ops.dequantizeAwq(out, gw, n, k, s);
      s.synchronize();
      const want = cpu.alloc(2 * n * k);
      ref.dequantizeAwq(want, w, n, k, cs);
      const got = readGpu(gpu, out, n * k);
      const expected = new Uint16Array(want.host!.buffer, want.host!.byteOffset, n * k);
      const bad = got.findIndex((v, i) => v !== expected[i]);
      assert.equal(
        bad,
        -1,
        `${n}×${k} g${g}: element ${bad} is ${got[bad]}, want ${expected[bad]}`,
      );
    }
  },
);

/**
 * `linear` on the GPU against the CPU for each m, from one weight; `forceGemm` runs the W4A16
 * GEMM (ops.awqGemm) instead, whatever m.
 */
function checkLinear(
  gpu: Backend,
  ops: GpuLinearOps,
  n: number,
  k: number,
  g: number,
  ms: readonly number[],
  forceGemm = false,
): void {
  const w = randomWeight(n, k, g, 3 * n + k);
  const gw = upload(gpu, ops, w, n, k);
  const s = gpu.createStream();
  for (const m of ms) {
    const what = `M=${m} N=${n} K=${k} g${g}`;
    const xBits = randomX(m * k, m + n);
    const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
    gpu.copyToDevice(x, new Uint8Array(xBits.buffer));
    if (forceGemm) assert.ok(ops.awqGemm(out, x, gw, m, n, k, s), `${what}: the GEMM ran`);
    else ops.linear(out, x, gw, m, n, k, s);
    s.synchronize();
    const cx = cpu.alloc(2 * m * k), cout = cpu.alloc(2 * m * n);
    cpu.copyToDevice(cx, new Uint8Array(xBits.buffer));
    ref.linear(cout, cx, w, m, n, k, cs);
    const want = decodeBf16(new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, m * n));
    assertClose(decodeBf16(readGpu(gpu, out, m * n)), want, 1e-2, what);
    gpu.free(x);
    gpu.free(out);
  }
}

// GEMVs up to 16 rows, over 16-row chunks up to 48, then dequantize + GEMM; and the opt-in W4A16 GEMM on the same rows past 16
// (row and column tails: 17, 100; N 1000, 37).
const MS = [1, 2, 3, 8, 9, 16, 17, 64, 100, 256];
for (const [n, k, g] of [[4096, 4096, 128], [1024, 4096, 64], [1000, 1024, 128], [37, 256, 64]]) {
  gpuLinearTest(
    `gpu linear on 4-bit weights: N=${n} K=${k} g${g}, M in ${MS.join(", ")}`,
    (gpu, ops) => {
      checkLinear(gpu, ops, n, k, g, MS);
      checkLinear(gpu, ops, n, k, g, MS.filter((m) => m > 16), true); // the opt-in W4A16 GEMM
    },
  );
}

gpuLinearTest(
  "gpu W4A16 GEMM past its default rows (M = 300, 1000) and on the fused gate/up shape (M = 17)",
  (gpu, ops) => {
    checkLinear(gpu, ops, 1000, 1024, 128, [300, 1000], true);
    checkLinear(gpu, ops, 28672, 4096, 128, [17], true);
  },
);

gpuLinearTest("gpu linear on 4-bit weights: the 14336×4096 shape at M = 1", (gpu, ops) => {
  checkLinear(gpu, ops, 14336, 4096, 128, [1]);
});

// Every variant of the 16-row GEMV for up to 8 tokens, at every K split: N = 8192 makes 512 row
// blocks at split 8 (more than the persistent grid's 2 an SM, so a block takes several) and 64
// at split 1; K = 4096 gives each warp 2 (split 8) to 16 (split 1) steps, and K = 1280 a step
// count that no split divides evenly, and N = 4360 a partial last row block.
for (const variant of ["s2", "s3", "s2_p", "s3_p", "s2_ps"] as const) {
  for (const split of [1, 2, 4, 8] as const) {
    gpuLinearTest(
      `gpu 4-bit GEMV variant ${variant}, split ${split}: N=8192 K=4096 and N=4360 K=1280, M in 1, 3, 8`,
      (gpu, ops) => {
        checkLinear(gpu, ops, 8192, 4096, 128, [1, 3, 8]);
        checkLinear(gpu, ops, 4360, 1280, 128, [1, 3, 8]);
      },
      { awqGemvVariant: variant, awqGemvSplit: split },
    );
  }
}

gpuLinearTest(
  "gpu linear on 4-bit weights: misaligned x, and row views of a fused weight",
  (gpu, ops) => {
    const n = 768, k = 512, g = 128;
    const w = randomWeight(n, k, g, 11);
    const gw = upload(gpu, ops, w, n, k);
    const s = gpu.createStream();
    const xBits = randomX(k, 5);
    // x one bf16 into its buffer: not 16-byte aligned, so the dequantize path runs for M = 1.
    const xBuf = gpu.alloc(2 * k + 16);
    const x = xBuf.slice(2, 2 * k);
    gpu.copyToDevice(x, new Uint8Array(xBits.buffer));
    const cx = cpu.alloc(2 * k);
    cpu.copyToDevice(cx, new Uint8Array(xBits.buffer));
    // The whole weight, then rows [512, 640) and [640, 768) as q/k/v-style views.
    for (const [row, rows] of [[0, n], [512, 128], [640, 128]]) {
      const out = gpu.alloc(2 * rows), cout = cpu.alloc(2 * rows);
      ops.linear(out, x, weightRows(gw, row, rows, k), 1, rows, k, s);
      s.synchronize();
      ref.linear(cout, cx, weightRows(w, row, rows, k), 1, rows, k, cs);
      const want = decodeBf16(new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, rows));
      assertClose(decodeBf16(readGpu(gpu, out, rows)), want, 1e-2, `rows ${row}..${row + rows}`);
    }
  },
);

Deno.test({
  name: "gpu engine on a tiny AWQ checkpoint: logits match the CPU engine",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const written = await writeCheckpoint("awq");
  const prompt = [277, 40, 41, 42, 43, 100, 101, 7, 8, 9, 200, 201, 5, 6];
  try {
    const logits: Float32Array[] = [];
    for (const backend of ["cpu", "cuda"] as const) {
      const engine = await Engine.load(written.dir, { backend, log: () => {} });
      try {
        // 14 prompt tokens run the GEMV (M <= 16); 42 run dequantize + GEMM.
        logits.push(await engine.lastLogits(prompt));
        logits.push(await engine.lastLogits([...prompt, ...prompt, ...prompt]));
      } finally {
        await engine.close();
      }
    }
    for (const i of [0, 1]) {
      const error = relativeError(logits[2 + i], logits[i]);
      console.log(
        `tiny AWQ, prompt ${i}: GPU vs CPU logits relative error ${error.toExponential(2)}`,
      );
      assert.ok(error <= 2e-2, `logits ${i}: relative L2 ${error.toExponential(3)} > 2e-2`);
    }
  } finally {
    await Deno.remove(written.dir, { recursive: true });
  }
});
