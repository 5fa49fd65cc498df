/**
 * Which kernels the GPU attention ops launch for an fp8 KV cache, through the fake driver: the
 * fp8 instantiations (kv_write_fp8, decode_attn_fp8_*, prefill_attn_fp8_* / _simt_fp8_*) with
 * the layer's K and V scales as the two trailing f32 arguments, every other argument and the
 * launch geometry as the bf16 kernels get them; a bf16 shape launches the bf16 kernels with
 * their arguments unchanged.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import { configPreset } from "../models/config.ts";
import { attentionShape } from "../models/model.ts";
import {
  type AttentionKernelOptions,
  decodeBlocksPerSmWanted,
  type GpuAttentionOps,
} from "../ops/gpu/attention.ts";
import type { AttentionShape } from "../ops/ops.ts";
import type { FakeControl, FakeLaunch } from "./fake_driver/fake.ts";
import { AttentionCalls, withFakeAttentionOps } from "./support/attention_calls.ts";
import { withEnv } from "./support/env.ts";

/** Llama-3-8B heads (group of 4, head dim 128) and a 2-group head-dim-64 shape. */
const BF16_128 = attentionShape(configPreset("llama3-8b"), 16);
const BF16_64: AttentionShape = { ...BF16_128, numHeads: 16, numKvHeads: 8, headDim: 64 };
/** f32-exact scales that differ, so a swap or a dropped scale shows. */
const K_SCALE = 0.5, V_SCALE = 3;
const fp8 = (shape: AttentionShape): AttentionShape => ({
  ...shape,
  kvDtype: "fp8",
  kScale: K_SCALE,
  vScale: V_SCALE,
});
const MAX_CONTEXT = 4096;

/**
 * The launches of one kvWrite, a one-partition decode (the decode kernel), a split decode's last
 * launch (decode_reduce, with ops loaded with decodeReduce "kernel") and a prefill over `shape`.
 */
interface Launched {
  kvWrite: FakeLaunch;
  decode: FakeLaunch[];
  prefill: FakeLaunch;
}

function launchAll(
  gpu: GpuBackend,
  ops: GpuAttentionOps,
  fake: FakeControl,
  shape: AttentionShape,
): Launched {
  const calls = new AttentionCalls(gpu, ops, fake, shape, MAX_CONTEXT);
  try {
    const kvWrite = calls.kvWrite();
    // One partition (the decode kernel alone), then a split one (its last launch is the reduce).
    const decode = [calls.decode(32).last, calls.decode(MAX_CONTEXT).last];
    return { kvWrite, decode, prefill: calls.prefill() };
  } finally {
    calls.free();
  }
}

/**
 * Runs `body` over attention ops loaded with `options` on a CUDA backend over the fake driver,
 * split decodes reduced by decode_reduce (the launch these tests compare).
 */
function withOps(
  options: AttentionKernelOptions,
  body: (gpu: GpuBackend, ops: GpuAttentionOps, fake: FakeControl) => void,
): Promise<void> {
  return withFakeAttentionOps({ launchEx: true }, { decodeReduce: "kernel", ...options }, body);
}

/**
 * A decode launch's scalar arguments (numHeads .. scale): the bytes after its eight pointers, the
 * same for every decode kernel (the FMA ones then pass the fused reduce's counters).
 */
function decodeScalars(launch: FakeLaunch): number[] {
  return [...launch.args.slice(64, 100)];
}

/** The two f32s a launch's packed arguments end with. */
function trailingScales(launch: FakeLaunch): [number, number] {
  const view = new DataView(launch.args.buffer, launch.args.byteOffset, launch.args.byteLength);
  const end = launch.args.byteLength;
  return [view.getFloat32(end - 8, true), view.getFloat32(end - 4, true)];
}

/** Asserts the fp8 launch is the bf16 one with an fp8 name and the scales appended. */
function assertFp8Twin(bf16: FakeLaunch, fp8Launch: FakeLaunch, name: string): void {
  assert.equal(fp8Launch.functionName, name);
  assert.deepEqual(
    [fp8Launch.grid, fp8Launch.block, fp8Launch.sharedMem, fp8Launch.programmatic],
    [bf16.grid, bf16.block, bf16.sharedMem, bf16.programmatic],
    name,
  );
  assert.equal(fp8Launch.args.byteLength, bf16.args.byteLength + 8, `${name}: two more f32s`);
  assert.deepEqual(trailingScales(fp8Launch), [K_SCALE, V_SCALE], `${name}: kScale, vScale`);
}

