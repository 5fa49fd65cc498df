/**
 * The FP8 weight ops: the CPU reference (ops/cpu/fp8.ts, and `linear` on an FP8 weight) against
 * closed-form values and independent double-precision sums, their argument checks, and the GPU
 * launchers' dispatch on the fake CUDA and HIP drivers (kernel, grid, arguments; the
 * dequantize-then-GEMM path above 16 rows).
 *
 * Tolerances. `linear` on an FP8 weight rounds once to bf16 a sum the CPU accumulates in double:
 * per element |out − ref| ≤ 2^-8·|ref| (a bf16 ulp) plus 1e-6 for sums that cancel. A
 * quantized weight differs from the original by at most half an E4M3 step: 2^-4 of the value
 * (3 mantissa bits) for normal codes, and scale · 2^-10 in the subnormal range.
 *
 * @module
 */

import assert from "node:assert/strict";
import type {
  Backend,
  DeviceBuffer,
  GemmAccelerator,
  ScaledFp8,
  Stream,
} from "../../backends/backend.ts";
import { encodeBf16, fromBf16Bits, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { DriverError, UnsupportedShapeError } from "../../backends/errors.ts";
import { setFallbackSink } from "../../backends/fallbacks.ts";
import { fromE4m3Bits } from "../../backends/fp8.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { fp8W8a8Rows } from "../../ops/cpu/fp8.ts";
import { loadLinearOps, type TimedMode } from "../../ops/gpu/linear.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import { randomArray } from "../support/numeric.ts";
import { readBf16, writeBf16 } from "../support/device.ts";
import { withFakeLinearOps } from "../support/fake_linear.ts";

const cpu = new CpuBackend();
const ops = cpuOps();
const stream = cpu.defaultStream;

/** `values` as bf16 in a new CPU buffer. */
const bf16Buffer = (values: ArrayLike<number>): DeviceBuffer => writeBf16(cpu, values);

function fp8Buffers(n: number, k: number): Fp8Weight {
  return { format: "fp8-e4m3", data: cpu.alloc(n * k), scales: cpu.alloc(4 * n), scratch: null };
}

/** An FP8 weight [n, k] in `gpu` memory with a scratch of `scratchBytes`, or `scratch` itself. */
function gpuFp8(
  gpu: Pick<Backend, "alloc">,
  n: number,
  k: number,
  scratch: number | DeviceBuffer,
): Fp8Weight {
  return {
    format: "fp8-e4m3",
    data: gpu.alloc(n * k),
    scales: gpu.alloc(4 * n),
    scratch: typeof scratch === "number" ? gpu.alloc(scratch) : scratch,
  };
}

function codesOf(weight: Fp8Weight, count: number): Uint8Array {
  const out = new Uint8Array(count);
  cpu.copyToHost(out, weight.data);
  return out;
}

function scalesOf(weight: Fp8Weight, n: number): Float32Array {
  const out = new Float32Array(n);
  cpu.copyToHost(new Uint8Array(out.buffer), weight.scales);
  return out;
}

Deno.test("quantizeFp8 (CPU): closed-form codes and scales", () => {
  // Row 0: amax 3.5 → scale 3.5/448 = 2^-7, so codes are the values times 128.
  // Row 1: all zeros → scale 1, codes 0. Row 2: amax 448 → scale 1, codes are the values.
  const k = 4;
  const w = bf16Buffer([3.5, -1.75, 0.5, 2 ** -15, 0, 0, 0, -0, 448, -0.25, 1.5, 2 ** -9]);
  const q = fp8Buffers(3, k);
  ops.quantizeFp8(q, w, 3, k, stream);
  assert.deepEqual(Array.from(scalesOf(q, 3)), [2 ** -7, 1, 1]);
  assert.deepEqual(Array.from(codesOf(q, 3 * k)), [
    0x7e, // 448
    0xf6, // -224 = -1.75·2^7
    0x68, // 64 = 2^6: exponent 6 + 7 = 13
    0x02, // 2^-8 = 2 subnormal steps of 2^-9
    0x00,
    0x00,
    0x00,
    0x80, // -0 keeps its sign
    0x7e,
    0xa8, // -0.25
    0x3c, // 1.5
    0x01, // 2^-9, the smallest subnormal
  ]);
});

Deno.test("quantizeFp8 (CPU): random rows round-trip within half an E4M3 step", () => {
  const n = 8, k = 96;
  const values = randomArray(n * k, 7, -2, 2);
  for (let j = 0; j < n; j++) values[j * k + j] = (j + 1) * 3; // a distinct amax per row
  const w = bf16Buffer(values);
  const bf16 = readBf16(cpu, w, n * k);
  const q = fp8Buffers(n, k);
  ops.quantizeFp8(q, w, n, k, stream);
  const codes = codesOf(q, n * k), scales = scalesOf(q, n);
  for (let j = 0; j < n; j++) {
    assert.equal(scales[j], Math.fround((j + 1) * 3 / 448), `row ${j} scale`);
    for (let i = 0; i < k; i++) {
      const original = bf16[j * k + i], back = fromE4m3Bits(codes[j * k + i]) * scales[j];
      const bound = Math.max(Math.abs(original) * 2 ** -4, scales[j] * 2 ** -10) * (1 + 1e-6);
      assert.ok(Math.abs(back - original) <= bound, `[${j}, ${i}]: ${original} → ${back}`);
    }
  }
});

Deno.test("dequantizeFp8 (CPU): bf16(scale · e4m3(code)) for every code", () => {
  const k = 256, n = 2;
  const q = fp8Buffers(n, k);
  const codes = new Uint8Array(n * k);
  for (let i = 0; i < n * k; i++) codes[i] = i & 0xff;
  cpu.copyToDevice(q.data, codes);
  cpu.copyToDevice(q.scales, new Uint8Array(Float32Array.of(0.5, 3e-3).buffer));
  const out = cpu.alloc(2 * n * k);
  ops.dequantizeFp8(out, q, n, k, stream);
  const got = readBf16(cpu, out, n * k);
  for (let i = 0; i < n * k; i++) {
    const scale = i < k ? 0.5 : Math.fround(3e-3);
    const want = fromBf16Bits(toBf16Bits(Math.fround(scale * fromE4m3Bits(i & 0xff))));
    if (Number.isNaN(want)) assert.ok(Number.isNaN(got[i]), `code ${i & 0xff} is NaN`);
    else assert.ok(Object.is(got[i], want), `[${i >> 8}, ${i & 0xff}]: ${got[i]} vs ${want}`);
  }
});

Deno.test("linear (CPU) on an FP8 weight: scale · Σ x · e4m3(W), for M from 1 to 20", () => {
  const n = 9, k = 37;
  const q = fp8Buffers(n, k);
  const codes = new Uint8Array(n * k);
  // Every finite code appears, subnormals included.
  for (let i = 0; i < n * k; i++) {
    codes[i] = (i * 7) % 256 === 0x7f || (i * 7) % 256 === 0xff ? 0x38 : (i * 7) % 256;
  }
  cpu.copyToDevice(q.data, codes);
  const scales = Float32Array.from({ length: n }, (_, j) => Math.fround(0.01 * (j + 1)));
  cpu.copyToDevice(q.scales, new Uint8Array(scales.buffer));
  for (const m of [1, 2, 5, 17, 20]) {
    const xValues = randomArray(m * k, 100 + m);
    const x = bf16Buffer(xValues), xb = readBf16(cpu, x, m * k);
    const out = cpu.alloc(2 * m * n);
    cpu.memset(out, 0xff);
    ops.linear(out, x, q, m, n, k, stream);
    const got = readBf16(cpu, out, m * n);
    for (let r = 0; r < m; r++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let i = 0; i < k; i++) sum += xb[r * k + i] * fromE4m3Bits(codes[j * k + i]);
        const want = scales[j] * sum;
        const bound = 2 ** -8 * Math.abs(want) + 1e-6;
        assert.ok(
          Math.abs(got[r * n + j] - want) <= bound,
          `m=${m} [${r}, ${j}]: ${got[r * n + j]} vs ${want}`,
        );
      }
    }
  }
});

