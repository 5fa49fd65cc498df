/**
 * Which decode kernel family a call runs under `decodeKernel: "auto"` (the default on CUDA),
 * through the fake driver: the tensor-core twins on an FP8 cache, and on a bf16 cache for a call
 * of at most a quarter of the block target's rows or at least twice them, the fma kernels between
 * (decodeUsesMma); `fma` and `mma` pin a family whatever the batch and cache; `decodeMmaBlocks`
 * 4 (the default) takes the FP8-cache head-dim-128 kernels built for four blocks an SM, 3 the
 * ones before them.
 *
 * @module
 */

import assert from "node:assert/strict";
import { configPreset } from "../models/config.ts";
import { attentionShape } from "../models/model.ts";
import {
  type AttentionKernelOptions,
  decodeKernelWanted,
  decodeMmaBlocksWanted,
  decodeUsesMma,
} from "../ops/gpu/attention.ts";
import type { AttentionShape } from "../ops/ops.ts";
import { AttentionCalls, withFakeAttentionOps } from "./support/attention_calls.ts";
import { withEnv, withEnvAsync } from "./support/env.ts";

/** Llama-3-8B heads: a batch-1 call is 8 rows (head blocks of 4 query heads). */
const SHAPE = attentionShape(configPreset("llama3-8b"), 16);
const FP8: AttentionShape = { ...SHAPE, kvDtype: "fp8", kScale: 0.5, vScale: 3 };
/** The fake reports 132 SMs: `blocks / 132` an SM make a block target of `blocks`. */
const target = (blocks: number): AttentionKernelOptions => ({ decodeBlocksPerSm: blocks / 132 });

/** The kernel of a batch-1 decode of 32 tokens (one partition: one launch) under `options`. */
async function decodeKernelOf(
  options: AttentionKernelOptions,
  shape: AttentionShape = SHAPE,
): Promise<string> {
  let name = "";
  await withFakeAttentionOps({ launchEx: true }, options, (gpu, ops, fake) => {
    const calls = new AttentionCalls(gpu, ops, fake, shape, 1024);
    try {
      const { launches, last } = calls.decode(32);
      assert.equal(launches, 1);
      name = last.functionName;
    } finally {
      calls.free();
    }
  });
  return name;
}

Deno.test("decodeUsesMma: auto takes mma on an FP8 cache, on bf16 to a quarter of the target and from twice it", () => {
  const cases: [number, number, boolean][] = [
    [8, 528, true], // batch 1 of Llama on 132 SMs × 4
    [132, 528, true], // the quarter itself
    [133, 528, false],
    [512, 528, false], // batch 64: one fma wave
    [1055, 528, false],
    [1056, 528, true], // twice the target: batch 132
    [2048, 528, true],
  ];
  for (const [rows, blocks, mma] of cases) {
    assert.equal(decodeUsesMma("auto", rows, blocks, false), mma, `${rows} rows, target ${blocks}`);
    assert.equal(decodeUsesMma("auto", rows, blocks, true), true);
    for (const fp8 of [false, true]) {
      assert.equal(decodeUsesMma("fma", rows, blocks, fp8), false);
      assert.equal(decodeUsesMma("mma", rows, blocks, fp8), true);
    }
  }
});

Deno.test("auto decode kernels: the family follows the call's rows against the target", async () => {
  const auto = (blocks: number) => ({ decodeKernel: "auto" as const, ...target(blocks) });
  // 8 rows: a quarter of 32 or less, mma; 31 and 16, fma; 4 (twice is 8), mma.
  assert.equal(await decodeKernelOf(auto(32)), "decode_attn_mma_d128_g4");
  assert.equal(await decodeKernelOf(auto(31)), "decode_attn_d128_g4");
  assert.equal(await decodeKernelOf(auto(16)), "decode_attn_d128_g4");
  assert.equal(await decodeKernelOf(auto(4)), "decode_attn_mma_d128_g4");
  assert.equal(await decodeKernelOf(auto(32), FP8), "decode_attn_fp8_mma4_d128_g4");
  assert.equal(await decodeKernelOf(auto(16), FP8), "decode_attn_fp8_mma4_d128_g4");
  assert.equal(
    await decodeKernelOf({ decodeKernel: "fma", ...target(16) }, FP8),
    "decode_attn_fp8_d128_g4",
  );
  // The default (no option, no environment) is auto: 8 rows against 4 · 132.
  await withEnvAsync({ DENALI_DECODE_ATTN: undefined }, async () => {
    assert.equal(await decodeKernelOf({ decodeKernel: undefined }), "decode_attn_mma_d128_g4");
  });
  // A pinned family whatever the rows.
  assert.equal(await decodeKernelOf({ decodeKernel: "fma", ...target(4) }), "decode_attn_d128_g4");
  assert.equal(
    await decodeKernelOf({ decodeKernel: "mma", ...target(16) }),
    "decode_attn_mma_d128_g4",
  );
});

