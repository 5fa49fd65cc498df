/**
 * `linearRmsNorm` (the pre-norm step in the GEMV's prologue): which kernel it launches through
 * the fake CUDA driver (sm_90, 132 SMs), with what grid, shared memory and arguments, judged
 * against the launch `linear` makes for the same product (the same row groups and K split, the
 * two-step kernel of that group size); where it declines (returning false, launching nothing);
 * its knob; and its argument errors on the CPU and the GPU. The fused kernels' output against
 * `rmsNorm` + `linear` is checked on a GPU (tests/gpu/linear_norm_gpu_test.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import {
  type GpuLinearOps,
  type LinearOptions,
  NORM_PROLOGUE_DEFAULT,
  normPrologueMaxBlocksWanted,
  normPrologueWanted,
} from "../../ops/gpu/linear.ts";
import { NORM_GEMV_SHARED_MAX } from "../../ops/gpu/gemv_geometry.ts";
import type { AwqWeight, Fp8Weight, LinearWeight } from "../../ops/linear_weight.ts";
import type { FakeControl } from "../fake_driver/fake.ts";
import { withEnv, withEnvAsync } from "../support/env.ts";
import { launchArgs, paramSizes, withFakeLinearOps } from "../support/fake_linear.ts";

const EPS = 1e-5;
/**
 * The kernels' parameters (fake_linear.ts's paramSizes letters): the GEMVs' out, x, w (FP8: codes
 * and scales), M, N, K, ksplit; the _norm ones add residual, residualOut, gamma and eps.
 */
const GEMV_ARGS = "pppiiii", NORM_ARGS = `${GEMV_ARGS}pppf`;
const FP8_GEMV_ARGS = "ppppiiii", FP8_NORM_ARGS = `${FP8_GEMV_ARGS}pppf`;

/** An FP8 weight [rows, k] (codes and per-row scales) on `gpu`. */
function fp8Weight(gpu: GpuBackend, rows: number, k: number): Fp8Weight {
  return {
    format: "fp8-e4m3",
    data: gpu.alloc(rows * k),
    scales: gpu.alloc(4 * rows),
    scratch: null,
  };
}

/** The products of Llama-3-8B's two norms (q/k/v and gate/up, k = 4096) and a narrow one. */
const SHAPES = [
  { n: 6144, k: 4096 },
  { n: 28672, k: 4096 },
  { n: 1000, k: 1024 },
];

/**
 * Runs `body` on the fake CUDA sm_90 driver's linear ops with room for any shape here: x, the
 * residual and its sum's buffer [16, 8192], out [16, 28672] and a bf16 weight [28672, 8192].
 */
async function onFake(
  options: LinearOptions,
  body: (
    ops: GpuLinearOps,
    fake: FakeControl,
    b: {
      x: DeviceBuffer;
      residual: DeviceBuffer;
      sumOut: DeviceBuffer;
      out: DeviceBuffer;
      w: DeviceBuffer;
    },
    gpu: GpuBackend,
  ) => void,
  hip = false,
): Promise<void> {
  await withFakeLinearOps(
    hip,
    [9, 0],
    (gpu, ops, fake) => {
      const x = gpu.alloc(2 * 16 * 8192), residual = gpu.alloc(2 * 16 * 8192);
      const sumOut = gpu.alloc(2 * 16 * 8192);
      const out = gpu.alloc(2 * 16 * 28672), w = gpu.alloc(2 * 28672 * 8192);
      body(ops, fake, { x, residual, sumOut, out, w }, gpu);
    },
    {},
    options,
  );
}