/** A CPU FP8 weight holding `codes` and `scales`. */
function fp8Weight(codes: Uint8Array, scales: Float32Array, n: number, k: number): Fp8Weight {
  const q = fp8Buffers(n, k);
  cpu.copyToDevice(q.data, codes);
  cpu.copyToDevice(q.scales, new Uint8Array(scales.buffer));
  return q;
}

/** Seeded finite E4M3 codes (NaN codes replaced by 1.0). */
function randomCodes(count: number, seed: number): Uint8Array {
  const r = randomArray(count, seed);
  return Uint8Array.from(r, (v) => {
    const code = Math.floor((v + 1) * 128) & 0xff;
    return (code & 0x7f) === 0x7f ? 0x38 : code;
  });
}

Deno.test("W8A8 reference (CPU): x rows that E4M3 holds exactly give the W8A16 product bit for bit", () => {
  // Row r of x is 2^(r-3) · e4m3(code) with 448 (code 0x7e) in it: its scale is exactly
  // 2^(r-3), every value quantizes back to its own code, and the W8A8 sum equals W8A16's.
  const m = 6, n = 11, k = 48;
  const q = fp8Weight(
    randomCodes(n * k, 3),
    Float32Array.from({ length: n }, (_, j) => Math.fround(0.003 * (j + 1))),
    n,
    k,
  );
  const xCodes = randomCodes(m * k, 4);
  const xs = new Float64Array(m * k);
  for (let r = 0; r < m; r++) {
    xCodes[r * k + (r * 5) % k] = 0x7e | (r & 1 ? 0x80 : 0); // ±448: the row's amax
    for (let i = 0; i < k; i++) xs[r * k + i] = 2 ** (r - 3) * fromE4m3Bits(xCodes[r * k + i]);
  }
  const xBits = encodeBf16(xs);
  assert.deepEqual(Array.from(xBits, fromBf16Bits), Array.from(xs), "x is exact in bf16");
  const got = new Uint16Array(m * n);
  fp8W8a8Rows(got, xBits, q, m, n, k);
  const out = cpu.alloc(2 * m * n);
  ops.linear(out, bf16Buffer(xs), q, m, n, k, stream);
  assert.deepEqual(got, new Uint16Array(out.host!.buffer, out.host!.byteOffset, m * n));
});

