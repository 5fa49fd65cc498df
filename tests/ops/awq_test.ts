/**
 * 4-bit (AWQ/GPTQ) weights: the AutoAWQ packing order against words packed by hand, the
 * conversion to Denali's row layout, the CPU reference (ops/cpu/awq.ts: `dequantizeAwq` and
 * `linear` on an AwqWeight) against closed-form sums, the argument checks, and the GPU
 * launchers' dispatch on the fake CUDA and HIP drivers.
 *
 * Exactness. (q − z) · s is exact in f32 for a 4-bit q and z and an f16-born s, and the CPU sums
 * in double before one bf16 rounding; with power-of-two scales and small-integer inputs every
 * sum here is exact, so the closed-form cases compare bit for bit.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import {
  AWQ_PACK_ORDER,
  awqCodesToRows,
  codeAt,
  groupsToRows,
  packAwq,
  packRows,
  plainWordToCodes,
  unpackAwq,
} from "../../backends/awq.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { type AwqWeight, weightRows } from "../../ops/linear_weight.ts";
import { readBf16, writeBf16 } from "../support/device.ts";
import { withFakeLinearOps } from "../support/fake_linear.ts";
import { rng } from "../support/numeric.ts";

const cpu = new CpuBackend();
const ops = cpuOps();
const stream = cpu.defaultStream;

/** `values` as bf16 in a new CPU buffer. */
const bf16Buffer = (values: ArrayLike<number>): DeviceBuffer => writeBf16(cpu, values);

/** An AwqWeight on the CPU from int4 values q[n, k], zeros and scales [n, k / g]. */
function awqWeight(
  q: Uint8Array,
  zeros: ArrayLike<number>,
  scales: ArrayLike<number>,
  n: number,
  k: number,
  groupSize: number,
): AwqWeight {
  const codes = packRows(q, n, k);
  const weight: AwqWeight = {
    format: "awq-int4",
    codes: cpu.alloc(codes.byteLength),
    zeros: cpu.alloc(zeros.length),
    scales: cpu.alloc(4 * scales.length),
    groupSize,
    scratch: null,
  };
  cpu.copyToDevice(weight.codes, new Uint8Array(codes.buffer));
  cpu.copyToDevice(weight.zeros, Uint8Array.from(zeros));
  cpu.copyToDevice(weight.scales, new Uint8Array(Float32Array.from(scales).buffer));
  return weight;
}

Deno.test("AWQ packing: a word packed by hand (columns 0, 2, 4, 6, 1, 3, 5, 7 from the low nibble)", () => {
  // Columns 0..7 hold 1..8. AutoAWQ puts column order[i] in nibble i, so from the high nibble
  // down: col 7 (8), col 5 (6), col 3 (4), col 1 (2), col 6 (7), col 4 (5), col 2 (3), col 0 (1).
  const values = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  assert.deepEqual([...AWQ_PACK_ORDER], [0, 2, 4, 6, 1, 3, 5, 7]);
  assert.equal(packAwq(values, 1, 8)[0] >>> 0, 0x86427531);
  assert.deepEqual([...unpackAwq(Int32Array.of(0x86427531 | 0), 1, 8)], [...values]);
  // A second word with 15s (the sign bit of the int32) round-trips too.
  const high = Uint8Array.of(15, 0, 15, 0, 9, 12, 3, 15);
  assert.deepEqual([...unpackAwq(packAwq(high, 1, 8), 1, 8)], [...high]);
});