Deno.test("linearRmsNorm (fake CUDA driver): linear's GEMV geometry on the _s2_norm kernel, up to 8 rows", async () => {
  await onFake({ normPrologue: true }, (ops, fake, { x, residual, sumOut, out, w }, gpu) => {
    const s = gpu.createStream();
    const gamma = gpu.alloc(2 * 8192);
    for (const { n, k } of SHAPES) {
      for (const m of [1, 5, 8]) {
        for (const sum of [residual, null]) {
          const what = `m=${m} n=${n} k=${k}${sum ? " with a residual" : ""}`;
          // The plain product first: its kernel, grid and split are what the fused one must keep.
          fake.setParamSizes(paramSizes(GEMV_ARGS));
          ops.linear(out, x, w, m, n, k, s);
          const plain = fake.lastLaunch();
          const split = launchArgs(fake, GEMV_ARGS)[6];
          assert.match(plain.functionName, /^linear_gemv_t8_r(16|8)(_s2)?$/, what);
          fake.setParamSizes(paramSizes(NORM_ARGS));
          const before = fake.launchCount();
          const to = sum ? sumOut : null;
          assert.equal(ops.linearRmsNorm(out, x, sum, to, gamma, w, m, n, k, EPS, s), true, what);
          assert.equal(fake.launchCount(), before + 1, `${what}: one launch`);
          const launch = fake.lastLaunch();
          assert.equal(
            launch.functionName,
            plain.functionName.replace(/(_s2)?$/, "_s2_norm"),
            what,
          );
          assert.deepEqual(launch.grid, plain.grid, `${what}: grid`);
          assert.deepEqual(launch.block, [256, 1, 1], `${what}: block`);
          assert.equal(launch.sharedMem, 2 * m * k, `${what}: the normalised rows`);
          const args = launchArgs(fake, NORM_ARGS);
          assert.deepEqual(args.slice(0, 7), [
            BigInt(out.ptr),
            BigInt(x.ptr),
            BigInt(w.ptr),
            m,
            n,
            k,
            split,
          ], `${what}: the product's arguments`);
          assert.equal(args[7], sum ? BigInt(sum.ptr) : 0n, `${what}: residual`);
          assert.equal(args[8], to ? BigInt(to.ptr) : 0n, `${what}: the sum's buffer`);
          assert.equal(args[9], BigInt(gamma.ptr), `${what}: the norm's weight`);
          assert.equal(args[10], Math.fround(EPS), `${what}: eps`);
        }
      }
    }
  });
});

Deno.test("linearRmsNorm (fake drivers): declines above 8 rows, past its shared memory, for 4-bit weights, off and on HIP", async () => {
  const declines = (fake: FakeControl, calls: [string, () => boolean][]) => {
    for (const [what, call] of calls) {
      const before = fake.launchCount();
      assert.equal(call(), false, `${what}: declines`);
      assert.equal(fake.launchCount(), before, `${what}: launches nothing`);
    }
  };
  await onFake({ normPrologue: true }, (ops, fake, { x, residual, sumOut, out, w }, gpu) => {
    const s = gpu.createStream(), gamma = gpu.alloc(2 * 8192);
    const awq: AwqWeight = {
      format: "awq-int4",
      codes: gpu.alloc(6144 * 4096 / 2),
      zeros: gpu.alloc(6144 * 4096 / 128),
      scales: gpu.alloc(4 * 6144 * 4096 / 128),
      groupSize: 128,
      scratch: null,
    };
    // 8192 wide: 6 rows fill the 96 KiB exactly, 7 are past it.
    const k = 8192;
    assert.equal(6 * k * 2, NORM_GEMV_SHARED_MAX);
    fake.setParamSizes(paramSizes(NORM_ARGS));
    assert.equal(ops.linearRmsNorm(out, x, residual, sumOut, gamma, w, 6, 4096, k, EPS, s), true);
    const call = (m: number, weight: LinearWeight, kk = 4096, input = x) => () =>
      ops.linearRmsNorm(out, input, residual, sumOut, gamma, weight, m, 6144, kk, EPS, s);
    const off = (b: Partial<Record<"residual" | "sumOut" | "gamma", DeviceBuffer>>) => () =>
      ops.linearRmsNorm(
        out,
        x,
        b.residual ?? residual,
        b.sumOut ?? sumOut,
        b.gamma ?? gamma,
        w,
        1,
        6144,
        4096,
        EPS,
        s,
      );
    declines(fake, [
      ["9 rows", call(9, w)],
      ["16 rows", call(16, w)],
      ["7 rows of 8192", call(7, w, k)],
      ["4-bit weights", call(1, awq)],
      ["FP8 weights, 9 rows", call(9, fp8Weight(gpu, 6144, 4096))],
      ["K % 8", call(1, w, 4092)],
      ["x off 16 bytes", call(1, w, 4096, x.slice(2, 2 * 4096))],
      ["residual off 16 bytes", off({ residual: residual.slice(2, 2 * 4096) })],
      ["its sum's buffer off 16 bytes", off({ sumOut: sumOut.slice(2, 2 * 4096) })],
      ["the norm's weight off 16 bytes", off({ gamma: gamma.slice(8, 2 * 4096) })],
    ]);
  });
  for (
    const [options, env, hip] of [
      [{ normPrologue: false }, undefined, false],
      [{}, "0", false],
      [{}, undefined, false],
      [{ normPrologue: true }, undefined, true],
    ] as const
  ) {
    await withEnvAsync(
      { DENALI_NORM_GEMV: env },
      () =>
        onFake(options, (ops, fake, { x, residual, sumOut, out, w }, gpu) => {
          const s = gpu.createStream(), gamma = gpu.alloc(2 * 4096);
          const what = `${JSON.stringify(options)} DENALI_NORM_GEMV=${env} ${hip ? "HIP" : "CUDA"}`;
          declines(fake, [
            [what, () =>
              ops.linearRmsNorm(out, x, residual, sumOut, gamma, w, 1, 6144, 4096, EPS, s)],
          ]);
        }, hip),
    );
  }
});