Deno.test("W8A8 reference (CPU): random x within the per-token quantization bound of W8A16", () => {
  // Quantizing x moves each value by at most half an E4M3 step: 2^-4 of it for normal codes,
  // xScale · 2^-10 in the subnormal range; the bound sums those against |W|, plus a bf16 ulp of
  // each side. The two must also differ somewhere, or x was not quantized at all.
  const m = 7, n = 13, k = 64;
  const wCodes = randomCodes(n * k, 8);
  const wScales = Float32Array.from({ length: n }, (_, j) => Math.fround(0.01 + 0.001 * j));
  const q = fp8Weight(wCodes, wScales, n, k);
  const x = randomArray(m * k, 9).map((v, i) => v * (1 + (i % 5)));
  const xBits = encodeBf16(x), xb = Array.from(xBits, fromBf16Bits);
  const got = new Uint16Array(m * n);
  fp8W8a8Rows(got, xBits, q, m, n, k);
  let differs = false;
  for (let r = 0; r < m; r++) {
    const row = xb.slice(r * k, (r + 1) * k);
    const xScale = Math.max(...row.map(Math.abs)) / 448;
    for (let j = 0; j < n; j++) {
      let exact = 0, slack = 0;
      for (let i = 0; i < k; i++) {
        const w = wScales[j] * fromE4m3Bits(wCodes[j * k + i]);
        exact += row[i] * w;
        slack += (2 ** -4 * Math.abs(row[i]) + xScale * 2 ** -10) * Math.abs(w);
      }
      const value = fromBf16Bits(got[r * n + j]);
      const bound = slack + 2 ** -8 * (Math.abs(exact) + Math.abs(value)) + 1e-6;
      assert.ok(Math.abs(value - exact) <= bound, `[${r}, ${j}]: ${value} vs ${exact} ± ${bound}`);
      if (fromBf16Bits(toBf16Bits(exact)) !== value) differs = true;
    }
  }
  assert.ok(differs, "W8A8 equals the unquantized product everywhere: x was not quantized");
});