Deno.test("AWQ → Denali rows: qweight [k, n/8] becomes per-output-row codes, k interleaved", () => {
  const k = 16, n = 16;
  const q = new Uint8Array(k * n); // q[k][n], the checkpoint's orientation
  for (let kk = 0; kk < k; kk++) for (let c = 0; c < n; c++) q[kk * n + c] = (3 * kk + 5 * c) % 16;
  const codes = new Uint32Array((n + 8) * k / 8);
  // Placed at output row 8 of a 24-row slot, as the second part of a fused weight.
  awqCodesToRows(packAwq(q, k, n), k, n, codes, 8);
  for (let c = 0; c < n; c++) {
    for (let kk = 0; kk < k; kk++) {
      assert.equal(codeAt(codes, k, 8 + c, kk), q[kk * n + c], `W[${c}, ${kk}]`);
    }
  }
  for (let i = 0; i < 8 * k / 8; i++) assert.equal(codes[i], 0, "rows before the offset untouched");
  // Word 0 of row 8 (n = 0): k = 0..7 → q = 0, 3, 6, 9, 12, 15, 2, 5, held k 0, 2, 4, 6, 1, 3,
  // 5, 7 from the low nibble up: 0, 6, 12, 2, 3, 9, 15, 5.
  assert.equal(codes[8 * k / 8] >>> 0, 0x5f932c60);
  // A GPTQ word (plain order along k) takes the same interleave.
  assert.equal(plainWordToCodes(0x52fc9630), 0x5f932c60);
  const scales = new Float32Array(2 * 3);
  groupsToRows([1, 2, 3, 4, 5, 6], 2, 3, scales, 0); // [groups 2, n 3] → [n 3, groups 2]
  assert.deepEqual([...scales], [1, 4, 2, 5, 3, 6]);
});

Deno.test("linear (CPU) on a 4-bit weight: closed-form sums over two groups", () => {
  // q[n, k] = (n + k) % 16, z = 8: 64 consecutive k cover four full cycles of 0..15, each
  // summing Σ(v − 8) = −8, so a group sums to −32 whatever n is.
  const n = 8, k = 128, g = 64;
  const q = new Uint8Array(n * k);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) q[r * k + c] = (r + c) % 16;
  const zeros = new Array(n * 2).fill(8);
  const scales = Array.from({ length: n * 2 }, (_, i) => (i % 2 === 0 ? 0.5 : 0.25));
  const weight = awqWeight(q, zeros, scales, n, k, g);
  // x row 0: all ones → −32·0.5 − 32·0.25 = −24. Row 1: 2 on group 1 only → 2·(−32)·0.25 = −16.
  // Row 2: x[k] = 1 at k = 5 only → (q[n, 5] − 8)·0.5 = ((n + 5) % 16 − 8) / 2.
  const x = new Float32Array(3 * k);
  x.fill(1, 0, k);
  x.fill(2, k + g, 2 * k);
  x[2 * k + 5] = 1;
  const out = cpu.alloc(2 * 3 * n);
  ops.linear(out, bf16Buffer(x), weight, 3, n, k, stream);
  const got = readBf16(cpu, out, 3 * n);
  for (let r = 0; r < n; r++) {
    assert.equal(got[r], -24, `row 0, n ${r}`);
    assert.equal(got[n + r], -16, `row 1, n ${r}`);
    assert.equal(got[2 * n + r], (((r + 5) % 16) - 8) / 2, `row 2, n ${r}`);
  }
});

