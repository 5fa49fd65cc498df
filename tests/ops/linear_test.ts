/**
 * The CPU linear ops against tests/fixtures/ops/linear.json (exact float64 products of
 * bf16-rounded inputs, from tools/fixtures/linear.py), and the argument checks the GPU ops share.
 *
 * Tolerances. Each output is one bf16 rounding of a sum accumulated in at least fp32 precision
 * (the CPU uses double). bf16 keeps 8 significant bits, so the rounding is off by at most half an
 * ulp, 2^-9 ≈ 0.2% of the value, and the fp32 accumulation adds ~K·2^-24 relative, far smaller.
 * So per element |out − ref| ≤ 2^-8·|ref| (a full ulp: half an ulp of margin) plus 1e-6 for sums
 * that cancel to near zero, and norm-wise relative error ≤ 1e-2, the family-wide bf16 bound.
 *
 * @module
 */

import { DriverError, UnsupportedShapeError } from "../../backends/errors.ts";
import { setFallbackSink } from "../../backends/fallbacks.ts";
import assert from "node:assert/strict";
import type {
  Backend,
  DeviceBuffer,
  DeviceEvent,
  GemmAccelerator,
  LaunchAbi,
} from "../../backends/backend.ts";
import { decodeBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuLinearOps } from "../../ops/cpu/linear.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import { openCuda } from "../../backends/cuda.ts";
import {
  type LinearOptions,
  loadLinearOps,
  STREAM_K_DEFAULT,
  type StreamKMode,
  streamKModeWanted,
  SWAP_AB_DEFAULT,
  swapAbModeWanted,
  type TimedMode,
} from "../../ops/gpu/linear.ts";
import { buildFakeDriver, type FakeControl, openFakeControl } from "../fake_driver/fake.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { assertClose } from "../support/numeric.ts";
import { readBf16 } from "../support/device.ts";
import { withFakeLinearOps } from "../support/fake_linear.ts";
import { readFixtureText } from "../support/fixtures.ts";
import { withEnv } from "../support/env.ts";

interface LinearCase {
  m: number;
  n: number;
  k: number;
  x: number[];
  weight: number[];
  expected: number[];
}

const FIXTURE_URL = new URL("../fixtures/ops/linear.json", import.meta.url);
let fixtureCache: LinearCase[] | null = null;

/** The fixture's cases, read once; a missing file fails with how to make it. */
function fixture(): LinearCase[] {
  if (fixtureCache) return fixtureCache;
  const text = readFixtureText(FIXTURE_URL, "linear.py", "torch");
  fixtureCache = (JSON.parse(text) as { cases: LinearCase[] }).cases;
  return fixtureCache;
}

const cpu = new CpuBackend();
const ops = cpuLinearOps();
const stream = cpu.defaultStream;

function upload(bits: readonly number[]): DeviceBuffer {
  const buffer = cpu.alloc(2 * bits.length);
  cpu.copyToDevice(buffer, Uint16Array.from(bits));
  return buffer;
}

Deno.test("linear fixture: CPU matches float64 within one bf16 rounding", () => {
  const cases = fixture();
  assert.ok(cases.length >= 8, "the fixture has its cases");
  for (const c of cases) {
    const what = `linear m=${c.m} n=${c.n} k=${c.k}`;
    assert.equal(c.x.length, c.m * c.k, `${what}: x size`);
    assert.equal(c.weight.length, c.n * c.k, `${what}: weight size`);
    const out = cpu.alloc(2 * c.m * c.n);
    cpu.memset(out, 0xff); // NaN: an unwritten element cannot pass
    ops.linear(out, upload(c.x), upload(c.weight), c.m, c.n, c.k, stream);
    const got = readBf16(cpu, out, c.m * c.n);
    assertClose(got, c.expected, 1e-2, what);
    for (let i = 0; i < got.length; i++) {
      const bound = 2 ** -8 * Math.abs(c.expected[i]) + 1e-6;
      assert.ok(
        Math.abs(got[i] - c.expected[i]) <= bound,
        `${what} [${Math.floor(i / c.n)}, ${i % c.n}]: ${got[i]} vs ${c.expected[i]}`,
      );
    }
  }
});

Deno.test("linear: a slice of a wider output and offset inputs work", () => {
  // Buffers that are views into bigger allocations, as the engine's workspaces are.
  const c = fixture()[3];
  const x = cpu.alloc(2 * c.x.length + 64), w = cpu.alloc(2 * c.weight.length + 32);
  const xs = x.slice(32, 2 * c.x.length), ws = w.slice(16, 2 * c.weight.length);
  cpu.copyToDevice(xs, Uint16Array.from(c.x));
  cpu.copyToDevice(ws, Uint16Array.from(c.weight));
  const out = cpu.alloc(2 * c.m * c.n + 8);
  cpu.memset(out, 0x7f);
  ops.linear(out.slice(8), xs, ws, c.m, c.n, c.k, stream);
  assertClose(readBf16(cpu, out.slice(8), c.m * c.n), c.expected, 1e-2, "offset views");
  const head = new Uint8Array(8);
  cpu.copyToHost(head, out);
  assert.deepEqual([...head], new Array(8).fill(0x7f), "nothing written before the view");
});