Deno.test("FP8 ops (CPU): bad sizes throw RangeError naming the op and the argument", () => {
  const q = fp8Buffers(4, 16), w = cpu.alloc(2 * 4 * 16), x = cpu.alloc(2 * 16), out = cpu.alloc(8);
  const cases: [string, () => void, RegExp][] = [
    ["quantize n = 0", () => ops.quantizeFp8(q, w, 0, 16, stream), /^quantizeFp8: n = 0/],
    [
      "quantize data too small",
      () => ops.quantizeFp8(q, w, 5, 16, stream),
      /^quantizeFp8: the bf16 weight holds/,
    ],
    [
      "dequantize k too big",
      () => ops.dequantizeFp8(w, q, 4, 17, stream),
      /^dequantizeFp8: the bf16 weight holds/,
    ],
    [
      "linear scales too small",
      () => ops.linear(out, x, { ...q, scales: cpu.alloc(12) }, 1, 4, 16, stream),
      /^linear: the FP8 weight's scales hold 12 bytes, but 4 rows need 16/,
    ],
    [
      "linear data too small",
      () => ops.linear(cpu.alloc(10), x, q, 1, 5, 16, stream),
      /^linear: the FP8 weight's data holds 64 bytes/,
    ],
  ];
  for (const [what, run, message] of cases) {
    assert.throws(run, (e: Error) => e instanceof RangeError && message.test(e.message), what);
  }
  assert.equal(ops.fp8ScratchBytes(4096, 4096), 0, "the CPU needs no scratch");
});

// ---------------------------------------------------------------------------------------------
// GPU dispatch on the fake drivers.