Deno.test("dequantizeAwq (CPU) and linear: (q − z)·s per group, and linear equals bf16 linear on it", () => {
  const random = rng(7);
  const n = 24, k = 256, g = 128, groups = k / g;
  const q = Uint8Array.from({ length: n * k }, () => Math.floor(random(0, 16)));
  const zeros = Array.from({ length: n * groups }, () => Math.floor(random(0, 16)));
  // Powers of two: (q − z)·s is exact in bf16, so both paths see the same weights exactly.
  const scales = Array.from({ length: n * groups }, () => 2 ** -Math.floor(random(3, 9)));
  const weight = awqWeight(q, zeros, scales, n, k, g);
  const deq = cpu.alloc(2 * n * k);
  ops.dequantizeAwq(deq, weight, n, k, stream);
  const w = readBf16(cpu, deq, n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const at = r * groups + Math.floor(c / g);
      assert.equal(w[r * k + c], (q[r * k + c] - zeros[at]) * scales[at], `W[${r}, ${c}]`);
    }
  }
  // Small-integer x: every product and sum is exact, so the two agree bit for bit.
  for (const m of [1, 5, 17]) {
    const xs = Array.from({ length: m * k }, () => Math.floor(random(-4, 5)));
    const x = bf16Buffer(xs);
    const a = cpu.alloc(2 * m * n), b = cpu.alloc(2 * m * n);
    ops.linear(a, x, weight, m, n, k, stream);
    ops.linear(b, x, deq, m, n, k, stream);
    assert.deepEqual(readBf16(cpu, a, m * n), readBf16(cpu, b, m * n), `m = ${m}`);
    // Rows 8..23 through weightRows: the same outputs as columns 8..23 of the whole.
    const part = weightRows(weight, 8, 16, k);
    const c = cpu.alloc(2 * m * 16);
    ops.linear(c, x, part, m, 16, k, stream);
    const whole = readBf16(cpu, a, m * n), sliced = readBf16(cpu, c, m * 16);
    for (let r = 0; r < m; r++) {
      assert.deepEqual(sliced.slice(r * 16, r * 16 + 16), whole.slice(r * n + 8, r * n + 24));
    }
  }
});

Deno.test("4-bit ops (CPU): bad weights and sizes throw RangeError naming the problem", () => {
  const n = 8, k = 128;
  const weight = awqWeight(
    new Uint8Array(n * k),
    new Array(n).fill(0),
    new Array(n).fill(1),
    n,
    k,
    128,
  );
  const x = bf16Buffer(new Float32Array(k)), out = cpu.alloc(2 * n);
  assert.throws(
    () => ops.linear(out, x, { ...weight, groupSize: 32 }, 1, n, k, stream),
    /linear: the 4-bit weight's group size 32 is not supported; expected one of 64, 128/,
  );
  assert.throws(
    () => ops.linear(out, x, { ...weight, groupSize: 64 }, 1, n, 96, stream),
    /k = 96 is not a multiple of the group size 64/,
  );
  assert.throws(
    () => ops.linear(out, x, { ...weight, codes: cpu.alloc(16) }, 1, n, k, stream),
    /the 4-bit weight's codes hold 16 bytes, but \[n, k\] = 8×128 with group size 128 needs 512/,
  );
  assert.throws(
    () => ops.linear(out, x, { ...weight, scales: cpu.alloc(4) }, 1, n, k, stream),
    /the 4-bit weight's scales hold 4 bytes, .* needs 32 \(one f32 a group\)/,
  );
  assert.throws(
    () => ops.linear(out, x, { ...weight, zeros: cpu.alloc(1) }, 1, n, k, stream),
    /the 4-bit weight's zeros hold 1 bytes/,
  );
  assert.throws(
    () => ops.dequantizeAwq(cpu.alloc(10), weight, n, k, stream),
    /dequantizeAwq: the bf16 weight holds 10 bytes, but \[n, k\] = 8×128 bf16 needs 2048/,
  );
  assert.throws(() => ops.dequantizeAwq(cpu.alloc(2048), weight, 0, k, stream), /n = 0 must be/);
  assert.equal(ops.awqScratchBytes(n, k), 0);
});

// GPU dispatch on the fake drivers.

function gpuWeight(gpu: GpuBackend, n: number, k: number, scratch: boolean) {
  const weight: AwqWeight = {
    format: "awq-int4",
    codes: gpu.alloc(n * k / 2),
    zeros: gpu.alloc(n * k / 128),
    scales: gpu.alloc(4 * n * k / 128),
    groupSize: 128,
    scratch: scratch ? gpu.alloc(2 * n * k) : null,
  };
  return weight;
}