for (
  const [label, options, prefix] of [
    ["tensor-core prefill", {}, "prefill_attn_"],
    ["portable prefill", { prefill: "simt" }, "prefill_attn_simt_"],
  ] as const
) {
  Deno.test(`attention fp8 launch (${label}): fp8 kernels, scales last, bf16 geometry`, async () => {
    await withOps(options, (gpu, ops, fake) => {
      for (const [shape, d, g] of [[BF16_128, 128, 4], [BF16_64, 64, 2]] as const) {
        const bf16 = launchAll(gpu, ops, fake, shape);
        const f8 = launchAll(gpu, ops, fake, fp8(shape));
        // The bf16 shape launches what it did before the fp8 cache: names and argument sizes.
        assert.deepEqual(
          [bf16.kvWrite, ...bf16.decode, bf16.prefill].map((l) => [l.functionName, l.args.length]),
          [
            ["kv_write", 56],
            [`decode_attn_d${d}_g${g}`, 112],
            ["decode_reduce", 52],
            [`${prefix}d${d}`, 88],
          ],
        );
        assertFp8Twin(bf16.kvWrite, f8.kvWrite, "kv_write_fp8");
        assertFp8Twin(bf16.decode[0], f8.decode[0], `decode_attn_fp8_d${d}_g${g}`);
        // The reduce reads f32 partials only: the same kernel and launch (its pointers differ,
        // being other buffers; its scalars, the last 20 bytes, do not).
        assert.equal(f8.decode[1].functionName, "decode_reduce");
        assert.deepEqual(
          [f8.decode[1].grid, f8.decode[1].args.length, [...f8.decode[1].args.slice(-20)]],
          [bf16.decode[1].grid, bf16.decode[1].args.length, [...bf16.decode[1].args.slice(-20)]],
        );
        assertFp8Twin(bf16.prefill, f8.prefill, `${prefix}fp8_d${d}`);
        // Absent scales are 1.
        const plain = launchAll(gpu, ops, fake, { ...shape, kvDtype: "fp8" });
        assert.deepEqual(trailingScales(plain.decode[0]), [1, 1]);
      }
    });
  });
}

Deno.test("attention fp8: the decode workspace is the bf16 shape's", async () => {
  await withOps({}, (_gpu, ops) => {
    for (const [batch, ctx] of [[1, 16], [8, 16384], [64, 2048]]) {
      assert.equal(
        ops.decodeWorkspaceBytes(batch, ctx, fp8(BF16_128)),
        ops.decodeWorkspaceBytes(batch, ctx, BF16_128),
      );
    }
  });
});

Deno.test("attention decodeKernel mma: the tensor-core twins, same geometry and arguments", async () => {
  let base: Launched | null = null, base8: Launched | null = null;
  await withOps({}, (gpu, fma, fake) => {
    assert.equal(fma.decodeKernel, "fma");
    base = launchAll(gpu, fma, fake, BF16_128);
    base8 = launchAll(gpu, fma, fake, fp8(BF16_128));
  });
  await withOps({ decodeKernel: "mma" }, (gpu, mma, fake) => {
    assert.equal(mma.decodeKernel, "mma");
    const cases: [AttentionShape, Launched, string][] = [
      [BF16_128, base!, "decode_attn_mma_d128_g4"],
      // Four blocks an SM at head dim 128 on an FP8 cache (decodeMmaBlocks' default).
      [fp8(BF16_128), base8!, "decode_attn_fp8_mma4_d128_g4"],
    ];
    for (const [shape, fmaRun, name] of cases) {
      const run = launchAll(gpu, mma, fake, shape);
      const [one, split] = run.decode;
      const was = fmaRun.decode[0];
      assert.equal(one.functionName, name);
      assert.deepEqual(
        [one.grid, one.block, one.sharedMem, one.programmatic, decodeScalars(one)],
        [was.grid, was.block, was.sharedMem, was.programmatic, decodeScalars(was)],
        `${name}: the fma kernel's geometry and scalar arguments`,
      );
      // The same arguments: the counters pointer (null here) after the scale, then any scales.
      assert.equal(one.args.length, was.args.length);
      if (shape.kvDtype === "fp8") assert.deepEqual(trailingScales(one), [K_SCALE, V_SCALE]);
      // With decodeReduce "kernel" the split decode still ends with the shared reduce; kvWrite
      // and prefill are unchanged.
      assert.equal(split.functionName, "decode_reduce");
      assert.equal(run.kvWrite.functionName, fmaRun.kvWrite.functionName);
      assert.equal(run.prefill.functionName, fmaRun.prefill.functionName);
    }
  });
});

Deno.test("decode blocks per SM: the option, else DENALI_DECODE_PER_SM, else 4; bad ones named", () => {
  const env = (value: string | undefined, body: () => void) =>
    withEnv({ DENALI_DECODE_PER_SM: value }, body);
  env(undefined, () => {
    assert.equal(decodeBlocksPerSmWanted(), 4);
    assert.equal(decodeBlocksPerSmWanted(8), 8);
    // The option may ask for under one block (the GPU tests' long partitions), never for none.
    assert.equal(decodeBlocksPerSmWanted(1 / 1024), 1 / 1024);
    for (const bad of [0, -1, 65, NaN]) {
      assert.throws(
        () => decodeBlocksPerSmWanted(bad),
        new RangeError(
          `decodeBlocksPerSm must be a number in (0, 64] (decode blocks per SM; default 4), got ${bad}`,
        ),
      );
    }
  });
  env("16", () => {
    assert.equal(decodeBlocksPerSmWanted(), 16);
    assert.equal(decodeBlocksPerSmWanted(2), 2, "an explicit option wins over the environment");
  });
  for (const bad of ["0", "2.5", "many", "65"]) {
    env(bad, () =>
      assert.throws(
        () => decodeBlocksPerSmWanted(),
        new RangeError(
          `DENALI_DECODE_PER_SM must be an integer in 1..64 (decode blocks per SM; default 4), got ${bad}`,
        ),
      ));
  }
});