Deno.test("linear: bad sizes throw RangeError naming the op and the argument", () => {
  const x = cpu.alloc(2 * 4 * 8), w = cpu.alloc(2 * 6 * 8), out = cpu.alloc(2 * 4 * 6);
  const small = cpu.alloc(2);
  const cases: [string, () => void, RegExp][] = [
    ["m = 0", () => ops.linear(out, x, w, 0, 6, 8, stream), /^linear: m = 0/],
    ["n = 1.5", () => ops.linear(out, x, w, 4, 1.5, 8, stream), /^linear: n = 1.5/],
    ["k = -8", () => ops.linear(out, x, w, 4, 6, -8, stream), /^linear: k = -8/],
    ["k = NaN", () => ops.linear(out, x, w, 4, 6, NaN, stream), /^linear: k = NaN/],
    ["m = 2^31", () => ops.linear(out, x, w, 2 ** 31, 6, 8, stream), /^linear: m = 2147483648/],
    ["x too small", () => ops.linear(out, x, w, 5, 6, 8, stream), /^linear: x holds 64 bytes/],
    ["weight too small", () => ops.linear(out, x, w, 4, 7, 8, stream), /^linear: weight holds/],
    ["out too small", () => ops.linear(small, x, w, 4, 6, 8, stream), /^linear: out holds 2 bytes/],
    [
      "prepareLinear k = 0",
      () => ops.prepareLinear([{ m: 1, n: 4, k: 0 }], stream),
      /^prepareLinear: k = 0/,
    ],
  ];
  for (const [what, run, message] of cases) {
    assert.throws(run, (e: Error) => e instanceof RangeError && message.test(e.message), what);
  }
  ops.prepareLinear([{ m: 1, n: 6, k: 8 }], stream); // a no-op on the CPU
});

