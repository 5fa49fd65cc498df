/**
 * The FP8 weight kernels (kernels/src/linear_fp8.cu) on a real NVIDIA GPU (`deno task
 * test:gpu`) against the CPU reference (ops/cpu/fp8.ts) on the same inputs:
 * - quantizeFp8 and dequantizeFp8 bit for bit (both compute one f32 product or quotient and one
 *   rounding), over random rows, an all-zero row, tiny rows (subnormal codes) and every code;
 *   the dequantize kernel's 16-wide and element paths (K % 16 != 0, a misaligned view);
 * - `linear` on FP8 weights for M ∈ {1, 2, 3, 8, 9, 16, 17, 64, 300} over (N, K) ∈ {(4096,
 *   4096), (1024, 4096), (1000, 1008), (37, 64), (1000, 1000)}: the W8A16 GEMVs (both row widths,
 *   K splits 1..8, partial steps) for M <= 16 and K % 16 == 0, the dequantize + bf16 GEMM path
 *   otherwise; a weight holding every finite code (subnormals through the bf16x2 widening);
 *   the 128256×4096 shape at M = 1; a chain of GEMVs each reading the previous output (the
 *   programmatic launch must wait before reading x); and the engine on tiny-llama quantized at
 *   load, against the CPU engine;
 * - W8A8 (x quantized per token, then Denali's wgmma FP8 GEMM or cuBLASLt's FP8 matmul with
 *   per-row scales) on the Llama-3-8B
 *   shapes at M ∈ {17, 256, 2048} against the CPU W8A8 reference (`fp8W8a8Rows`) (and, with
 *   swapAb always, the swapped-operand tiles at M ∈ {17, 32, 40, 64}), and
 *   prepareLinear's choice between it and dequantizing, with `linear` then matching whichever
 *   reference the choice implies. (HF parity of the FP8 fixture runs with the other models in
 *   tests/gpu/parity_gpu_test.ts.)
 *
 * W8A8 tolerance: the GPU quantizer writes the CPU's codes and scales (the weight quantizer's
 * kernel, tested bit for bit above), products of two E4M3 values are exact, so only the fp32
 * summation order and the final bf16 rounding differ: per element (2^-7 + 1e-3)·|ref| + 1e-4.
 * Against the unquantized product (W8A16) it must stay within 5e-2 relative L2 (x's own E4M3
 * rounding, 2^-4 of each value at worst, about 2e-2 on random data).
 *
 * Tolerances. GEMV: both sides round one sum per output to bf16 after applying the row scale,
 * the GPU summing exact products in fp32, so per element |gpu − cpu| ≤ 2^-7·|ref| + 1e-4, as the
 * bf16 GEMVs. Dequantize path: each weight is first rounded to bf16 (2^-9 relative), so the
 * bound adds 2^-9·Σ|x·w|. Engine logits: relative L2 ≤ 2e-2, the bf16 engine's GPU-vs-CPU
 * bound (the same weights, different summation orders and bf16 roundings of activations).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { decodeBf16, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { e4m3Table } from "../../backends/fp8.ts";
import { Engine } from "../../engine/engine.ts";
import { setFallbackSink } from "../../backends/fallbacks.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { fp8W8a8Rows, quantizeRowE4m3 } from "../../ops/cpu/fp8.ts";
import type { W8a8Via } from "../../ops/gpu/fp8.ts";
import type { GpuLinearOps } from "../../ops/gpu/linear.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import { quantizedFp8Pair } from "../support/fp8_pair.ts";
import { GPU_TESTS_IGNORED, gpuLinearTest } from "../support/gpu_linear.ts";
import { assertClose, randomBf16Bits, relativeError } from "../support/numeric.ts";

const ignore = GPU_TESTS_IGNORED;
const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;
const cpu = new CpuBackend();
const ref = cpuOps();
const cs = cpu.defaultStream;

/** The same FP8 weight on the CPU and the GPU. */
interface Pair {
  cpu: Fp8Weight;
  gpu: Fp8Weight;
}

function cpuFp8(n: number, k: number): Fp8Weight {
  return { format: "fp8-e4m3", data: cpu.alloc(n * k), scales: cpu.alloc(4 * n), scratch: null };
}

function upload(gpu: Backend, ops: GpuLinearOps, w: Fp8Weight, n: number, k: number): Fp8Weight {
  const out: Fp8Weight = {
    format: "fp8-e4m3",
    data: gpu.alloc(n * k),
    scales: gpu.alloc(4 * n),
    scratch: gpu.alloc(ops.fp8ScratchBytes(n, k)),
  };
  gpu.copyToDevice(out.data, w.data.host!);
  gpu.copyToDevice(out.scales, w.scales.host!);
  return out;
}

