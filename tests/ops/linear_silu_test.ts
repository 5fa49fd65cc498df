/**
 * `linearSiluMul` (gate/up projection with SiLU-and-multiply in the GEMV's epilogue): which
 * kernel each weight format and row count launches, with what grid and arguments, through the
 * fake drivers (132 SMs); where it declines (returning false, launching nothing), and its
 * argument errors on the CPU and the GPU. The fused kernels' output against `linear` + `siluMul`
 * is checked on a GPU (tests/gpu/linear_silu_gpu_test.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import type { DeviceBuffer } from "../../backends/backend.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { AwqWeight, Fp8Weight, LinearWeight } from "../../ops/linear_weight.ts";
import {
  type GpuLinearOps,
  type LinearOptions,
  SILU_EPILOGUE_DEFAULT,
  siluEpilogueWanted,
} from "../../ops/gpu/linear.ts";
import { launchArgs, paramSizes, withFakeLinearOps } from "../support/fake_linear.ts";
import { withEnv } from "../support/env.ts";

/** Llama-3-8B's MLP: inter 14336, hidden 4096 (K = 4096 is 16 steps of 256: split 8). */
const INTER = 14336, HIDDEN = 4096;
/** 2 · 14336 rows in groups of 16, one group a block (split 8). */
const BLOCKS = 2 * INTER / 16;

function fp8Weight(gpu: GpuBackend, rows: number, k: number): Fp8Weight {
  return {
    format: "fp8-e4m3",
    data: gpu.alloc(rows * k),
    scales: gpu.alloc(4 * rows),
    scratch: null,
  };
}

function awqWeight(gpu: GpuBackend, rows: number, k: number): AwqWeight {
  return {
    format: "awq-int4",
    codes: gpu.alloc(rows * k / 2),
    zeros: gpu.alloc(rows * k / 128),
    scales: gpu.alloc(4 * rows * k / 128),
    groupSize: 128,
    scratch: null,
  };
}

/**
 * Runs linearSiluMul on the fake CUDA (sm_90) or HIP driver with each format's weight and
 * checks the launches: [format, m, kernel or null (declines)].
 */
async function dispatch(
  hip: boolean,
  cases: [("bf16" | "fp8" | "awq"), number, string | null][],
  options: LinearOptions = {},
) {
  await withFakeLinearOps(
    hip,
    [9, 0],
    (gpu, ops, fake) => {
      const s = gpu.createStream();
      const x = gpu.alloc(2 * 17 * HIDDEN), out = gpu.alloc(2 * 17 * INTER);
      const weights: Record<string, LinearWeight> = {
        bf16: gpu.alloc(2 * 2 * INTER * HIDDEN),
        fp8: fp8Weight(gpu, 2 * INTER, HIDDEN),
        awq: awqWeight(gpu, 2 * INTER, HIDDEN),
      };
      for (const [format, m, kernel] of cases) {
        const what = `${hip ? "hip" : "cuda"} ${format} m=${m}`;
        const w = weights[format];
        const before = fake.launchCount();
        // out, x, then the weight's buffers, then m, n, k (and the group size), then the split.
        const pointers = format === "bf16" ? 3 : format === "fp8" ? 4 : 5;
        const ints = format === "awq" ? 5 : 4;
        const kinds = "p".repeat(pointers) + "i".repeat(ints);
        fake.setParamSizes(paramSizes(kinds));
        const ran = ops.linearSiluMul(out, x, w, m, INTER, HIDDEN, s);
        if (kernel === null) {
          assert.equal(ran, false, `${what}: declines`);
          assert.equal(fake.launchCount(), before, `${what}: launches nothing`);
          continue;
        }
        assert.equal(ran, true, what);
        assert.equal(fake.launchCount(), before + 1, `${what}: one launch`);
        const launch = fake.lastLaunch();
        assert.equal(launch.functionName, kernel, what);
        assert.deepEqual(launch.grid, [BLOCKS, 1, 1], `${what}: grid`);
        assert.deepEqual(launch.block, [256, 1, 1], `${what}: block`);
        const buffers = format === "bf16"
          ? [w as DeviceBuffer]
          : format === "fp8"
          ? [(w as Fp8Weight).data, (w as Fp8Weight).scales]
          : [(w as AwqWeight).codes, (w as AwqWeight).zeros, (w as AwqWeight).scales];
        const want = [
          BigInt(out.ptr),
          BigInt(x.ptr),
          ...buffers.map((b) => BigInt(b.ptr)),
          m,
          INTER, // n: the output columns, half the weight's rows
          HIDDEN,
          ...(format === "awq" ? [128] : []),
          8,
        ];
        assert.deepEqual(launchArgs(fake, kinds), want, `${what}: arguments`);
      }
    },
    {},
    options,
  );
}

Deno.test("linearSiluMul (fake CUDA driver): the fused 16-row GEMVs of each format up to 16 rows, nothing above", async () => {
  await dispatch(false, [
    ["bf16", 1, "linear_gemv_t8_r16_s2_silu"],
    ["bf16", 8, "linear_gemv_t8_r16_s2_silu"],
    ["bf16", 9, "linear_gemv_t16_r16_silu"],
    ["bf16", 16, "linear_gemv_t16_r16_silu"],
    ["bf16", 17, null],
    ["fp8", 1, "linear_fp8_gemv_t8_r16_s2_silu"],
    ["fp8", 16, "linear_fp8_gemv_t16_r16_silu"],
    ["fp8", 17, null],
    ["awq", 1, "linear_awq_gemv_t8_r16_s2_ps_silu"],
    ["awq", 12, "linear_awq_gemv_t16_r16_silu"],
    ["awq", 17, null],
  ], { siluEpilogue: true });
});