Deno.test("linear: K not a multiple of 4 and N not a multiple of 4 take the tail paths", () => {
  // An independent double-precision check on small random bf16 inputs, for every M from 1 to 5
  // (the table path) and 7 (the scratch path).
  const k = 11, n = 7;
  const wBits = Array.from({ length: n * k }, (_, i) => 0x3f00 + ((i * 37) % 200));
  const w = upload(wBits);
  for (const m of [1, 2, 3, 5, 7]) {
    const xBits = Array.from({ length: m * k }, (_, i) => 0xbf00 + ((i * 53) % 150));
    const out = cpu.alloc(2 * m * n);
    cpu.memset(out, 0xff);
    ops.linear(out, upload(xBits), w, m, n, k, stream);
    const xv = decodeBf16(Uint16Array.from(xBits)), wv = decodeBf16(Uint16Array.from(wBits));
    const ref = new Float64Array(m * n);
    for (let r = 0; r < m; r++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let i = 0; i < k; i++) s += xv[r * k + i] * wv[j * k + i];
        ref[r * n + j] = s;
      }
    }
    assertClose(readBf16(cpu, out, m * n), ref, 4e-3, `m=${m}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Kernel choice and launch shapes, through the fake driver (tests/fake_driver), which records
// each launch instead of running it; 132 SMs, like an H100.

interface Expected {
  kernel: string;
  grid: [number, number, number];
  block: [number, number, number];
  shared: number;
  split?: number;
}

async function dispatchCases(
  hip: boolean,
  cases: [number, number, number, number, Expected][],
  computeCapability: [number, number] = [9, 0],
  options: LinearOptions = {},
) {
  await withFakeLinearOps(
    hip,
    computeCapability,
    (gpu, ops, fake) => {
      const s = gpu.createStream();
      const x = gpu.alloc(2 * 1152 * 4096 + 16), w = gpu.alloc(2 * 8192 * 4096);
      const out = gpu.alloc(2 * 1152 * 4096);
      for (const [m, n, k, xOffset, want] of cases) {
        const what = `${hip ? "hip" : "cuda"} m=${m} n=${n} k=${k} x+${xOffset}`;
        const gemv = want.kernel.startsWith("linear_gemv");
        const wgmma = want.kernel.startsWith("linear_wgmma");
        fake.setParamSizes(
          gemv ? [8, 8, 8, 4, 4, 4, 4] : wgmma ? [8, 8, 8, 4, 4, 4, 4, 8, 8] : [8, 8, 8, 4, 4, 4],
        );
        const xv = x.slice(xOffset, 2 * m * k);
        ops.linear(out, xv, w, m, n, k, s);
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, want.kernel, what);
        assert.deepEqual(launch.grid, want.grid, `${what}: grid`);
        assert.deepEqual(launch.block, want.block, `${what}: block`);
        assert.equal(launch.sharedMem, want.shared, `${what}: shared memory`);
        const args = new DataView(launch.args.buffer, launch.args.byteOffset);
        assert.equal(args.getBigUint64(0, true), BigInt(out.ptr), `${what}: out`);
        assert.equal(args.getBigUint64(8, true), BigInt(xv.ptr), `${what}: x`);
        assert.equal(args.getBigUint64(16, true), BigInt(w.ptr), `${what}: weight`);
        assert.deepEqual(
          [args.getInt32(24, true), args.getInt32(28, true), args.getInt32(32, true)],
          [m, n, k],
          `${what}: sizes`,
        );
        if (gemv || wgmma) assert.equal(args.getInt32(36, true), want.split, `${what}: split`);
        if (wgmma) {
          // Split-K and stream-K scratch: the same two buffers on every call.
          const scratch = [args.getBigUint64(40, true), args.getBigUint64(48, true)];
          assert.ok(scratch[0] !== 0n && scratch[1] !== 0n && scratch[0] !== scratch[1], what);
        }
      }
      for (const b of [x, w, out]) gpu.free(b);
    },
    {},
    options,
  );
}

const gemvShape = (kernel: string, blocks: number, split: number): Expected => ({
  kernel: `linear_gemv_${kernel}`,
  grid: [blocks, 1, 1],
  block: [256, 1, 1],
  shared: 0,
  split,
});
const fmaShape = (m: number, n: number): Expected => ({
  kernel: "linear_gemm_fma",
  grid: [Math.ceil(n / 64), Math.ceil(m / 64), 1],
  block: [16, 16, 1],
  shared: 0,
});

// The mma.sync GEMMs: 128 threads; 4 stages of 64×64 tiles (64 KiB) or 3 of 128×128 (96 KiB).
const mmaShape = (tile: "64x64" | "128x128", blocks: number): Expected => ({
  kernel: `linear_gemm_${tile}`,
  grid: [blocks, 1, 1],
  block: [128, 1, 1],
  shared: tile === "64x64" ? 65536 : 98304,
});
const wgmmaShape = (bn: number, blocks: number, split: number): Expected => ({
  kernel: `linear_wgmma_128x${bn}`,
  grid: [blocks, 1, 1],
  block: [256, 1, 1],
  shared: 197632,
  split,
});

Deno.test("linear dispatch (fake CUDA driver, sm_90): wgmma tiles, split-K, GEMVs below", async () => {
  await dispatchCases(false, [
    [1, 4096, 4096, 0, gemvShape("t8_r16_s2", 256, 8)],
    // 8·16 = 128 tiles of 128×256 >= 0.9 · 132 SMs.
    [1024, 4096, 4096, 0, wgmmaShape(256, 128, 1)],
    // 3·16 = 48 tiles of 128×256 are too few; 3·32 = 96 of 128×128 fill a quarter wave and more.
    [300, 4096, 4096, 0, wgmmaShape(128, 96, 1)],
    // 2·8 = 16 tiles: K (64 k tiles) splits 8 ways, 128 blocks.
    [256, 1024, 4096, 0, wgmmaShape(128, 128, 8)],
    // 1 tile of 128×128 and K = 64, one k tile: nothing to split; the 64×64 mma.sync tiles.
    [17, 37, 64, 0, mmaShape("64x64", 1)],
    [300, 1000, 1001, 0, fmaShape(300, 1000)],
  ]);
});

Deno.test("linear dispatch (fake CUDA driver, sm_90, streamK): a mostly idle last wave goes stream-K", async () => {
  const streamK = (bn: number): Expected => ({
    kernel: `linear_wgmma_sk_128x${bn}`,
    grid: [132, 1, 1],
    block: [256, 1, 1],
    shared: 197632,
    split: 1,
  });
  const cases: [number, number, number, number, Expected][] = [
    // 3·32 = 96 tiles of 128×128, one wave 73% full: stream-K over 132 blocks.
    [300, 4096, 4096, 0, streamK(128)],
    [256, 6144, 4096, 0, streamK(128)],
    // 9·16 = 144 tiles of 128×256: a second wave of 12 tiles.
    [1152, 4096, 4096, 0, streamK(256)],
    // 8·16 = 128 tiles of 128×256 (0.97 of a wave) and 2·64 = 128 of 128×128 stay data-parallel.
    [1024, 4096, 4096, 0, wgmmaShape(256, 128, 1)],
    [256, 8192, 4096, 0, wgmmaShape(128, 128, 1)],
    // Split-K shapes keep their split: 2·32 = 64 tiles, K split 2 ways.
    [256, 4096, 4096, 0, wgmmaShape(128, 128, 2)],
  ];
  await dispatchCases(false, cases, [9, 0], { streamK: "always" });
  // Forced, with fewer k iterations (8 tiles × 1) than SMs: a block each.
  await dispatchCases(false, [[17, 1000, 64, 0, { ...streamK(128), grid: [8, 1, 1] }]], [9, 0], {
    kernel: "wgmmaSk128x128",
  });
  // Off by default: the same shapes run their data-parallel tiles.
  await dispatchCases(false, [
    [300, 4096, 4096, 0, wgmmaShape(128, 96, 1)],
    [1152, 4096, 4096, 0, wgmmaShape(256, 144, 1)],
  ]);
});

// The swapped-operand GEMMs: 128 W rows × 64 tokens (4 stages, 99328 bytes) or × 32 (5 stages,
// 103424 bytes), two blocks an SM, so a split aims at 2 · 132 blocks.
const swapShape = (tokens: 32 | 64, blocks: number, split: number): Expected => ({
  kernel: `linear_wgmma_swap_128x${tokens}`,
  grid: [blocks, 1, 1],
  block: [256, 1, 1],
  shared: tokens === 64 ? 99328 : 103424,
  split,
});

Deno.test("linear dispatch (fake CUDA driver, sm_90, swapAb): 17-64 rows on the swapped-operand tiles", async () => {
  const cases: [number, number, number, number, Expected][] = [
    // 48 tiles of 128 W rows: K (64 k tiles) splits min(264 / 48, 64 / 4) = 5 ways.
    [17, 6144, 4096, 0, swapShape(32, 240, 5)],
    [32, 6144, 4096, 0, swapShape(32, 240, 5)],
    // 32 tiles: 8 ways, 256 blocks (their 128 · 64-float slots fill the scratch's 132 · 128²).
    [64, 4096, 4096, 0, swapShape(64, 256, 8)],
    // 16 tiles, 224 k tiles: the split's cap of 16.
    [33, 2048, 14336, 0, swapShape(64, 256, 16)],
    // 133 tiles are more than half the 264 block slots: no split.
    [48, 17024, 1024, 0, swapShape(64, 133, 1)],
    // One k tile: nothing to split.
    [32, 1000, 64, 0, swapShape(32, 8, 1)],
    // Past 64 rows and within the GEMVs' 16, the usual kernels.
    [65, 4096, 4096, 0, wgmmaShape(128, 128, 4)],
    [16, 4096, 4096, 0, gemvShape("t16_r16", 256, 8)],
  ];
  await dispatchCases(false, cases, [9, 0], { swapAb: "always" });
  // Forced past 64 rows: two token tiles of 64 for each of the 8 W row tiles, K split 16 ways.
  await dispatchCases(false, [[100, 1024, 4096, 0, swapShape(64, 256, 16)]], [9, 0], {
    kernel: "wgmmaSwap128x64",
  });
  // Timed by default, so a shape prepareLinear has not raced runs the 128×128 tiles at 64 rows
  // (one tile of rows mostly padding), as does `never`.
  assert.equal(SWAP_AB_DEFAULT, "timed");
  await dispatchCases(false, [[64, 4096, 4096, 0, wgmmaShape(128, 128, 4)]]);
  await dispatchCases(false, [[64, 4096, 4096, 0, wgmmaShape(128, 128, 4)]], [9, 0], {
    swapAb: "never",
  });
  // Never on an sm_80 device (no sm_90a image): the mma.sync tiles.
  await dispatchCases(false, [[64, 4096, 4096, 0, mmaShape("64x64", 64)]], [8, 0], {
    swapAb: "always",
  });
});

Deno.test("linear dispatch (fake CUDA driver, sm_90, swapAb): every split fits the shared scratch", async () => {
  // The scratch holds 132 · 128 · 128 floats of partials (stream-K off) and a counter per tile;
  // a split grid's slots, 128 W rows × the token tile each, must fit, whatever the shape.
  await withFakeLinearOps(
    false,
    [9, 0],
    (gpu, ops, fake) => {
      const s = gpu.createStream();
      const x = gpu.alloc(2 * 64 * 16384), w = gpu.alloc(2 * 32768 * 4096);
      const out = gpu.alloc(2 * 64 * 32768);
      fake.setParamSizes([8, 8, 8, 4, 4, 4, 4, 8, 8]);
      let split = 0;
      for (const m of [17, 24, 32, 33, 48, 64]) {
        for (const n of [128, 384, 1024, 2048, 4096, 6144, 14336, 32768]) {
          for (const k of [64, 512, 4096, 8192, 16384]) {
            if (n * k > 32768 * 4096) continue;
            ops.linear(out, x, w, m, n, k, s);
            const launch = fake.lastLaunch();
            const what = `m=${m} n=${n} k=${k}`;
            const tokens = m <= 32 ? 32 : 64;
            assert.equal(launch.functionName, `linear_wgmma_swap_128x${tokens}`, what);
            const args = new DataView(launch.args.buffer, launch.args.byteOffset);
            const kSplit = args.getInt32(36, true), blocks = launch.grid[0];
            const tiles = Math.ceil(n / 128) * Math.ceil(m / tokens);
            assert.equal(blocks, tiles * kSplit, `${what}: a block per tile and slice`);
            assert.ok(
              kSplit <= 16 && kSplit <= Math.max(1, Math.floor(Math.ceil(k / 64) / 4)),
              what,
            );
            if (kSplit > 1) {
              split++;
              assert.ok(blocks * 128 * tokens <= 132 * 128 * 128, `${what}: ${blocks} slots`);
              assert.ok(tiles <= 4096, `${what}: ${tiles} counters`);
            }
          }
        }
      }
      assert.ok(split > 50, `only ${split} shapes split`);
      for (const b of [x, w, out]) gpu.free(b);
    },
    {},
    { swapAb: "always" },
  );
});

Deno.test("linear dispatch (fake CUDA driver, sm_80): kernel, grid, block, shared memory, arguments", async () => {
  await dispatchCases(false, [
    // 4096 rows = 256 groups of 16 >= 132 SMs: 16-row GEMV, K = 32 steps, split 8 → 16 rows/block.
    [1, 4096, 4096, 0, gemvShape("t8_r16_s2", 256, 8)],
    [8, 4096, 4096, 0, gemvShape("t8_r16_s2", 256, 8)],
    [9, 4096, 4096, 0, gemvShape("t16_r16", 256, 8)],
    // 1024 rows = 64 groups of 16 < 132: 8-row GEMV, 128 blocks.
    [16, 1024, 4096, 0, gemvShape("t16_r8", 128, 8)],
    // K = 64 is one step: split 1, a block covers 8 groups of 8 rows.
    [1, 37, 64, 0, gemvShape("t8_r8_s2", 1, 1)],
    // K = 1000 is 125 chunks of 8: 4 steps of 32 chunks, split 4 → 2 groups of 8 rows.
    [1, 1000, 1000, 0, gemvShape("t8_r8_s2", 63, 4)],
    // K = 512: 2 steps of 256 (8-row), split 2 → 4 groups of 8 = 32 rows per block.
    [3, 100, 512, 0, gemvShape("t8_r8_s2", 4, 2)],
    // N = 8192 and 8184 (not a multiple of 16): 512 blocks.
    [1, 8192, 4096, 0, gemvShape("t8_r16_s2", 512, 8)],
    [2, 8184, 4096, 0, gemvShape("t8_r16_s2", 512, 8)],
    // M > 16: 3·32 = 96 tiles of 128 < 132 → 64×64 tiles (5·64), 64 KiB; 8·32 = 256 → 128×128.
    [300, 4096, 4096, 0, mmaShape("64x64", 320)],
    [1024, 4096, 4096, 0, mmaShape("128x128", 256)],
    [17, 37, 64, 0, mmaShape("64x64", 1)],
    // K % 8 != 0 or a misaligned x: the FMA fallback, for any M.
    [1, 1000, 1001, 0, fmaShape(1, 1000)],
    [300, 1000, 1001, 0, fmaShape(300, 1000)],
    [1, 4096, 4096, 2, fmaShape(1, 4096)],
    [64, 4096, 4096, 2, fmaShape(64, 4096)],
  ], [8, 0]);
});

Deno.test("linear dispatch (fake HIP driver): GEMV geometry for M <= 16, FMA GEMM above", async () => {
  await dispatchCases(true, [
    [1, 4096, 4096, 0, gemvShape("t8_r16_s2", 256, 8)],
    [16, 1024, 4096, 0, gemvShape("t16_r8", 128, 8)],
    [17, 4096, 4096, 0, fmaShape(17, 4096)],
    [1024, 4096, 4096, 0, fmaShape(1024, 4096)],
  ]);
});

/**
 * A virtual clock over the fake driver, for prepareLinear's timing race: each Denali launch costs
 * `launchNs(kernel)` and each call of the fake accelerator `accelNs` (or throws `accelError`
 * while `accelThrows`), and the events `backend` creates read that clock, so a race has a known
 * winner.
 */
class VirtualClock {
  now = 0;
  accelNs = 1000;
  accelCalls = 0;
  accelThrows = false;
  accelError: Error = new UnsupportedShapeError(
    new DriverError("cuda", "cublasLtMatmul", 15, "CUBLAS_STATUS_NOT_SUPPORTED", "not supported"),
  );
  launchNs: (kernel: string) => number = () => 5000;
  readonly backend: Backend;

  constructor(gpu: GpuBackend, fake: FakeControl) {
    const realAbi = gpu.launchAbi!;
    const abi: LaunchAbi = {
      ...realAbi,
      launchKernel: (...args) => {
        const result = realAbi.launchKernel(...args);
        this.now += this.launchNs(fake.lastLaunch().functionName);
        return result;
      },
    };
    const accel: GemmAccelerator = {
      name: "fake accelerator",
      gemm: () => {
        if (this.accelThrows) throw this.accelError;
        this.accelCalls++;
        this.now += this.accelNs;
      },
      close() {},
    };
    const now = () => this.now;
    const virtualEvent = (): DeviceEvent & { t: number } => ({
      t: 0,
      record() {
        this.t = now();
      },
      synchronize() {},
      query: () => true,
      elapsedMsSince(start) {
        return (this.t - (start as unknown as { t: number }).t) / 1e6;
      },
      destroy() {},
    });
    this.backend = new Proxy(gpu, {
      get(target, prop) {
        if (prop === "gemmAccelerator") return accel;
        if (prop === "launchAbi") return abi;
        if (prop === "createEvent") return virtualEvent;
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Backend;
  }
}

Deno.test("prepareLinear (fake CUDA driver): an FP8 shape of 17..64 rows takes the 16-row GEMV chunks where they time fastest", async () => {
  const libraryPath = buildFakeDriver();
  const fake = openFakeControl(libraryPath);
  fake.reset();
  const gpu = openCuda({ libraryPath });
  try {
    const clock = new VirtualClock(gpu, fake);
    // The FP8 GEMV's launches are cheap; every other kernel (dequantize, GEMMs, quantize) dear.
    clock.launchNs = (kernel) => kernel.startsWith("linear_fp8_gemv") ? 100 : 5000;
    const ops = await loadLinearOps(clock.backend);
    const s = gpu.createStream();
    const n = 256, k = 512;
    const weight: Fp8Weight = {
      format: "fp8-e4m3",
      data: gpu.alloc(n * k),
      scales: gpu.alloc(4 * n),
      scratch: gpu.alloc(Math.max(ops.fp8ScratchBytes(n, k), ops.fp8W8a8ScratchBytes(96, k))),
    };
    const x = gpu.alloc(2 * 96 * k), out = gpu.alloc(2 * 96 * n);
    fake.setParamSizes([8, 8, 8, 8, 4, 4, 4, 4]);
    ops.prepareLinear([{ m: 32, n, k, fp8: true }, { m: 96, n, k, fp8: true }], s);
    assert.equal(ops.fp8PrefillPath(32, n, k), "gemvRows");
    // Past 64 rows the chunks are no candidate.
    assert.notEqual(ops.fp8PrefillPath(96, n, k), "gemvRows");
    // linear at 32 rows: two launches of the 16-row GEMV (256 rows make 8-row groups), the
    // second on x and out 16 rows on.
    const mark = fake.launchCount();
    ops.linear(out, x, weight, 32, n, k, s);
    assert.equal(fake.launchCount() - mark, 2);
    const last = fake.lastLaunch();
    assert.equal(last.functionName, "linear_fp8_gemv_t16_r8");
    const args = new DataView(last.args.buffer, last.args.byteOffset);
    assert.deepEqual(
      [args.getBigUint64(0, true), args.getBigUint64(8, true), BigInt(args.getInt32(32, true))],
      [BigInt(out.ptr + 2 * 16 * n), BigInt(x.ptr + 2 * 16 * k), 16n],
    );
    // The test hook runs it whatever was chosen, within its rows only.
    assert.equal(ops.fp8GemvRows(out, x, weight, 17, n, k, s), true);
    assert.equal(ops.fp8GemvRows(out, x, weight, 16, n, k, s), false);
    assert.equal(ops.fp8GemvRows(out, x, weight, 65, n, k, s), false);
    assert.equal(ops.fp8GemvRows(out, x.slice(2, 2 * 64 * k), weight, 64, n, k, s), false);
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});

Deno.test("prepareLinear (fake CUDA driver): times both paths, routes each shape to the winner", async () => {
  const libraryPath = buildFakeDriver();
  const fake = openFakeControl(libraryPath);
  fake.reset();
  const gpu = openCuda({ libraryPath });
  try {
    const clock = new VirtualClock(gpu, fake);
    const backend = clock.backend;
    const fallbacks: string[] = [];
    const previousSink = setFallbackSink((line) => fallbacks.push(line));

    const ops = await loadLinearOps(backend);
    const s = gpu.createStream();
    const x = gpu.alloc(2 * 300 * 512),
      w = gpu.alloc(2 * 256 * 512),
      out = gpu.alloc(2 * 300 * 256);
    fake.setParamSizes([8, 8, 8, 4, 4, 4, 4]);
    const allocated = fake.bytesAllocated();

    // The accelerator is faster on these shapes: after preparing, linear calls it, not a kernel.
    // (The fake must be told each kernel's parameter sizes: 7 for the GEMVs, 6 for the GEMMs.)
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    ops.prepareLinear([{ m: 300, n: 256, k: 512 }], s);
    fake.setParamSizes([8, 8, 8, 4, 4, 4, 4]);
    ops.prepareLinear([{ m: 1, n: 256, k: 512 }], s);
    assert.equal(fake.bytesAllocated(), allocated, "the scratch buffers are freed");
    assert.equal(ops.kernelName(1, 256, 512, x, w), "accelerator");
    assert.equal(ops.kernelName(300, 256, 512, x, w), "accelerator");
    const [calls, launches] = [clock.accelCalls, fake.launchCount()];
    ops.linear(out, x, w, 1, 256, 512, s);
    assert.deepEqual([clock.accelCalls, fake.launchCount()], [calls + 1, launches]);
    // An unprepared shape runs Denali's kernel.
    ops.linear(out, x, w, 2, 256, 512, s);
    assert.deepEqual([clock.accelCalls, fake.launchCount()], [calls + 1, launches + 1]);
    assert.equal(ops.kernelName(2, 256, 512, x, w), "gemv8");
    // A GEMM-sized m never prepared (a mixed step's token count) takes the decision of the
    // nearest prepared m of the same n and k (the smallest above, else the largest below).
    assert.equal(ops.kernelName(200, 256, 512, x, w), "accelerator");
    assert.equal(ops.kernelName(999, 256, 512, x, w), "accelerator");
    assert.notEqual(ops.kernelName(200, 256, 1024, x, w), "accelerator"); // another k
    // A prepared shape is not timed again.
    ops.prepareLinear([{ m: 1, n: 256, k: 512 }], s);
    assert.equal(clock.accelCalls, calls + 1);

    // Slower accelerator: Denali keeps the shape. A throwing one: Denali too.
    clock.accelNs = 9000;
    ops.prepareLinear([{ m: 4, n: 256, k: 512 }], s);
    assert.equal(ops.kernelName(4, 256, 512, x, w), "gemv8");
    fake.setParamSizes([8, 8, 8, 4, 4, 4]);
    ops.prepareLinear([{ m: 600, n: 256, k: 512 }], s);
    fake.setParamSizes([8, 8, 8, 4, 4, 4, 4]);
    const own600 = ops.kernelName(600, 256, 512, x, w);
    assert.notEqual(own600, "accelerator");
    assert.equal(ops.kernelName(500, 256, 512, x, w), own600); // 600 is the nearest above
    assert.equal(ops.kernelName(999, 256, 512, x, w), own600); // 600 is the largest below
    assert.equal(ops.kernelName(200, 256, 512, x, w), "accelerator"); // 300 is still above
    clock.accelThrows = true;
    ops.prepareLinear([{ m: 5, n: 256, k: 512 }], s);
    assert.equal(ops.kernelName(5, 256, 512, x, w), "gemv8");
    // The refusal is reported, once however many shapes it hits.
    ops.prepareLinear([{ m: 9, n: 256, k: 512 }], s);
    assert.deepEqual(fallbacks, [
      "[denali] fallback: fake accelerator refused a linear shape: " +
      "cublasLtMatmul failed: CUBLAS_STATUS_NOT_SUPPORTED (15): not supported; Denali's kernel runs it",
    ]);
    // Any other accelerator failure is a real error: it propagates, nothing leaks.
    clock.accelError = new DriverError(
      "cuda",
      "cublasLtMatmul",
      14,
      "CUBLAS_STATUS_INTERNAL_ERROR",
      "x",
    );
    assert.throws(() => ops.prepareLinear([{ m: 10, n: 256, k: 512 }], s), /INTERNAL_ERROR/);
    assert.equal(ops.kernelName(10, 256, 512, x, w), "gemv8");
    assert.equal(fake.bytesAllocated(), allocated, "nothing leaks when the accelerator fails");
    clock.accelThrows = false;

    // No room for scratch: the shape stays unprepared, and a later prepareLinear retries it.
    clock.accelNs = 1000;
    fake.failNext("memAlloc", 2);
    ops.prepareLinear([{ m: 6, n: 256, k: 512 }], s);
    assert.equal(ops.kernelName(6, 256, 512, x, w), "gemv8");
    assert.equal(fake.bytesAllocated(), allocated, "nothing leaks when an allocation fails");
    assert.match(fallbacks.at(-1)!, /^\[denali\] fallback: no memory to time linear shapes: /);
    ops.prepareLinear([{ m: 6, n: 256, k: 512 }], s);
    assert.equal(ops.kernelName(6, 256, 512, x, w), "accelerator");
    // An allocation failing for another reason is not "no room": it propagates.
    fake.failNext("memAlloc", 1);
    assert.throws(() => ops.prepareLinear([{ m: 11, n: 256, k: 512 }], s), /INVALID_VALUE/);
    assert.equal(fake.bytesAllocated(), allocated, "nothing leaks when an allocation fails");

    // A failing Denali kernel is a bug, not a reason to prefer the library: it propagates.
    fake.failNext("launchKernel", 1);
    assert.throws(() => ops.prepareLinear([{ m: 7, n: 256, k: 512 }], s), /cuLaunchKernel/);
    assert.equal(fake.bytesAllocated(), allocated, "nothing leaks when a launch fails");
    for (const b of [x, w, out]) gpu.free(b);
    setFallbackSink(previousSink);
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});

Deno.test("prepareLinear (fake CUDA driver, sm_90, streamK timed): a shape runs stream-K where it timed faster", async () => {
  await withFakeLinearOps(false, [9, 0], async (gpu, _ops, fake) => {
    const clock = new VirtualClock(gpu, fake);
    clock.accelNs = 1e6; // the library loses every race here
    let streamKNs = 2000;
    clock.launchNs = (kernel) => kernel.startsWith("linear_wgmma_sk") ? streamKNs : 5000;
    const timed = await loadLinearOps(clock.backend, { streamK: "timed" });
    const never = await loadLinearOps(clock.backend, { streamK: "never" });
    const s = gpu.createStream();
    const x = gpu.alloc(2 * 300 * 4096), w = gpu.alloc(2 * 8192 * 4096);
    fake.setParamSizes([8, 8, 8, 4, 4, 4, 4, 8, 8]);
    // M = 300, N = 4096: 3·32 = 96 tiles of 128×128, a wave 73% full, and stream-K is faster.
    timed.prepareLinear([{ m: 300, n: 4096, k: 4096 }], s);
    never.prepareLinear([{ m: 300, n: 4096, k: 4096 }], s);
    assert.equal(timed.kernelName(300, 4096, 4096, x, w), "wgmmaSk128x128");
    assert.equal(never.kernelName(300, 4096, 4096, x, w), "wgmma128x128");
    // An unprepared M of the shape follows the nearest prepared one (300, above it).
    assert.equal(timed.kernelName(290, 4096, 4096, x, w), "wgmmaSk128x128");
    // Slower stream-K: the data-parallel form stays.
    streamKNs = 9000;
    timed.prepareLinear([{ m: 256, n: 6144, k: 4096 }], s);
    assert.equal(timed.kernelName(256, 6144, 4096, x, w), "wgmma128x128");
    // 2·64 = 128 tiles fill a wave: no stream-K form, whatever it would cost.
    streamKNs = 1;
    timed.prepareLinear([{ m: 256, n: 8192, k: 4096 }], s);
    assert.equal(timed.kernelName(256, 8192, 4096, x, w), "wgmma128x128");
    // A shape that timed stream-K launches it, one block an SM.
    timed.linear(w, x, w, 300, 4096, 4096, s);
    assert.equal(fake.lastLaunch().functionName, "linear_wgmma_sk_128x128");
    assert.deepEqual(fake.lastLaunch().grid, [132, 1, 1]);
    for (const b of [x, w]) gpu.free(b);
  });
});

Deno.test("prepareLinear (fake CUDA driver, sm_90, swapAb timed): 17-64 rows swap where it timed faster", async () => {
  await withFakeLinearOps(false, [9, 0], async (gpu, _ops, fake) => {
    const clock = new VirtualClock(gpu, fake);
    clock.accelNs = 1e6; // the library loses every race here
    let swapNs = 2000;
    const swapped: string[] = [];
    clock.launchNs = (kernel) => {
      if (!kernel.startsWith("linear_wgmma_swap")) return 5000;
      swapped.push(kernel);
      return swapNs;
    };
    const timed = await loadLinearOps(clock.backend, { swapAb: "timed" });
    const never = await loadLinearOps(clock.backend, { swapAb: "never" });
    const s = gpu.createStream();
    const x = gpu.alloc(2 * 128 * 4096), w = gpu.alloc(2 * 8192 * 4096);
    fake.setParamSizes([8, 8, 8, 4, 4, 4, 4, 8, 8]);
    timed.prepareLinear([{ m: 64, n: 4096, k: 4096 }, { m: 32, n: 4096, k: 4096 }], s);
    never.prepareLinear([{ m: 64, n: 4096, k: 4096 }], s);
    assert.ok(swapped.includes("linear_wgmma_swap_128x64"), "the race ran the 64-token tiles");
    assert.ok(swapped.includes("linear_wgmma_swap_128x32"), "the race ran the 32-token tiles");
    assert.equal(timed.kernelName(64, 4096, 4096, x, w), "wgmmaSwap128x64");
    assert.equal(timed.kernelName(32, 4096, 4096, x, w), "wgmmaSwap128x32");
    assert.equal(never.kernelName(64, 4096, 4096, x, w), "wgmma128x128");
    // An unprepared M follows the nearest prepared one (64, above 40)...
    assert.equal(timed.kernelName(40, 4096, 4096, x, w), "wgmmaSwap128x64");
    // ...but never past 64 rows, where the nearest below (64) swapped.
    assert.equal(timed.kernelName(100, 4096, 4096, x, w), "wgmma128x128");
    // Slower swapped tiles: the 128-row ones stay.
    swapNs = 9000;
    timed.prepareLinear([{ m: 48, n: 1024, k: 4096 }], s);
    assert.equal(timed.kernelName(48, 1024, 4096, x, w), "wgmma128x128");
    // A shape that timed swapped launches it, split as dispatch says.
    timed.linear(w, x, w, 64, 4096, 4096, s);
    assert.equal(fake.lastLaunch().functionName, "linear_wgmma_swap_128x64");
    assert.deepEqual(fake.lastLaunch().grid, [256, 1, 1]);
    // always: Denali's form is the swapped one, and it races the library alone.
    const always = await loadLinearOps(clock.backend, { swapAb: "always" });
    clock.accelNs = 3000;
    swapNs = 2000;
    always.prepareLinear([{ m: 64, n: 4096, k: 4096 }], s);
    assert.equal(always.kernelName(64, 4096, 4096, x, w), "wgmmaSwap128x64");
    swapNs = 4000; // slower than the library, which beats the 128-row tiles too
    always.prepareLinear([{ m: 64, n: 2048, k: 4096 }], s);
    assert.equal(always.kernelName(64, 2048, 4096, x, w), "accelerator");
    for (const b of [x, w]) gpu.free(b);
  });
});

/**
 * A TimedMode knob read through `wanted`: 1, 0 and timed from `variable`, unset or empty the
 * default, the option over the environment, anything else a RangeError naming the modes.
 */
function assertTimedModeKnob(
  wanted: (requested?: TimedMode) => TimedMode,
  variable: string,
  fallback: TimedMode,
): void {
  const modes: [string | undefined, TimedMode][] = [
    ["1", "always"],
    ["0", "never"],
    ["timed", "timed"],
    [undefined, fallback],
    ["", fallback],
  ];
  for (const [value, mode] of modes) {
    withEnv({ [variable]: value }, () => assert.equal(wanted(), mode, `${variable}=${value}`));
  }
  withEnv({ [variable]: "0" }, () => assert.equal(wanted("always"), "always"));
  withEnv({ [variable]: "yes" }, () =>
    assert.throws(
      () => wanted(),
      new RangeError(`${variable}=yes is not a mode; use 1 (always), 0 (never) or timed`),
    ));
}

Deno.test("swapAb mode: DENALI_SWAP_AB and the option, bad values named", async () => {
  assertTimedModeKnob(swapAbModeWanted, "DENALI_SWAP_AB", SWAP_AB_DEFAULT);
  await withFakeLinearOps(false, [9, 0], async (gpu) => {
    await assert.rejects(
      () => loadLinearOps(gpu, { swapAb: "often" as TimedMode }),
      /loadLinearOps: swapAb must be timed, always or never, got often/,
    );
  });
});

Deno.test("stream-K mode: DENALI_STREAM_K and the option, bad values named", async () => {
  assertTimedModeKnob(streamKModeWanted, "DENALI_STREAM_K", STREAM_K_DEFAULT);
  await withFakeLinearOps(false, [9, 0], async (gpu) => {
    await assert.rejects(
      () => loadLinearOps(gpu, { streamK: "sometimes" as StreamKMode }),
      /loadLinearOps: streamK must be timed, always or never, got sometimes/,
    );
  });
});