for (const hip of [false, true]) {
  const driver = hip ? "HIP" : "CUDA";
  const gemvRows = hip ? "up to 4 rows (portable GEMV)" : "up to 16 rows (tensor-core GEMVs)";
  Deno.test(`linear on 4-bit weights (fake ${driver} driver): GEMV ${gemvRows}, dequantize + GEMM above`, async () => {
    await withFakeLinearOps(hip, [hip ? 9 : 8, 0], (gpu, gops, fake) => {
      const n = 4096, k = 4096;
      const weight = gpuWeight(gpu, n, k, true);
      assert.equal(gops.awqScratchBytes(n, k), 2 * n * k);
      const x = gpu.alloc(2 * 128 * k + 16), out = gpu.alloc(2 * 128 * n);
      const s = gpu.createStream();
      // [m, kernel, grid, extra args]: HIP's portable GEMV takes 8 rows a block; CUDA's mma
      // GEMVs with 4096 rows = 256 groups of 16 >= 132 SMs take r16, and K = 4096 is 16 steps
      // of 256 → ksplit 8, one group of 16 rows a block.
      const gemvs: [number, string, number, number[]][] = hip
        ? [1, 2, 4].map((m) => [m, "linear_awq_gemv_t4", n / 8, []])
        : [
          ...[1, 2, 4, 8].map((m): [number, string, number, number[]] => [
            m,
            "linear_awq_gemv_t8_r16_s2_ps", // the post-scaled default (ops/gpu/awq.ts)
            n / 16,
            [8],
          ]),
          ...[9, 16].map((m): [number, string, number, number[]] => [
            m,
            "linear_awq_gemv_t16_r16",
            n / 16,
            [8],
          ]),
        ];
      for (const [m, kernel, blocks, extra] of gemvs) {
        fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, ...extra.map(() => 4)]);
        gops.linear(out, x, weight, m, n, k, s);
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, kernel, `m = ${m}`);
        assert.deepEqual(launch.grid, [blocks, 1, 1]);
        assert.deepEqual(launch.block, [256, 1, 1]);
        const args = new DataView(launch.args.buffer, launch.args.byteOffset);
        assert.deepEqual(
          [0, 8, 16, 24, 32].map((o) => args.getBigUint64(o, true)),
          [out, x, weight.codes, weight.zeros, weight.scales].map((b) => BigInt(b.ptr)),
        );
        const ints = [40, 44, 48, 52, 56].slice(0, 4 + extra.length);
        assert.deepEqual(ints.map((o) => args.getInt32(o, true)), [m, n, k, 128, ...extra]);
      }
      if (!hip) {
        // 1024 rows = 64 groups of 16 < 132 SMs → r8, and K = 512 is one step of 512 → ksplit
        // 1, 8 groups of 8 rows a block.
        fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 4]);
        gops.linear(out, x, weightRows(weight, 0, 1024, 512), 3, 1024, 512, s);
        assert.equal(fake.lastLaunch().functionName, "linear_awq_gemv_t8_r8_s2");
        assert.deepEqual(fake.lastLaunch().grid, [16, 1, 1]);
      }
      // Unaligned x: the dequantize path even for one row.
      fake.setParamSizes([8, 8, 8, 4, 4, 4]);
      const before = fake.launchCount();
      gops.linear(out, x.slice(2, 2 * k), weight, 1, n, k, s);
      assert.equal(fake.launchCount() - before, 2, "dequantize, then a bf16 linear");
      if (!hip) {
        // 17..48 rows: the GEMV over 16-row chunks, a launch a chunk (t16 for 16 rows, t8 for
        // the last few), each chunk's x and out 16 rows on.
        const chunked: [number, string[]][] = [
          [17, ["t16_r16", "t8_r16_s2_ps"]],
          [48, Array(3).fill("t16_r16")],
        ];
        for (const [m, kernels] of chunked) {
          const mark = fake.launchCount();
          fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 4]);
          gops.linear(out, x, weight, m, n, k, s);
          assert.equal(fake.launchCount() - mark, kernels.length, `m = ${m}: a launch a chunk`);
          const last = fake.lastLaunch();
          const args = new DataView(last.args.buffer, last.args.byteOffset);
          const r0 = 16 * (kernels.length - 1);
          assert.equal(last.functionName, `linear_awq_gemv_${kernels.at(-1)}`, `m = ${m}`);
          assert.deepEqual(
            [args.getBigUint64(0, true), args.getBigUint64(8, true)],
            [BigInt(out.ptr + 2 * r0 * n), BigInt(x.ptr + 2 * r0 * k)],
            `m = ${m}: the last chunk's out and x`,
          );
          assert.equal(
            args.getInt32(40, true),
            m - r0,
            `m = ${m}: the last chunk's rows`,
          );
        }
      }
      // Past the GEMVs' rows (and on CUDA past 48): dequantize into the scratch, then the bf16
      // GEMM reading it.
      for (const m of hip ? [5, 17] : [49, 64]) {
        fake.setParamSizes([8, 8, 8, 4, 4, 4]);
        const mark = fake.launchCount();
        gops.linear(out, x, weight, m, n, k, s);
        assert.equal(fake.launchCount() - mark, 2, `m = ${m}: two launches`);
        const gemm = fake.lastLaunch();
        assert.ok(!gemm.functionName.startsWith("linear_awq_gemv"), gemm.functionName);
        const gemmArgs = new DataView(gemm.args.buffer, gemm.args.byteOffset);
        assert.equal(
          gemmArgs.getBigUint64(16, true),
          BigInt(weight.scratch!.ptr),
          `m = ${m}: reads the scratch`,
        );
      }
      assert.throws(
        () => gops.linear(out, x, { ...weight, scratch: null }, hip ? 17 : 49, n, k, s),
        new RegExp(
          `more than ${hip ? 4 : 48} rows of x needs a bf16 scratch of 33554432 bytes, but it ` +
            "has none; size it with awqScratchBytes",
        ),
      );
      gops.dequantizeAwq(weight.scratch!, weight, n, k, s);
      assert.equal(fake.lastLaunch().functionName, "linear_awq_dequantize");
      assert.deepEqual(fake.lastLaunch().grid, [4096, 1, 1]);
    });
  });
}