Deno.test("linear on FP8 weights (fake CUDA driver): GEMV geometry and arguments, dequantize + GEMM above 16 rows", async () => {
  await withFakeLinearOps(false, [8, 0], (gpu, gops, fake) => {
    const n = 4096, k = 4096;
    const weight = gpuFp8(gpu, n, k, gops.fp8ScratchBytes(n, k));
    assert.equal(weight.scratch!.bytes, 2 * n * k);
    const x = gpu.alloc(2 * 64 * k + 16), out = gpu.alloc(2 * 64 * n);
    const s = gpu.createStream();
    // [m, n, k, kernel, blocks, split]: 4096 rows = 256 groups of 16 >= 132 SMs → r16; K = 4096
    // is 16 steps of 256 → split 8, 16 rows per block. 1024 rows → r8, K 8 steps of 512.
    const gemvs: [number, number, number, string, number, number][] = [
      [1, 4096, 4096, "linear_fp8_gemv_t8_r16_s2", 256, 8],
      [8, 4096, 4096, "linear_fp8_gemv_t8_r16_s2", 256, 8],
      [9, 4096, 4096, "linear_fp8_gemv_t16_r16", 256, 8],
      [16, 1024, 4096, "linear_fp8_gemv_t16_r8", 128, 8],
      // K = 512: one step of 512 (8 rows) → split 1, 64 rows per block.
      [1, 100, 512, "linear_fp8_gemv_t8_r8_s2", 2, 1],
    ];
    fake.setParamSizes([8, 8, 8, 8, 4, 4, 4, 4]);
    for (const [m, nn, kk, kernel, blocks, split] of gemvs) {
      const what = `m=${m} n=${nn} k=${kk}`;
      gops.linear(out, x, weight, m, nn, kk, s);
      const launch = fake.lastLaunch();
      assert.equal(launch.functionName, kernel, what);
      assert.deepEqual(launch.grid, [blocks, 1, 1], `${what}: grid`);
      assert.deepEqual(launch.block, [256, 1, 1], `${what}: block`);
      const args = new DataView(launch.args.buffer, launch.args.byteOffset);
      assert.deepEqual(
        [0, 8, 16, 24].map((o) => args.getBigUint64(o, true)),
        [out, x, weight.data, weight.scales].map((b) => BigInt(b.ptr)),
        `${what}: out, x, data, scales`,
      );
      assert.deepEqual([32, 36, 40, 44].map((o) => args.getInt32(o, true)), [m, nn, kk, split]);
    }
    // M = 17: the dequantize kernel, then the bf16 GEMM reading the scratch.
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    const before = fake.launchCount();
    gops.linear(out, x, weight, 17, n, k, s);
    assert.equal(fake.launchCount() - before, 2, "two launches");
    const gemm = fake.lastLaunch();
    assert.equal(gemm.functionName, "linear_gemm_64x64");
    const args = new DataView(gemm.args.buffer, gemm.args.byteOffset);
    assert.equal(
      args.getBigUint64(16, true),
      BigInt(weight.scratch!.ptr),
      "the GEMM reads the scratch",
    );
    // A K that is not a multiple of 16 takes the dequantize path even for one row.
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    gops.linear(out, x, weight, 1, 64, 40, s);
    assert.notEqual(fake.lastLaunch().functionName.startsWith("linear_fp8_gemv"), true);
    // No scratch: a clear error instead of a launch.
    assert.throws(
      () => gops.linear(out, x, { ...weight, scratch: null }, 17, n, k, s),
      /needs a bf16 scratch of 33554432 bytes, but it has none; size it with fp8ScratchBytes/,
    );
    fake.setParamSizes([8, 8, 8, 4, 4]);
    gops.quantizeFp8(weight, gpu.alloc(2 * n * k), n, k, s);
    assert.equal(fake.lastLaunch().functionName, "linear_fp8_quantize");
    assert.deepEqual(fake.lastLaunch().grid, [4096, 1, 1]);
  });
});

Deno.test("linear on FP8 weights (fake HIP driver): the portable GEMV, dequantize above 16 rows", async () => {
  await withFakeLinearOps(true, [9, 0], (gpu, gops, fake) => {
    const n = 1024, k = 1024;
    const weight = gpuFp8(gpu, n, k, 2 * n * k);
    const x = gpu.alloc(2 * 32 * k), out = gpu.alloc(2 * 32 * n);
    const s = gpu.createStream();
    fake.setParamSizes([8, 8, 8, 8, 4, 4, 4, 4]);
    gops.linear(out, x, weight, 4, n, k, s);
    assert.equal(fake.lastLaunch().functionName, "linear_fp8_gemv_t8_r8_s2");
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    gops.linear(out, x, weight, 32, n, k, s);
    assert.equal(fake.lastLaunch().functionName, "linear_gemm_fma");
  });
});

// ---------------------------------------------------------------------------------------------
// W8A8 dispatch on the fake CUDA driver, with a stand-in vendor library.

/** One gemmFp8 call as the stand-in library saw it. */
interface Fp8Call {
  out: DeviceBuffer;
  x: ScaledFp8;
  weight: ScaledFp8;
  mnk: [number, number, number];
}