function freeFp8(gpu: Backend, w: Fp8Weight): void {
  for (const b of [w.data, w.scales, w.scratch]) if (b) gpu.free(b);
}

/** A weight quantized on the CPU from seeded bf16 values in ±1/√K, on both devices. */
function quantizedPair(gpu: Backend, ops: GpuLinearOps, n: number, k: number, seed: number): Pair {
  const bits = randomBf16Bits(n * k, seed, 1 / Math.sqrt(k));
  const [c, g] = quantizedFp8Pair(cpu, gpu, bits, n, k, ops.fp8ScratchBytes(n, k));
  return { cpu: c, gpu: g };
}

function download(gpu: Backend, buffer: DeviceBuffer, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  gpu.copyToHost(out, buffer);
  return out;
}

gpuLinearTest("gpu quantizeFp8: codes and scales equal the CPU's bit for bit", (gpu, ops) => {
  const s = gpu.createStream();
  // K % 8 == 0 takes the kernel's 16-byte path; 36 and 1001 its element path.
  for (const [n, k] of [[4096, 4096], [1000, 1000], [37, 64], [100, 40], [50, 36], [3, 1001]]) {
    const bits = randomBf16Bits(n * k, n + k, 3);
    bits.fill(0, 0, k); // row 0: all zeros (scale 1)
    for (let i = k; i < 2 * k; i++) bits[i] = toBf16Bits((i % 7 - 3) * 1e-6); // tiny: subnormals
    bits[2 * k + 3] = toBf16Bits(-1000); // a row with one large value
    const cw = cpu.alloc(2 * n * k);
    cpu.copyToDevice(cw, bits);
    const c = cpuFp8(n, k);
    ref.quantizeFp8(c, cw, n, k, cs);
    const gw = gpu.alloc(2 * n * k);
    gpu.copyToDevice(gw, bits);
    const g: Fp8Weight = {
      format: "fp8-e4m3",
      data: gpu.alloc(n * k),
      scales: gpu.alloc(4 * n),
      scratch: null,
    };
    gpu.memset(g.data, 0x7f, s);
    ops.quantizeFp8(g, gw, n, k, s);
    s.synchronize();
    assert.deepEqual(download(gpu, g.scales, 4 * n), c.scales.host, `${n}×${k}: scales`);
    assert.deepEqual(download(gpu, g.data, n * k), c.data.host, `${n}×${k}: codes`);
    for (const b of [gw, g.data, g.scales]) gpu.free(b);
  }
});

gpuLinearTest(
  "gpu dequantizeFp8: every code, both paths, equal to the CPU bit for bit",
  (gpu, ops) => {
    const s = gpu.createStream();
    for (const [n, k, offset] of [[64, 4096, 0], [37, 1000, 0], [16, 256, 2]]) {
      const c = cpuFp8(n, k);
      const codes = c.data.host!;
      for (let i = 0; i < n * k; i++) codes[i] = (i * 13 + (i >> 8)) & 0xff;
      new Float32Array(c.scales.host!.buffer, c.scales.host!.byteOffset, n).forEach((_, j, a) =>
        a[j] = Math.fround(0.001 * (j + 1))
      );
      const cout = cpu.alloc(2 * n * k);
      ref.dequantizeFp8(cout, c, n, k, cs);
      const g = upload(gpu, ops, c, n, k);
      const gout = gpu.alloc(2 * n * k + 16);
      const view = gout.slice(offset, 2 * n * k);
      ops.dequantizeFp8(view, g, n, k, s);
      s.synchronize();
      const got = new Uint16Array(n * k);
      gpu.copyToHost(got, view);
      const want = new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, n * k);
      for (let i = 0; i < n * k; i++) {
        // NaN codes: any NaN pattern will do.
        if ((codes[i] & 0x7f) === 0x7f) assert.ok((got[i] & 0x7fff) > 0x7f80, `NaN at ${i}`);
        else if (got[i] !== want[i]) {
          assert.fail(`${n}×${k}+${offset} [${i}]: ${got[i]} vs ${want[i]}`);
        }
      }
      freeFp8(gpu, g);
      gpu.free(gout);
    }
  },
);