Deno.test("linearSiluMul (fake drivers): declines on HIP, when turned off, and for a non-default 4-bit variant", async () => {
  const everything: [("bf16" | "fp8" | "awq"), number, null][] = [
    ["bf16", 1, null],
    ["fp8", 1, null],
    ["awq", 1, null],
  ];
  await dispatch(true, everything);
  await dispatch(false, everything, { siluEpilogue: false });
  // The t8 fused kernel is the s2_ps variant's; another variant keeps its own kernel unfused.
  await dispatch(false, [["awq", 1, null], ["awq", 9, "linear_awq_gemv_t16_r16_silu"]], {
    awqGemvVariant: "s2",
    siluEpilogue: true,
  });
  Deno.env.set("DENALI_SILU_EPILOGUE", "0");
  try {
    await dispatch(false, everything);
  } finally {
    Deno.env.delete("DENALI_SILU_EPILOGUE");
  }
});

Deno.test("DENALI_SILU_EPILOGUE: 1 on, 0 off, unset the default, anything else a RangeError naming the choices", async () => {
  for (
    const [value, on] of [["1", true], ["0", false], [undefined, SILU_EPILOGUE_DEFAULT], [
      "",
      SILU_EPILOGUE_DEFAULT,
    ]] as const
  ) {
    withEnv({ DENALI_SILU_EPILOGUE: value }, () => assert.equal(siluEpilogueWanted(), on));
  }
  withEnv({ DENALI_SILU_EPILOGUE: "0" }, () => assert.equal(siluEpilogueWanted(true), true));
  withEnv({ DENALI_SILU_EPILOGUE: "false" }, () =>
    assert.throws(
      () => siluEpilogueWanted(),
      /DENALI_SILU_EPILOGUE=false is not a choice; use 1 .* or 0 /,
    ));
  // Asked for in the environment, the epilogue runs whatever the default.
  Deno.env.set("DENALI_SILU_EPILOGUE", "1");
  try {
    await dispatch(false, [["bf16", 1, "linear_gemv_t8_r16_s2_silu"]]);
    Deno.env.set("DENALI_SILU_EPILOGUE", "yes");
    await assert.rejects(() => dispatch(false, []), /DENALI_SILU_EPILOGUE=yes is not a choice/);
  } finally {
    Deno.env.delete("DENALI_SILU_EPILOGUE");
  }
});

Deno.test("linearSiluMul (fake CUDA driver): a shape the GEMV can't take (K % 8, misaligned x) declines", async () => {
  await withFakeLinearOps(false, [9, 0], (gpu, ops: GpuLinearOps, fake) => {
    const s = gpu.createStream();
    const x = gpu.alloc(2 * 4 * 1008 + 16), out = gpu.alloc(2 * 4 * 512);
    const w = gpu.alloc(2 * 1024 * 1008);
    const before = fake.launchCount();
    assert.equal(ops.linearSiluMul(out, x, w, 1, 512, 1001, s), false, "K % 8 != 0");
    assert.equal(ops.linearSiluMul(out, x.slice(2, 2 * 1008), w, 1, 512, 1008, s), false, "x+2");
    assert.equal(fake.launchCount(), before);
  });
});

Deno.test("linearSiluMul: bad sizes throw RangeError naming the op and the argument (CPU, fake CUDA)", async () => {
  const cpu = new CpuBackend();
  const ops = cpuOps();
  const bad = (alloc: (bytes: number) => DeviceBuffer, run: GpuLinearOps["linearSiluMul"]) => {
    const x = alloc(2 * 2 * 64), out = alloc(2 * 2 * 32);
    // A weight of [n, k] instead of [2n, k].
    assert.throws(
      () => run(out, x, alloc(2 * 32 * 64), 2, 32, 64, cpu.defaultStream),
      /linearSiluMul: weight holds 4096 bytes, but \[2n, k\] = 64×64 bf16 needs 8192/,
    );
    assert.throws(
      () => run(out, x, alloc(2 * 128 * 64), 2, 64, 64, cpu.defaultStream),
      /linearSiluMul: out holds 128 bytes, but \[m, n\] = 2×64 bf16 needs 256/,
    );
    assert.throws(
      () => run(out, x, alloc(8), 0, 32, 64, cpu.defaultStream),
      /linearSiluMul: m = 0/,
    );
    assert.throws(
      () => run(out, x, alloc(8), 1, 2 ** 30 + 1, 64, cpu.defaultStream),
      /linearSiluMul: n = 1073741825 makes 2n gate\/up rows, past 2\^31-1/,
    );
  };
  bad((bytes) => cpu.alloc(bytes), ops.linearSiluMul);
  // The CPU has no fused kernel: good arguments return false, and the caller composes.
  const x = cpu.alloc(2 * 64), w = cpu.alloc(2 * 2 * 8 * 64), out = cpu.alloc(2 * 8);
  assert.equal(ops.linearSiluMul(out, x, w, 1, 8, 64, cpu.defaultStream), false);
  await withFakeLinearOps(false, [9, 0], (gpu, gops) => {
    bad((bytes) => gpu.alloc(bytes), gops.linearSiluMul);
  });
});