/** A GemmAccelerator with only the FP8 matmul, recording its calls; `refuse` makes it refuse. */
function fp8Library(): GemmAccelerator & { calls: Fp8Call[]; tuned: number; refuse: boolean } {
  const lib = {
    name: "stand-in Lt",
    calls: [] as Fp8Call[],
    tuned: 0,
    refuse: false,
    gemm(): void {
      throw new UnsupportedShapeError(
        new DriverError("cuda", "cublasLtMatmul", 15, "CUBLAS_STATUS_NOT_SUPPORTED", "bf16: no"),
      );
    },
    gemmFp8(
      out: DeviceBuffer,
      x: ScaledFp8,
      weight: ScaledFp8,
      m: number,
      n: number,
      k: number,
      _stream: Stream,
    ): void {
      if (lib.refuse) {
        throw new UnsupportedShapeError(
          new DriverError("cuda", "cublasLtMatmulAlgoGetHeuristic", 15, "NOT_SUPPORTED", "no"),
        );
      }
      lib.calls.push({ out, x, weight, mnk: [m, n, k] });
    },
    tuneFp8(): void {
      lib.tuned++;
    },
    close(): void {},
  };
  return lib;
}

/** `gpu` with `library` as its vendor GEMM library (methods still run on `gpu` itself). */
function withLibrary(gpu: Backend, library: GemmAccelerator): Backend {
  return new Proxy(gpu, {
    get(target, key) {
      if (key === "gemmAccelerator") return library;
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("W8A8 (fake CUDA driver): x quantized per token into the scratch, then the library's FP8 matmul", async () => {
  await withFakeLinearOps(false, [9, 0], async (gpu, _ops, fake) => {
    const lib = fp8Library();
    const gops = await loadLinearOps(withLibrary(gpu, lib));
    const n = 1024, k = 4096, m = 64;
    const scratch = gpu.alloc(Math.max(2 * n * k, 4 * 65536 + m * k));
    const weight = gpuFp8(gpu, n, k, scratch);
    const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
    const s = gpu.createStream();
    fake.setParamSizes([8, 8, 8, 4, 4]);
    assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, s, "library"), true);
    const launch = fake.lastLaunch();
    assert.equal(launch.functionName, "linear_fp8_quantize");
    assert.deepEqual(launch.grid, [m, 1, 1]);
    const args = new DataView(launch.args.buffer, launch.args.byteOffset);
    // Scales for up to 65536 tokens at the scratch's start, the codes after them.
    const codesAt = scratch.ptr + 4 * 65536;
    assert.deepEqual(
      [0, 8, 16].map((o) => Number(args.getBigUint64(o, true))),
      [codesAt, scratch.ptr, x.ptr],
      "codes, scales, x",
    );
    assert.deepEqual([24, 28].map((o) => args.getInt32(o, true)), [m, k]);
    assert.equal(lib.calls.length, 1);
    const call = lib.calls[0];
    assert.equal(call.out, out);
    assert.equal(call.weight, weight);
    assert.deepEqual(call.mnk, [m, n, k]);
    assert.deepEqual([call.x.data.ptr, call.x.scales.ptr], [codesAt, scratch.ptr]);
    // Not prepared: linear dequantizes (two launches) and never calls the library.
    assert.equal(gops.fp8PrefillPath(m, n, k), "dequantize");
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    const before = fake.launchCount();
    gops.linear(out, x, weight, m, n, k, s);
    assert.equal(fake.launchCount() - before, 2);
    assert.equal(lib.calls.length, 1, "linear took the dequantizing path");
    // Where W8A8 can't run, false and no launch: K % 16 != 0, a scratch too small.
    const launches = fake.launchCount();
    assert.equal(gops.fp8W8a8(out, x, weight, m, n, 40, s, "library"), false, "K = 40");
    const small = { ...weight, scratch: scratch.slice(0, 4 * 65536 + m * k - 1) };
    assert.equal(
      gops.fp8W8a8(out, x, small, m, n, k, s, "library"),
      false,
      "scratch one byte short",
    );
    assert.equal(fake.launchCount(), launches);
    // A refusal: false, reported once however often it happens.
    const lines: string[] = [];
    const previous = setFallbackSink((line) => lines.push(line));
    try {
      lib.refuse = true;
      fake.setParamSizes([8, 8, 8, 4, 4]);
      assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, s, "library"), false);
      fake.setParamSizes([8, 8, 8, 4, 4]);
      assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, s, "library"), false);
    } finally {
      setFallbackSink(previous);
    }
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /stand-in Lt refused an FP8 linear shape.*dequantized to bf16/);
  });
});