/** GPU linear on an FP8 weight against the CPU reference, per the module's bounds. */
function checkLinear(
  gpu: Backend,
  ops: GpuLinearOps,
  pair: Pair,
  m: number,
  n: number,
  k: number,
  seed: number,
  via: "linear" | "gemvRows" = "linear",
): void {
  const s = gpu.createStream();
  const xBits = randomBf16Bits(m * k, seed, 1);
  const cx = cpu.alloc(2 * m * k), cout = cpu.alloc(2 * m * n);
  cpu.copyToDevice(cx, xBits);
  ref.linear(cout, cx, pair.cpu, m, n, k, cs);
  const want = decodeBf16(new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, m * n));
  const gx = gpu.alloc(2 * m * k), gout = gpu.alloc(2 * m * n);
  gpu.copyToDevice(gx, xBits);
  gpu.memset(gout, 0xff, s);
  if (via === "linear") ops.linear(gout, gx, pair.gpu, m, n, k, s);
  else assert.ok(ops.fp8GemvRows(gout, gx, pair.gpu, m, n, k, s), `m=${m}: 16-row chunks`);
  s.synchronize();
  const bits = new Uint16Array(m * n);
  gpu.copyToHost(bits, gout);
  const got = decodeBf16(bits);
  const gemv = via === "gemvRows"
    ? "GEMV over 16-row chunks"
    : ops.fp8GemvKernel(m, n, k, gx, pair.gpu);
  const what = `m=${m} n=${n} k=${k} (${gemv ?? "dequantize + GEMM"})`;
  assertClose(got, want, 1e-2, what);
  const xs = decodeBf16(xBits), lut = e4m3Table();
  const codes = pair.cpu.data.host!;
  const scales = new Float32Array(
    pair.cpu.scales.host!.buffer,
    pair.cpu.scales.host!.byteOffset,
    n,
  );
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      let magnitude = 0;
      if (gemv === null) {
        for (let i = 0; i < k; i++) magnitude += Math.abs(xs[r * k + i] * lut[codes[j * k + i]]);
      }
      const i = r * n + j;
      const bound = 2 ** -7 * Math.abs(want[i]) + 2 ** -9 * scales[j] * magnitude + 1e-4;
      if (!(Math.abs(got[i] - want[i]) <= bound)) {
        assert.fail(`${what}: [${r}, ${j}] is ${got[i]}, the CPU says ${want[i]}`);
      }
    }
  }
  gpu.free(gx);
  gpu.free(gout);
}

const MS = [1, 2, 3, 8, 9, 16, 17, 64, 300];
for (const [n, k] of [[4096, 4096], [1024, 4096], [1000, 1008], [37, 64], [1000, 1000]]) {
  gpuLinearTest(`gpu linear on FP8 weights: N=${n} K=${k}, M in ${MS.join(", ")}`, (gpu, ops) => {
    const pair = quantizedPair(gpu, ops, n, k, 7 * n + k);
    try {
      for (const m of MS) {
        checkLinear(gpu, ops, pair, m, n, k, m);
        const dummy = gpu.alloc(16);
        const expected = m <= 16 && k % 16 === 0;
        assert.equal(ops.fp8GemvKernel(m, n, k, dummy, pair.gpu) !== null, expected, `m=${m}`);
        gpu.free(dummy);
      }
    } finally {
      freeFp8(gpu, pair.gpu);
    }
  });
}

gpuLinearTest("gpu FP8 GEMV over 16-row chunks (17..64 rows) matches the CPU", (gpu, ops) => {
  for (const [n, k] of [[4096, 4096], [1000, 1008]]) {
    const pair = quantizedPair(gpu, ops, n, k, 3 * n + k);
    try {
      for (const m of [17, 24, 33, 64]) checkLinear(gpu, ops, pair, m, n, k, m, "gemvRows");
    } finally {
      freeFp8(gpu, pair.gpu);
    }
  }
});

gpuLinearTest(
  "gpu linear on FP8 weights: every finite code, and the 128256×4096 shape",
  (gpu, ops) => {
    const n = 64, k = 512;
    const c = cpuFp8(n, k);
    const codes = c.data.host!;
    for (let i = 0; i < n * k; i++) {
      const code = (i * 7 + (i >> 9)) & 0xff;
      codes[i] = (code & 0x7f) === 0x7f ? 0 : code;
    }
    new Float32Array(c.scales.host!.buffer, c.scales.host!.byteOffset, n).fill(1 / 448);
    const pair = { cpu: c, gpu: upload(gpu, ops, c, n, k) };
    for (const m of [1, 8, 16, 20]) checkLinear(gpu, ops, pair, m, n, k, 100 + m);
    freeFp8(gpu, pair.gpu);
    const big = quantizedPair(gpu, ops, 128256, 4096, 5);
    checkLinear(gpu, ops, big, 1, 128256, 4096, 9);
    freeFp8(gpu, big.gpu);
  },
);