Deno.test("linearRmsNorm (fake CUDA driver): FP8 weights take the W8A16 GEMV's geometry on its _norm twin", async () => {
  await onFake({ normPrologue: true }, (ops, fake, { x, residual, sumOut, out }, gpu) => {
    const s = gpu.createStream(), gamma = gpu.alloc(2 * 8192);
    for (const { n, k } of SHAPES) {
      const w = fp8Weight(gpu, n, k);
      for (const m of [1, 8]) {
        const what = `FP8 m=${m} n=${n} k=${k}`;
        fake.setParamSizes(paramSizes(FP8_GEMV_ARGS));
        ops.linear(out, x, w, m, n, k, s);
        const plain = fake.lastLaunch();
        const split = launchArgs(fake, FP8_GEMV_ARGS)[7];
        assert.match(plain.functionName, /^linear_fp8_gemv_t8_r(16|8)_s2$/, what);
        fake.setParamSizes(paramSizes(FP8_NORM_ARGS));
        assert.equal(
          ops.linearRmsNorm(out, x, residual, sumOut, gamma, w, m, n, k, EPS, s),
          true,
          what,
        );
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, `${plain.functionName}_norm`, what);
        assert.deepEqual(launch.grid, plain.grid, `${what}: grid`);
        assert.equal(launch.sharedMem, 2 * m * k, `${what}: the normalised rows`);
        assert.deepEqual(launchArgs(fake, FP8_NORM_ARGS), [
          BigInt(out.ptr),
          BigInt(x.ptr),
          BigInt(w.data.ptr),
          BigInt(w.scales.ptr),
          m,
          n,
          k,
          split,
          BigInt(residual.ptr),
          BigInt(sumOut.ptr),
          BigInt(gamma.ptr),
          Math.fround(EPS),
        ], `${what}: arguments`);
      }
    }
  });
});