Deno.test("W8A8 (fake CUDA driver, sm_90): via Denali's wgmma GEMM, the FP8 tile kernel with per-row scales", async () => {
  // swapAb never: the 128×128 tiles at 64 rows (the default, timed, takes the swapped ones below).
  await withFakeLinearOps(
    false,
    [9, 0],
    (gpu, gops, fake) => {
      const n = 1024, k = 4096, m = 64;
      const scratch = gpu.alloc(Math.max(2 * n * k, 4 * 65536 + m * k));
      const weight = gpuFp8(gpu, n, k, scratch);
      const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
      const s = gpu.createStream();
      fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 8, 8]);
      const before = fake.launchCount();
      assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, s, "wgmma"), true);
      assert.equal(fake.launchCount() - before, 2, "quantize x, then the GEMM");
      const launch = fake.lastLaunch();
      // 64×1024 makes 4 tiles of 128×256 (far from 0.9 of 132 SMs): 128×128, 8 tiles, K split
      // in 8 (32 k tiles of 128 codes, at least 4 a slice, about one block per SM).
      assert.equal(launch.functionName, "linear_wgmma_fp8_128x128");
      assert.deepEqual(launch.grid, [64, 1, 1]);
      assert.deepEqual(launch.block, [256, 1, 1]);
      const args = new DataView(launch.args.buffer, launch.args.byteOffset);
      const codesAt = scratch.ptr + 4 * 65536;
      assert.deepEqual(
        [0, 8, 16, 24, 32].map((o) => Number(args.getBigUint64(o, true))),
        [out.ptr, codesAt, weight.data.ptr, scratch.ptr, weight.scales.ptr],
        "out, x codes, W codes, x scales, W scales",
      );
      assert.deepEqual([40, 44, 48, 52].map((o) => args.getInt32(o, true)), [m, n, k, 8]);
      // Unaligned codes or K % 16 != 0: no wgmma, no launch.
      const launches = fake.launchCount();
      const odd = { ...weight, data: gpu.alloc(n * k + 16).slice(8, n * k) };
      assert.equal(gops.fp8W8a8(out, x, odd, m, n, k, s, "wgmma"), false, "codes 8 bytes in");
      assert.equal(gops.fp8W8a8(out, x, weight, m, n, 40, s, "wgmma"), false, "K = 40");
      assert.equal(fake.launchCount(), launches);
    },
    {},
    { swapAb: "never" },
  );
});