Deno.test("linear on 4-bit weights (fake CUDA driver, awqGemmMaxM 256): the W4A16 GEMM from 17 to 256 rows, then dequantize + GEMM", async () => {
  await withFakeLinearOps(
    false,
    [8, 0],
    (gpu, gops, fake) => {
      const n = 4096, k = 4096;
      const weight = gpuWeight(gpu, n, k, true);
      const x = gpu.alloc(2 * 300 * k + 16), out = gpu.alloc(2 * 300 * n);
      const s = gpu.createStream();
      // 64×64 tiles, 128 threads, 4 stages of 16 KiB; no dequantize launch.
      for (const m of [17, 64, 100, 256]) {
        fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4]);
        const mark = fake.launchCount();
        gops.linear(out, x, weight, m, n, k, s);
        assert.equal(fake.launchCount() - mark, 1, `m = ${m}: one launch`);
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, "linear_awq_gemm_64x64", `m = ${m}`);
        assert.deepEqual(launch.grid, [Math.ceil(m / 64) * (n / 64), 1, 1]);
        assert.deepEqual(launch.block, [128, 1, 1]);
        assert.equal(launch.sharedMem, 65536);
        const args = new DataView(launch.args.buffer, launch.args.byteOffset);
        assert.deepEqual(
          [0, 8, 16, 24, 32].map((o) => args.getBigUint64(o, true)),
          [out, x, weight.codes, weight.zeros, weight.scales].map((b) => BigInt(b.ptr)),
        );
        assert.deepEqual([40, 44, 48, 52].map((o) => args.getInt32(o, true)), [m, n, k, 128]);
      }
      // Unaligned x, and past 256 rows: dequantize, then a bf16 linear.
      for (const [m, xs] of [[64, x.slice(2, 2 * 64 * k)], [257, x]] as const) {
        fake.setParamSizes([8, 8, 8, 4, 4, 4]);
        const mark = fake.launchCount();
        gops.linear(out, xs, weight, m, n, k, s);
        assert.equal(fake.launchCount() - mark, 2, `m = ${m}: dequantize, then a bf16 linear`);
      }
      assert.throws(
        () => gops.linear(out, x, { ...weight, scratch: null }, 257, n, k, s),
        /more than 256 rows of x needs a bf16 scratch of 33554432 bytes/,
      );
      // awqGemm runs it whatever M past the GEMVs' rows, and refuses within them.
      fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4]);
      assert.equal(gops.awqGemm(out, x, weight, 300, n, k, s), true);
      assert.equal(fake.lastLaunch().functionName, "linear_awq_gemm_64x64");
      assert.equal(gops.awqGemm(out, x, weight, 16, n, k, s), false);
    },
    {},
    { awqGemmMaxM: 256 },
  );
});