Deno.test("linearRmsNorm (fake CUDA driver): normPrologueMaxBlocks keeps the prologue to grids of that many blocks", async () => {
  // The grid linear's GEMV has for each shape at one row, then a cap between the two.
  const grids: Record<number, number> = {};
  await onFake({ normPrologue: true }, (ops, fake, { x, out, w }, gpu) => {
    for (const n of [6144, 28672]) {
      fake.setParamSizes(paramSizes(GEMV_ARGS));
      ops.linear(out, x, w, 1, n, 4096, gpu.createStream());
      grids[n] = fake.lastLaunch().grid[0];
    }
  });
  assert.ok(grids[6144] < grids[28672], JSON.stringify(grids));
  const cap = grids[6144];
  for (
    const [options, env] of [[{ normPrologueMaxBlocks: cap }, undefined], [{}, `${cap}`]] as const
  ) {
    await withEnvAsync(
      { DENALI_NORM_GEMV_BLOCKS: env },
      () =>
        onFake(
          { normPrologue: true, ...options },
          (ops, fake, { x, residual, sumOut, out, w }, gpu) => {
            const s = gpu.createStream(), gamma = gpu.alloc(2 * 4096);
            fake.setParamSizes(paramSizes(NORM_ARGS));
            const norm = (n: number) =>
              ops.linearRmsNorm(out, x, residual, sumOut, gamma, w, 1, n, 4096, EPS, s);
            assert.equal(norm(6144), true, `a grid of ${cap} blocks, at the cap`);
            const before = fake.launchCount();
            assert.equal(norm(28672), false, `a grid of ${grids[28672]} blocks, past it`);
            assert.equal(fake.launchCount(), before);
          },
        ),
    );
  }
  // The FP8 GEMVs keep to the cap too.
  await onFake(
    { normPrologue: true, normPrologueMaxBlocks: 1 },
    (ops, fake, { x, residual, sumOut, out }, gpu) => {
      const gamma = gpu.alloc(2 * 4096), w = fp8Weight(gpu, 6144, 4096);
      const before = fake.launchCount();
      const s = gpu.createStream();
      assert.equal(
        ops.linearRmsNorm(out, x, residual, sumOut, gamma, w, 1, 6144, 4096, EPS, s),
        false,
      );
      assert.equal(fake.launchCount(), before);
    },
  );
  assert.equal(normPrologueMaxBlocksWanted(), 0);
  withEnv({ DENALI_NORM_GEMV_BLOCKS: "-1" }, () =>
    assert.throws(
      () => normPrologueMaxBlocksWanted(),
      /DENALI_NORM_GEMV_BLOCKS must be an integer >= 0 .*, got -1/,
    ));
  assert.throws(
    () => normPrologueMaxBlocksWanted(1.5),
    /normPrologueMaxBlocks must be an integer >= 0/,
  );
});

Deno.test("DENALI_NORM_GEMV: 1 on, 0 off, unset the default (off), the option over it, anything else named", async () => {
  assert.equal(NORM_PROLOGUE_DEFAULT, false);
  const cases = [["1", true], ["0", false], [undefined, false], ["", false]] as const;
  for (const [value, on] of cases) {
    withEnv({ DENALI_NORM_GEMV: value }, () => assert.equal(normPrologueWanted(), on, `${value}`));
  }
  withEnv({ DENALI_NORM_GEMV: "0" }, () => assert.equal(normPrologueWanted(true), true));
  withEnv({ DENALI_NORM_GEMV: "on" }, () =>
    assert.throws(
      () => normPrologueWanted(),
      new RangeError(
        "DENALI_NORM_GEMV=on is not a choice; use 1 (the GEMV normalises its input) or 0 " +
          "(rmsNorm, then the GEMV)",
      ),
    ));
  // Asked for in the environment, the fused kernel runs; a bad value fails the ops' load.
  Deno.env.set("DENALI_NORM_GEMV", "1");
  try {
    await onFake({}, (ops, fake, { x, residual, sumOut, out, w }, gpu) => {
      const gamma = gpu.alloc(2 * 4096);
      fake.setParamSizes(paramSizes(NORM_ARGS));
      const ran = ops.linearRmsNorm(
        out,
        x,
        residual,
        sumOut,
        gamma,
        w,
        1,
        6144,
        4096,
        EPS,
        gpu.createStream(),
      );
      assert.equal(ran, true);
      assert.match(fake.lastLaunch().functionName, /_s2_norm$/);
    });
    Deno.env.set("DENALI_NORM_GEMV", "yes");
    await assert.rejects(() => onFake({}, () => {}), /DENALI_NORM_GEMV=yes is not a choice/);
  } finally {
    Deno.env.delete("DENALI_NORM_GEMV");
  }
});