Deno.test("W8A8 (fake CUDA driver, sm_90, swapAb): up to 64 rows on the swapped-operand FP8 tiles", async () => {
  const launched = async (swapAb: TimedMode, m: number) => {
    let got: { name: string; grid: number[]; shared: number; split: number } | null = null;
    await withFakeLinearOps(
      false,
      [9, 0],
      (gpu, gops, fake) => {
        const n = 4096, k = 4096;
        const scratch = gpu.alloc(Math.max(2 * n * k, 4 * 65536 + 128 * k));
        const weight = gpuFp8(gpu, n, k, scratch);
        const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
        fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 8, 8]);
        assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, gpu.createStream(), "wgmma"), true);
        const launch = fake.lastLaunch();
        const args = new DataView(launch.args.buffer, launch.args.byteOffset);
        got = {
          name: launch.functionName,
          grid: launch.grid,
          shared: launch.sharedMem,
          split: args.getInt32(52, true),
        };
      },
      {},
      { swapAb },
    );
    return got!;
  };
  // 32 tiles of 128 W rows; K = 2048 pairs of codes (32 k tiles): split min(264 / 32, 32 / 4) = 8.
  assert.deepEqual(await launched("always", 64), {
    name: "linear_wgmma_fp8_swap_128x64",
    grid: [256, 1, 1],
    shared: 99328,
    split: 8,
  });
  assert.deepEqual(await launched("timed", 20), {
    name: "linear_wgmma_fp8_swap_128x32",
    grid: [256, 1, 1],
    shared: 103424,
    split: 8,
  });
  // Past 64 rows, or with swapAb never: the 128×128 tiles (1 row tile × 32, split 4).
  assert.equal((await launched("always", 65)).name, "linear_wgmma_fp8_128x128");
  assert.deepEqual(await launched("never", 64), {
    name: "linear_wgmma_fp8_128x128",
    grid: [128, 1, 1],
    shared: 197632,
    split: 4,
  });
});

Deno.test("W8A8 (fake CUDA driver, sm_80): no wgmma GEMM", async () => {
  await withFakeLinearOps(false, [8, 0], (gpu, gops) => {
    const n = 256, k = 512, m = 32;
    const weight = gpuFp8(gpu, n, k, 4 * 65536 + 2 * n * k);
    const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
    assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, gpu.createStream(), "wgmma"), false);
  });
});

Deno.test("W8A8 (fake CUDA driver): prepareLinear times FP8 shapes above the GEMVs' 16 rows only", async () => {
  await withFakeLinearOps(false, [9, 0], async (gpu, _ops, fake) => {
    const lib = fp8Library();
    const gops = await loadLinearOps(withLibrary(gpu, lib));
    const s = gpu.createStream();
    // The frozen clock times every path at 0 ms, so W8A8 (which must be strictly faster) loses:
    // what this checks is which shapes are timed, and that the library tunes each once.
    fake.freezeClock(true);
    const lines: string[] = [];
    const previous = setFallbackSink((line) => lines.push(line));
    try {
      fake.setParamSizes([8, 8, 8, 4, 4, 4]);
      gops.prepareLinear([
        { m: 16, n: 256, k: 512, fp8: true }, // a GEMV's: not timed for W8A8
        { m: 64, n: 256, k: 512, fp8: true },
        { m: 64, n: 256, k: 1024 }, // bf16
      ], s);
    } finally {
      setFallbackSink(previous);
      fake.freezeClock(false);
    }
    assert.equal(lib.tuned, 1, "one FP8 shape tuned");
    // One run after tuning, then two timings of a warm-up and 5 samples each.
    assert.deepEqual(lib.calls.map((c) => c.mnk), Array(13).fill([64, 256, 512]));
    assert.equal(gops.fp8PrefillPath(64, 256, 512), "dequantize", "not faster than dequantizing");
    assert.throws(
      () => gops.prepareLinear([{ m: 64, n: 256, k: 512, fp8: 1 as unknown as boolean }], s),
      /prepareLinear: a shape's fp8 must be a boolean when given, got number/,
    );
  });
});

Deno.test("W8A8 (fake HIP driver): no vendor FP8 matmul, so never W8A8", async () => {
  await withFakeLinearOps(true, [9, 0], (gpu, gops) => {
    const n = 256, k = 512, m = 32;
    const weight = gpuFp8(gpu, n, k, 4 * 65536 + 2 * n * k);
    const x = gpu.alloc(2 * m * k), out = gpu.alloc(2 * m * n);
    assert.equal(gops.fp8W8a8(out, x, weight, m, n, k, gpu.createStream(), "library"), false);
  });
});