gpuLinearTest(
  "gpu linear on FP8 weights: a chain of GEMVs, each reading the previous output",
  (gpu, ops) => {
    const n = 1024, depth = 6;
    const pairs = Array.from({ length: depth }, (_, i) => quantizedPair(gpu, ops, n, n, 50 + i));
    const s = gpu.createStream();
    const x0 = randomBf16Bits(n, 3, 1);
    const cbufs = [cpu.alloc(2 * n), cpu.alloc(2 * n)];
    cpu.copyToDevice(cbufs[0], x0);
    const gbufs = [gpu.alloc(2 * n), gpu.alloc(2 * n)];
    gpu.copyToDevice(gbufs[0], x0);
    for (let i = 0; i < depth; i++) {
      ref.linear(cbufs[(i + 1) & 1], cbufs[i & 1], pairs[i].cpu, 1, n, n, cs);
      ops.linear(gbufs[(i + 1) & 1], gbufs[i & 1], pairs[i].gpu, 1, n, n, s);
    }
    s.synchronize();
    const got = new Uint16Array(n);
    gpu.copyToHost(got, gbufs[depth & 1]);
    const want = new Uint16Array(cbufs[depth & 1].host!.buffer, 0, n);
    // Errors compound over the chain: 2e-2 of the norm (each step ≤ 1e-2 in the tests above).
    assertClose(decodeBf16(got), decodeBf16(want), 2e-2, `chain of ${depth} FP8 GEMVs`);
    for (const p of pairs) freeFp8(gpu, p.gpu);
  },
);

Deno.test({
  name: "gpu engine: tiny-llama with --quantization fp8 matches the CPU engine",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const prompt = [277, 40, 41, 42, 43, 100, 101, 7, 8, 9, 200, 201, 5, 6];
  const logits: Float32Array[] = [];
  for (const backend of ["cpu", "cuda"] as const) {
    const engine = await Engine.load(TINY, { backend, log: () => {}, quantization: "fp8" });
    try {
      logits.push(await engine.lastLogits(prompt));
    } finally {
      await engine.close();
    }
  }
  const error = relativeError(logits[1], logits[0]);
  console.log(`tiny-llama FP8: GPU vs CPU logits relative error ${error.toExponential(2)}`);
  assert.ok(error <= 2e-2, `relative error ${error}`);
});

/**
 * The CPU references of one x against one weight, W8A8 and W8A16 (bf16 bits), kept per CPU weight
 * so that the two GEMM paths checked on the same x compute them once: on 6144×4096 at 256 rows
 * each takes seconds of the GPU machine's time.
 */
const cpuReferences = new WeakMap<
  Fp8Weight,
  Map<string, { w8a8: Uint16Array; w16: Uint16Array }>
>();

/** `cpuReferences`' entry for x (made from `seed`) against pair's weight, computed on first use. */
function referencesOf(
  pair: Pair,
  xBits: Uint16Array,
  m: number,
  n: number,
  k: number,
  seed: number,
) {
  // Keyed by the CPU weight: callers pass a fresh pair object around the same weights.
  let byX = cpuReferences.get(pair.cpu);
  if (!byX) cpuReferences.set(pair.cpu, byX = new Map());
  const key = `${m} ${n} ${k} ${seed}`;
  let refs = byX.get(key);
  if (!refs) {
    const w8a8 = new Uint16Array(m * n);
    fp8W8a8Rows(w8a8, xBits, pair.cpu, m, n, k);
    const cx = cpu.alloc(2 * m * k), cout = cpu.alloc(2 * m * n);
    cpu.copyToDevice(cx, xBits);
    ref16(cout, cx, pair, m, n, k);
    const w16 = new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, m * n).slice();
    cpu.free(cx);
    cpu.free(cout);
    byX.set(key, refs = { w8a8, w16 });
  }
  return refs;
}

/**
 * W8A8 on the GPU against the CPU W8A8 reference, and within 5e-2 of W8A16; false (and a line
 * saying why) where the library refuses it.
 */