Deno.test("linearRmsNorm: bad arguments throw RangeError naming the op and the argument (CPU, fake CUDA)", async () => {
  const cpu = new CpuBackend();
  const bad = (alloc: (bytes: number) => DeviceBuffer, run: GpuLinearOps["linearRmsNorm"]) => {
    const x = alloc(2 * 2 * 64), residual = alloc(2 * 2 * 64), sumOut = alloc(2 * 2 * 64);
    const out = alloc(2 * 2 * 32), w = alloc(2 * 32 * 64), gamma = alloc(2 * 64);
    const s = cpu.defaultStream;
    const cases: [string, () => unknown, RegExp][] = [
      [
        "a short norm weight",
        () => run(out, x, residual, sumOut, alloc(2 * 32), w, 2, 32, 64, EPS, s),
        /linearRmsNorm: normWeight holds 64 bytes but k bf16 needs 128/,
      ],
      [
        "a short residual",
        () => run(out, x, alloc(2 * 64), sumOut, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residual holds 128 bytes but \[m, k\] bf16 needs 256/,
      ],
      [
        "a short sum buffer",
        () => run(out, x, residual, alloc(2 * 64), gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residualOut holds 128 bytes but \[m, k\] bf16 needs 256/,
      ],
      [
        "a residual without a sum buffer",
        () => run(out, x, residual, null, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residual and residualOut go together .*; give both or neither/,
      ],
      [
        "a sum buffer without a residual",
        () => run(out, x, null, sumOut, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residual and residualOut go together/,
      ],
      [
        "a negative eps",
        () => run(out, x, residual, sumOut, gamma, w, 2, 32, 64, -1, s),
        /linearRmsNorm: eps must be a finite number >= 0, got -1/,
      ],
      [
        "a short weight",
        () => run(out, x, residual, sumOut, gamma, alloc(2 * 16 * 64), 2, 32, 64, EPS, s),
        /linearRmsNorm: weight holds 2048 bytes/,
      ],
      [
        "out over x",
        () => {
          const both = alloc(2 * 2 * 64 + 2 * 2 * 32);
          return run(both, both.slice(64, 2 * 2 * 64), null, null, gamma, w, 2, 32, 64, EPS, s);
        },
        /linearRmsNorm: out overlaps x; give each its own buffer/,
      ],
      [
        "out over the residual",
        () => run(residual, x, residual, sumOut, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: out overlaps residual/,
      ],
      [
        "the sum over the residual (in place)",
        () => run(out, x, residual, residual, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residualOut overlaps residual/,
      ],
      [
        "the sum over x",
        () => run(out, x, residual, x, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: residualOut overlaps x/,
      ],
      [
        "out over the sum",
        () => run(sumOut, x, residual, sumOut, gamma, w, 2, 32, 64, EPS, s),
        /linearRmsNorm: out overlaps residualOut/,
      ],
    ];
    for (const [what, call, message] of cases) assert.throws(call, message, what);
  };
  const ops = cpuOps();
  bad((bytes) => cpu.alloc(bytes), ops.linearRmsNorm);
  // The CPU has no fused kernel: good arguments return false, and the caller composes.
  const x = cpu.alloc(2 * 64), out = cpu.alloc(2 * 8), w = cpu.alloc(2 * 8 * 64);
  const gamma = cpu.alloc(2 * 64);
  assert.equal(
    ops.linearRmsNorm(out, x, null, null, gamma, w, 1, 8, 64, EPS, cpu.defaultStream),
    false,
  );
  await withFakeLinearOps(false, [9, 0], (gpu, gops) => {
    bad((bytes) => gpu.alloc(bytes), gops.linearRmsNorm);
  });
});