Deno.test("DENALI_DECODE_ATTN picks the decode kernels, and names the choices when wrong", () => {
  withEnv({ DENALI_DECODE_ATTN: undefined }, () => {
    assert.equal(decodeKernelWanted(), "auto");
    assert.equal(decodeKernelWanted("mma"), "mma");
  });
  for (const kernel of ["fma", "mma", "auto"] as const) {
    withEnv({ DENALI_DECODE_ATTN: kernel }, () => assert.equal(decodeKernelWanted(), kernel));
  }
  withEnv({ DENALI_DECODE_ATTN: "mma" }, () => {
    assert.equal(decodeKernelWanted("fma"), "fma", "an explicit option wins over the environment");
  });
  withEnv({ DENALI_DECODE_ATTN: "wmma" }, () => {
    assert.throws(() => decodeKernelWanted(), /DENALI_DECODE_ATTN=wmma .*use fma, mma or auto/);
  });
});

Deno.test("decodeMmaBlocks: 4 (the default) swaps in the FP8 head-dim-128 mma kernels for four blocks an SM, nothing else", async () => {
  const four = { decodeMmaBlocks: 4, ...target(32) } as const;
  assert.equal(
    await decodeKernelOf({ ...four, decodeKernel: "auto" }, FP8),
    "decode_attn_fp8_mma4_d128_g4",
  );
  assert.equal(
    await decodeKernelOf({ ...four, decodeKernel: "mma" }, FP8),
    "decode_attn_fp8_mma4_d128_g4",
  );
  // The bf16 mma kernels, the fma kernels and head dim 64 keep their own.
  assert.equal(await decodeKernelOf({ ...four, decodeKernel: "mma" }), "decode_attn_mma_d128_g4");
  assert.equal(
    await decodeKernelOf({ ...four, decodeKernel: "fma" }, FP8),
    "decode_attn_fp8_d128_g4",
  );
  const d64: AttentionShape = { ...FP8, numHeads: 16, numKvHeads: 8, headDim: 64, scale: 0.125 };
  assert.equal(
    await decodeKernelOf({ ...four, decodeKernel: "mma" }, d64),
    "decode_attn_fp8_mma_d64_g2",
  );
  // Three: the kernels the family had before, q's fragments in registers.
  assert.equal(
    await decodeKernelOf({ decodeMmaBlocks: 3, decodeKernel: "mma", ...target(32) }, FP8),
    "decode_attn_fp8_mma_d128_g4",
  );
  // The default, with neither option nor environment.
  await withEnvAsync({ DENALI_DECODE_MMA_BLOCKS: undefined }, async () => {
    assert.equal(
      await decodeKernelOf({ decodeKernel: "mma", ...target(32) }, FP8),
      "decode_attn_fp8_mma4_d128_g4",
    );
  });
});

Deno.test("DENALI_DECODE_MMA_BLOCKS picks 3 or 4 (default 4), and names the choices when wrong", () => {
  withEnv({ DENALI_DECODE_MMA_BLOCKS: undefined }, () => {
    assert.equal(decodeMmaBlocksWanted(), 4);
    assert.equal(decodeMmaBlocksWanted(3), 3);
  });
  withEnv({ DENALI_DECODE_MMA_BLOCKS: "4" }, () => {
    assert.equal(decodeMmaBlocksWanted(), 4);
  });
  withEnv({ DENALI_DECODE_MMA_BLOCKS: "3" }, () => {
    assert.equal(decodeMmaBlocksWanted(), 3);
    assert.equal(decodeMmaBlocksWanted(4), 4, "an explicit option wins over the environment");
  });
  for (const bad of ["2", "four", "5"]) {
    withEnv({ DENALI_DECODE_MMA_BLOCKS: bad }, () => {
      assert.throws(
        () => decodeMmaBlocksWanted(),
        new RangeError(
          `DENALI_DECODE_MMA_BLOCKS=${bad} is not 3 or 4 (blocks an SM of the FP8-cache ` +
            "tensor-core decode kernels of head dim 128; default 4)",
        ),
      );
    });
  }
});