function checkW8a8(
  gpu: Backend,
  ops: GpuLinearOps,
  pair: Pair,
  m: number,
  n: number,
  k: number,
  seed: number,
  via: W8a8Via,
): boolean {
  const s = gpu.createStream();
  const xBits = randomBf16Bits(m * k, seed, 1);
  const refs = referencesOf(pair, xBits, m, n, k, seed);
  const gx = gpu.alloc(2 * m * k), gout = gpu.alloc(2 * m * n);
  gpu.copyToDevice(gx, xBits);
  gpu.memset(gout, 0xff, s);
  const lines: string[] = [];
  const previous = setFallbackSink((line) => lines.push(line));
  let ran: boolean;
  try {
    ran = ops.fp8W8a8(gout, gx, pair.gpu, m, n, k, s, via);
  } finally {
    setFallbackSink(previous);
  }
  if (!ran) {
    // A library without per-row FP8 scales refuses: that must be said (once per ops), and
    // `linear` then dequantizes, which the other tests here check. Nothing to compare.
    console.log(
      `  W8A8 via ${via} m=${m} n=${n} k=${k}: not available: ${
        lines.join(" | ") || "(said before)"
      }`,
    );
    gpu.free(gx);
    gpu.free(gout);
    return false;
  }
  s.synchronize();
  const bits = new Uint16Array(m * n);
  gpu.copyToHost(bits, gout);
  const got = decodeBf16(bits), ref = decodeBf16(refs.w8a8);
  const what = `W8A8 via ${via} m=${m} n=${n} k=${k}`;
  // A bf16 ulp either way (2^-8, doubled for the two roundings), plus the fp32 reordering
  // (about 2^-24 · k of the terms' magnitude; random data keeps that under 1e-3 of |ref|).
  // Both W8A8 paths run on Hopper's FP8 MMA, which adds within a k tile with about 14 bits
  // (DeepSeek-V3 §3.3.2) before the tile is promoted to fp32: Denali's wgmma kernel missed the
  // bound above by ~1e-5 on near-zero outputs (bench/results/2026-12-06-s9-w8a8-promoted-h100.md)
  // and cuBLASLt's by ~1e-4 (2026-12-06-s10-*). So 2^-12 of the element's Σ|terms| more,
  // computed only where the tight bound is missed.
  // A wrong scale, k mapping or tile is off by far more: terms of K = 4096 sum to ~64× |ref|, so
  // this stays under 2% of a typical output, and the relative L2 checks below still hold it.
  const lut = e4m3Table();
  const xCodes = new Uint8Array(k);
  const scaleBytes = pair.cpu.scales.host!;
  const wScales = new Float32Array(scaleBytes.buffer, scaleBytes.byteOffset, n);
  let codedRow = -1, xScale = 0;
  const termSum = (r: number, j: number): number => {
    if (codedRow !== r) {
      xScale = quantizeRowE4m3(xBits.subarray(r * k, (r + 1) * k), xCodes, 0, k);
      codedRow = r;
    }
    const w = pair.cpu.data.host!;
    let sum = 0;
    for (let i = 0; i < k; i++) sum += Math.abs(lut[xCodes[i]] * lut[w[j * k + i]]);
    return sum * xScale * wScales[j];
  };
  for (let i = 0; i < m * n; i++) {
    const tight = 2 ** -7 * Math.abs(ref[i]) + 1e-3 * Math.abs(ref[i]) + 1e-4;
    const error = Math.abs(got[i] - ref[i]);
    if (error <= tight) continue;
    const r = Math.floor(i / n), j = i % n;
    if (error <= tight + 2 ** -12 * termSum(r, j)) continue;
    assert.fail(`${what}: [${r}, ${j}] is ${got[i]}, the CPU says ${ref[i]}`);
  }
  assert.ok(relativeError(got, ref) <= 1e-2, `${what}: relative L2 to the CPU W8A8 above 1e-2`);
  const error = relativeError(got, decodeBf16(refs.w16));
  assert.ok(error <= 5e-2, `${what}: ${error} from the W8A16 product`);
  gpu.free(gx);
  gpu.free(gout);
  return true;
}

/** The CPU W8A16 product (`linear` on the CPU). */
function ref16(out: DeviceBuffer, x: DeviceBuffer, pair: Pair, m: number, n: number, k: number) {
  ref.linear(out, x, pair.cpu, m, n, k, cs);
}

