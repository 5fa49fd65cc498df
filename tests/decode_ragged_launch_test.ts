/**
 * How decodeAttention asks for the ragged split, through the fake driver: a batch that fills the
 * device with one partition a sequence gets ceil(maxContext / 512) partitions in its grid and a
 * negative partSize, -(targetBlocks · 16 + slack in quarters), for the kernel to size them from
 * the contexts (kernels/src/attention.cu ragged_part_size), on either kernel family (the
 * tensor-core one unless decodeRaggedMma is false); the slack 0 and the reduce kernel keep the
 * launch-time size.
 *
 * @module
 */

import assert from "node:assert/strict";
import { configPreset } from "../models/config.ts";
import { attentionShape } from "../models/model.ts";
import type { AttentionKernelOptions } from "../ops/gpu/attention.ts";
import type { AttentionShape } from "../ops/ops.ts";
import type { FakeLaunch } from "./fake_driver/fake.ts";
import { AttentionCalls, withFakeAttentionOps } from "./support/attention_calls.ts";

/** Llama-3-8B heads: 8 head blocks of 4 query heads (decode_attn_d128_g4). */
const SHAPE = attentionShape(configPreset("llama3-8b"), 16);
/** The fake reports 132 SMs: 8 / 132 blocks an SM make a target of 8, so batch 1 fills it. */
const PER_SM = 8 / 132;
/** Byte offsets of partSize and numParts among the decode kernels' packed arguments. */
const PART_SIZE_AT = 84, NUM_PARTS_AT = 88;

/** [kernel, grid x, partSize, numParts] of a batch-1 decode at `context` tokens. */
async function decodeAt(
  context: number,
  options: AttentionKernelOptions,
  shape: AttentionShape = SHAPE,
): Promise<[string, number, number, number]> {
  let launch: FakeLaunch | undefined;
  await withFakeAttentionOps({ launchEx: true }, options, (gpu, ops, fake) => {
    const calls = new AttentionCalls(gpu, ops, fake, shape, 4096);
    try {
      launch = calls.decode(context).last;
    } finally {
      calls.free();
    }
  });
  const { args, functionName, grid } = launch!;
  const view = new DataView(args.buffer, args.byteOffset, args.byteLength);
  return [
    functionName,
    grid[0],
    view.getInt32(PART_SIZE_AT, true),
    view.getInt32(NUM_PARTS_AT, true),
  ];
}

Deno.test("ragged split: a full batch gets ceil(maxContext / 512) partitions sized in the kernel", async () => {
  // Slack 2 is 8 quarters: -(8 · 16 + 8).
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: PER_SM }),
    ["decode_attn_d128_g4", 3, -136, 3],
  );
  assert.deepEqual(
    await decodeAt(2048, { decodeBlocksPerSm: PER_SM, decodeRaggedSlack: 1.25 }),
    ["decode_attn_d128_g4", 4, -133, 4],
  );
  // Past twice the target (8 rows against 3) only with a longer reach: -(3 · 16 + 8).
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: 3 / 132 }),
    ["decode_attn_d128_g4", 1, 1504, 1],
  );
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: 3 / 132, decodeRaggedRows: 4 }),
    ["decode_attn_d128_g4", 3, -56, 3],
  );
  const fp8: AttentionShape = { ...SHAPE, kvDtype: "fp8", kScale: 1, vScale: 1 };
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: PER_SM }, fp8),
    ["decode_attn_fp8_d128_g4", 3, -136, 3],
  );
});

Deno.test("ragged split: the mma kernels take it too, unless decodeRaggedMma is false", async () => {
  const mma = { decodeBlocksPerSm: PER_SM };
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "mma" }),
    ["decode_attn_mma_d128_g4", 3, -136, 3],
  );
  const fp8: AttentionShape = { ...SHAPE, kvDtype: "fp8", kScale: 1, vScale: 1 };
  // auto: an FP8 cache runs mma (four blocks an SM), which splits; a bf16 one at 8 rows of a
  // target of 8 runs fma.
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "auto" }, fp8),
    ["decode_attn_fp8_mma4_d128_g4", 3, -136, 3],
  );
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "auto" }),
    ["decode_attn_d128_g4", 3, -136, 3],
  );
  // Its own slack, reach and the reduce kernel still rule it.
  assert.deepEqual(
    await decodeAt(2048, { ...mma, decodeKernel: "mma", decodeRaggedSlack: 1.25 }),
    ["decode_attn_mma_d128_g4", 4, -133, 4],
  );
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "mma", decodeRaggedSlack: 0 }),
    ["decode_attn_mma_d128_g4", 1, 1504, 1],
  );
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "mma", decodeReduce: "kernel" }),
    ["decode_attn_mma_d128_g4", 1, 1504, 1],
  );
  // Told not to: one partition, as before session 25; the fma kernels still split.
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "auto", decodeRaggedMma: false }, fp8),
    ["decode_attn_fp8_mma4_d128_g4", 1, 1504, 1],
  );
  assert.deepEqual(
    await decodeAt(1500, { ...mma, decodeKernel: "fma", decodeRaggedMma: false }, fp8),
    ["decode_attn_fp8_d128_g4", 3, -136, 3],
  );
});

Deno.test("ragged split: off with slack 0, up to 512 tokens, and for decode_reduce", async () => {
  // One partition of the whole context, as before the split existed.
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: PER_SM, decodeRaggedSlack: 0 }),
    ["decode_attn_d128_g4", 1, 1504, 1],
  );
  // Not at the bound itself: 8 rows against a target of 8 with a reach of 1.
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: PER_SM, decodeRaggedRows: 1 }),
    ["decode_attn_d128_g4", 1, 1504, 1],
  );
  assert.deepEqual(
    await decodeAt(500, { decodeBlocksPerSm: PER_SM }),
    ["decode_attn_d128_g4", 1, 512, 1],
  );
  assert.deepEqual(
    await decodeAt(1500, { decodeBlocksPerSm: PER_SM, decodeReduce: "kernel" }),
    ["decode_attn_d128_g4", 1, 1504, 1],
  );
  // A batch under 0.7 of the target is split at launch as before (4 blocks an SM: 528 blocks,
  // 8 × 47 of 32 tokens).
  assert.deepEqual(await decodeAt(1500, {}), ["decode_attn_d128_g4", 47, 32, 47]);
});