// [variant, split forced or undefined, kernel, split launched, grid for N = 28672 (1792 groups of
// 16 rows) on `sms` SMs]: a persistent variant caps its grid at 2 blocks an SM.
const VARIANT_CASES = [
  ["s2", undefined, "linear_awq_gemv_t8_r16_s2", 8, () => 28672 / 16],
  ["s3", 2, "linear_awq_gemv_t8_r16_s3", 2, () => 28672 / 64],
  [
    "s2_p",
    undefined,
    "linear_awq_gemv_t8_r16_s2_p",
    8,
    (sms: number) => Math.min(28672 / 16, 2 * sms),
  ],
  ["s3_p", 1, "linear_awq_gemv_t8_r16_s3_p", 1, (sms: number) => Math.min(28672 / 128, 2 * sms)],
  ["s2_ps", 4, "linear_awq_gemv_t8_r16_s2_ps", 4, () => 28672 / 32],
] as const;

Deno.test("linear on 4-bit weights (fake CUDA driver): a forced GEMV variant and K split launch as asked", async () => {
  for (const [variant, split, kernel, wantSplit, gridFor] of VARIANT_CASES) {
    await withFakeLinearOps(
      false,
      [8, 0],
      (gpu, gops, fake) => {
        const n = 28672, k = 4096;
        const weight = gpuWeight(gpu, n, k, false);
        const x = gpu.alloc(2 * k), out = gpu.alloc(2 * n);
        fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 4]);
        gops.linear(out, x, weight, 1, n, k, gpu.createStream());
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, kernel, variant);
        assert.deepEqual(launch.grid, [gridFor(gpu.info.multiprocessors), 1, 1], variant);
        const args = new DataView(launch.args.buffer, launch.args.byteOffset);
        assert.equal(args.getInt32(56, true), wantSplit, `${variant}: ksplit`);
      },
      {},
      { awqGemvVariant: variant, awqGemvSplit: split },
    );
  }
});

Deno.test("linear on 4-bit weights (fake CUDA 12.4 driver, sm_90): the GEMV launches programmatically, the dequantize plainly", async () => {
  await withFakeLinearOps(false, [9, 0], (gpu, gops, fake) => {
    const n = 1024, k = 1024;
    const weight = gpuWeight(gpu, n, k, true);
    const x = gpu.alloc(2 * 8 * k), out = gpu.alloc(2 * 8 * n);
    const s = gpu.createStream();
    const how = () => {
      const launch = fake.lastLaunch();
      return [launch.functionName, launch.launchEx, launch.programmatic];
    };
    fake.setParamSizes([8, 8, 8, 8, 8, 4, 4, 4, 4, 4]);
    gops.linear(out, x, weight, 1, n, k, s);
    assert.deepEqual(how(), ["linear_awq_gemv_t8_r8_s2", true, true]);
    // The dequantize overwrites the scratch a GEMM before it may still read: never early.
    fake.setParamSizes([8, 8, 8, 8, 4, 4, 4]);
    gops.dequantizeAwq(weight.scratch!, weight, n, k, s);
    assert.deepEqual(how(), ["linear_awq_dequantize", false, false]);
  }, { launchEx: true });
});