for (const [n, k] of [[6144, 4096], [4096, 14336], [1000, 1008]]) {
  gpuLinearTest(`gpu W8A8 on FP8 weights: N=${n} K=${k}, M in 17, 256, 2048`, (gpu, ops) => {
    const pair = quantizedPair(gpu, ops, n, k, 3 * n + k);
    const scratch = gpu.alloc(
      Math.max(ops.fp8ScratchBytes(n, k), ops.fp8W8a8ScratchBytes(2048, k)),
    );
    const gpuWeight = { ...pair.gpu, scratch };
    try {
      for (const m of [17, 256, 2048]) {
        if (m * n * k > 2 ** 33) continue; // the CPU reference would take minutes
        for (const via of ["wgmma", "library"] as const) {
          const ran = checkW8a8(gpu, ops, { cpu: pair.cpu, gpu: gpuWeight }, m, n, k, m + 1, via);
          // Denali's own FP8 GEMM exists wherever the sm_90a image loads (this suite's H100 or
          // H200); only the library may be missing.
          if (via === "wgmma") assert.ok(ran, `W8A8 via wgmma did not run at m=${m}`);
        }
      }
    } finally {
      freeFp8(gpu, pair.gpu);
      gpu.free(scratch);
    }
  });
}

// The swapped-operand W8A8 tiles (W's rows as wgmma's M, up to 64 tokens as its N, scales
// applied to the transposed accumulators), at the row counts that take each (32 and 64 tokens),
// split over K as dispatch splits them, against the same CPU W8A8 reference.
for (const [n, k] of [[6144, 4096], [1000, 1008]]) {
  gpuLinearTest(
    `gpu W8A8 swapped-operand tiles: N=${n} K=${k}, M in 17, 32, 40, 64`,
    (gpu, ops) => {
      const pair = quantizedPair(gpu, ops, n, k, 5 * n + k);
      const scratch = gpu.alloc(
        Math.max(ops.fp8ScratchBytes(n, k), ops.fp8W8a8ScratchBytes(64, k)),
      );
      try {
        for (const m of [17, 32, 40, 64]) {
          const weight = { cpu: pair.cpu, gpu: { ...pair.gpu, scratch } };
          assert.ok(checkW8a8(gpu, ops, weight, m, n, k, m + 7, "wgmma"), `m=${m} did not run`);
        }
      } finally {
        freeFp8(gpu, pair.gpu);
        gpu.free(scratch);
      }
    },
    { swapAb: "always" },
  );
}

gpuLinearTest(
  "gpu prepareLinear on FP8 shapes: linear then runs the path it chose, matching its reference",
  (gpu, ops) => {
    const n = 4096, k = 4096, m = 512;
    const pair = quantizedPair(gpu, ops, n, k, 77);
    const scratch = gpu.alloc(Math.max(ops.fp8ScratchBytes(n, k), ops.fp8W8a8ScratchBytes(m, k)));
    const weight = { ...pair.gpu, scratch };
    const s = gpu.createStream();
    try {
      ops.prepareLinear([{ m, n, k, fp8: true }], s);
      const path = ops.fp8PrefillPath(m, n, k);
      const w8a8 = path !== "dequantize";
      console.log(`  FP8 ${m}×${n}×${k}: prepareLinear chose ${path}`);
      const xBits = randomBf16Bits(m * k, 5, 1);
      const gx = gpu.alloc(2 * m * k), gout = gpu.alloc(2 * m * n);
      gpu.copyToDevice(gx, xBits);
      ops.linear(gout, gx, weight, m, n, k, s);
      s.synchronize();
      const bits = new Uint16Array(m * n);
      gpu.copyToHost(bits, gout);
      const want = new Uint16Array(m * n);
      if (w8a8) {
        fp8W8a8Rows(want, xBits, pair.cpu, m, n, k);
      } else {
        const cx = cpu.alloc(2 * m * k), cout = cpu.alloc(2 * m * n);
        cpu.copyToDevice(cx, xBits);
        ref16(cout, cx, pair, m, n, k);
        want.set(new Uint16Array(cout.host!.buffer, cout.host!.byteOffset, m * n));
      }
      // Either path's own reference to within its tolerance (the dequantizing one adds the
      // weights' bf16 rounding, 2^-9, to the GEMM's: 1e-2 relative L2 covers both).
      const error = relativeError(decodeBf16(bits), decodeBf16(want));
      assert.ok(error <= 1e-2, `${w8a8 ? "W8A8" : "dequantize"}: relative error ${error}`);
      gpu.free(gx);
      gpu.free(gout);
    } finally {
      freeFp8(gpu, pair.gpu);
      gpu.free(scratch);
    }
  },
);
