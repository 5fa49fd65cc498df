/**
 * The decode partition size (ops/gpu/attention.ts decodePartSize) against hand-computed cases:
 * Llama-3-8B's 8 KV heads with 4 query heads a block (8 head blocks), on 132 SMs at four blocks
 * each (528 target blocks), and the invariants the workspace size rests on; where the ragged
 * split applies, and its slack.
 */

import assert from "node:assert/strict";
import {
  decodePartSize,
  decodeRaggedMmaWanted,
  decodeRaggedRowsWanted,
  decodeRaggedSlackWanted,
  raggedSplitParts,
} from "../ops/gpu/attention.ts";
import { withEnv } from "./support/env.ts";

const HEAD_BLOCKS = 8, TARGET = 528;

Deno.test("decodePartSize: a batch that fills the device alone is not split below 2048", () => {
  // 256 × 8 = 2048 blocks >= 528: one partition of ceil(530 / 32) · 32 tokens, no reduce.
  assert.equal(decodePartSize(256, 530, HEAD_BLOCKS, TARGET), 544);
  assert.equal(decodePartSize(256, 513, HEAD_BLOCKS, TARGET), 544);
  assert.equal(decodePartSize(66, 512, HEAD_BLOCKS, TARGET), 512); // 528 blocks: the boundary
  assert.equal(decodePartSize(128, 2048, HEAD_BLOCKS, TARGET), 2048);
  // Past 2048, even parts: 4096 = 2 × 2048; 5000 = 3 parts of ceil(5000 / 3 / 32) · 32 = 1696.
  assert.equal(decodePartSize(256, 4096, HEAD_BLOCKS, TARGET), 2048);
  assert.equal(decodePartSize(256, 5000, HEAD_BLOCKS, TARGET), 1696);
});

Deno.test("decodePartSize: a smaller batch takes the fewest partitions of 32..512 that fill it", () => {
  // 1 × 8 × ceil(16384 / 256) = 512 <= 528, while 128-token parts would make 1024 blocks.
  assert.equal(decodePartSize(1, 16384, HEAD_BLOCKS, TARGET), 256);
  assert.equal(decodePartSize(1, 100, HEAD_BLOCKS, TARGET), 32);
  assert.equal(decodePartSize(8, 2000, HEAD_BLOCKS, TARGET), 256); // 64 × 8 = 512 blocks
  // No power of two up to 256 fits: even parts of at most 512.
  assert.equal(decodePartSize(8, 16384, HEAD_BLOCKS, TARGET), 512); // 32 parts
  assert.equal(decodePartSize(32, 530, HEAD_BLOCKS, TARGET), 288); // 2 parts, not 512 + 18
  assert.equal(decodePartSize(64, 4096, HEAD_BLOCKS, TARGET), 512);
  assert.equal(decodePartSize(40, 1025, HEAD_BLOCKS, TARGET), 352); // 3 parts of 342 → 352
});

Deno.test("decodePartSize: from 0.7 of the target, one partition up to 2048 tokens", () => {
  // 46 × 8 = 368 < 0.7 × 528 = 369.6 <= 47 × 8 = 376.
  assert.equal(decodePartSize(46, 1024, HEAD_BLOCKS, TARGET), 512);
  assert.equal(decodePartSize(47, 1024, HEAD_BLOCKS, TARGET), 1024);
  assert.equal(decodePartSize(64, 530, HEAD_BLOCKS, TARGET), 544);
  assert.equal(decodePartSize(64, 2048, HEAD_BLOCKS, TARGET), 2048);
  // Past 2048 the grid is not full: even partitions of at most 512 keep it busy (5 of 416).
  assert.equal(decodePartSize(64, 2049, HEAD_BLOCKS, TARGET), 416);
});

Deno.test("decodePartSize: an empty context takes the shortest partition", () => {
  assert.equal(decodePartSize(1, 0, HEAD_BLOCKS, TARGET), 32);
  assert.equal(decodePartSize(512, 0, HEAD_BLOCKS, TARGET), 32);
});

Deno.test("decodePartSize: multiples of 32 up to 2048, and at most ceil(ctx / 512) partitions past one wave", () => {
  // decodeWorkspaceBytes sizes the partials as max(target blocks' rows, batch × heads ×
  // ceil(ctx / 512)): every choice must stay within one or the other.
  for (const batch of [1, 2, 3, 7, 8, 16, 33, 64, 65, 66, 100, 256, 1024]) {
    for (let ctx = 1; ctx <= 40000; ctx += 97) {
      const part = decodePartSize(batch, ctx, HEAD_BLOCKS, TARGET);
      const parts = Math.ceil(ctx / part);
      assert.ok(
        part % 32 === 0 && part >= 32 && part <= 2048,
        `batch ${batch} ctx ${ctx}: ${part}`,
      );
      const grid = batch * HEAD_BLOCKS * parts;
      assert.ok(
        grid <= TARGET || parts <= Math.ceil(ctx / 512),
        `batch ${batch} ctx ${ctx}: part ${part} makes ${parts} partitions`,
      );
      // Split in a few long parts, none is left nearly empty (a full part and a few rows).
      if (part > 256 && parts <= 4) {
        assert.ok(ctx - (parts - 1) * part > part / 2, `batch ${batch} ctx ${ctx}: ${part}`);
      }
    }
  }
});

Deno.test("raggedSplitParts: full batches of one partition a sequence, under twice the target", () => {
  // Batch 64 × 8 = 512 rows (0.97 of 528) take one partition up to 2048: the grid gets
  // ceil(ctx / 512) partitions for the kernel to size.
  assert.equal(raggedSplitParts(64, 1303, HEAD_BLOCKS, TARGET), 3);
  assert.equal(raggedSplitParts(64, 2048, HEAD_BLOCKS, TARGET), 4);
  assert.equal(raggedSplitParts(47, 1024, HEAD_BLOCKS, TARGET), 2);
  assert.equal(raggedSplitParts(131, 2048, HEAD_BLOCKS, TARGET), 4); // 1048 < 1056 rows
  // Not past twice the target, not past 2048 tokens, not where 512 tokens hold everything.
  assert.equal(raggedSplitParts(132, 2048, HEAD_BLOCKS, TARGET), 0);
  assert.equal(raggedSplitParts(64, 2049, HEAD_BLOCKS, TARGET), 0);
  assert.equal(raggedSplitParts(64, 512, HEAD_BLOCKS, TARGET), 0);
  // A smaller batch is split by decodePartSize already.
  assert.equal(raggedSplitParts(46, 1024, HEAD_BLOCKS, TARGET), 0);
  // A longer reach (DENALI_DECODE_RAGGED_ROWS): up to 4 × 528 rows, batch 263.
  assert.equal(raggedSplitParts(132, 2048, HEAD_BLOCKS, TARGET, 4), 4);
  assert.equal(raggedSplitParts(263, 1300, HEAD_BLOCKS, TARGET, 4), 3);
  assert.equal(raggedSplitParts(264, 1300, HEAD_BLOCKS, TARGET, 4), 0);
  assert.equal(raggedSplitParts(64, 1300, HEAD_BLOCKS, TARGET, 1), 3); // 512 < 528
  assert.equal(raggedSplitParts(66, 1300, HEAD_BLOCKS, TARGET, 1), 0);
  // Every grid fits the workspace decodeWorkspaceBytes sizes (ceil(ctx / 512) partitions).
  for (let batch = 1; batch <= 300; batch++) {
    for (let ctx = 1; ctx <= 4096; ctx += 61) {
      const parts = raggedSplitParts(batch, ctx, HEAD_BLOCKS, TARGET);
      assert.ok(parts === 0 || (parts >= 2 && parts <= Math.ceil(ctx / 512)), `${batch} ${ctx}`);
    }
  }
});

Deno.test("decodeRaggedSlackWanted: the option, else DENALI_DECODE_RAGGED, else 2; bad ones named", () => {
  const env = (value: string | undefined, body: () => void) =>
    withEnv({ DENALI_DECODE_RAGGED: value }, body);
  env(undefined, () => {
    assert.equal(decodeRaggedSlackWanted(), 2);
    assert.equal(decodeRaggedSlackWanted(0), 0);
    assert.equal(decodeRaggedSlackWanted(1.25), 1.25);
    assert.throws(() => decodeRaggedSlackWanted(-1), /decodeRaggedSlack must be 0 \(off\)/);
  });
  env("0", () => assert.equal(decodeRaggedSlackWanted(), 0));
  env("3.75", () => {
    assert.equal(decodeRaggedSlackWanted(), 3.75);
    assert.equal(decodeRaggedSlackWanted(1.5), 1.5, "an explicit option wins over the environment");
  });
  for (const bad of ["0.5", "1.1", "4", "off"]) {
    env(bad, () =>
      assert.throws(
        () => decodeRaggedSlackWanted(),
        new RangeError(
          "DENALI_DECODE_RAGGED must be 0 (off) or 1..3.75 in steps of 0.25 (the ragged decode " +
            `split's slack; default 2), got ${bad}`,
        ),
      ));
  }
});

Deno.test("decodeRaggedRowsWanted: the option, else DENALI_DECODE_RAGGED_ROWS, else 2; bad ones named", () => {
  const env = (value: string | undefined, body: () => void) =>
    withEnv({ DENALI_DECODE_RAGGED_ROWS: value }, body);
  env(undefined, () => {
    assert.equal(decodeRaggedRowsWanted(), 2);
    assert.equal(decodeRaggedRowsWanted(4), 4);
    assert.throws(() => decodeRaggedRowsWanted(NaN), /decodeRaggedRows must be a number from 1/);
  });
  env("3.5", () => {
    assert.equal(decodeRaggedRowsWanted(), 3.5);
    assert.equal(decodeRaggedRowsWanted(1), 1, "an explicit option wins over the environment");
  });
  for (const bad of ["0", "0.9", "9", "many"]) {
    env(bad, () =>
      assert.throws(
        () => decodeRaggedRowsWanted(),
        new RangeError(
          "DENALI_DECODE_RAGGED_ROWS must be a number from 1 to 8 (the batches the ragged decode " +
            `split reaches, in block targets of rows; default 2), got ${bad}`,
        ),
      ));
  }
});

Deno.test("decodeRaggedMmaWanted: the option, else DENALI_DECODE_RAGGED_MMA, else on; bad ones named", () => {
  const env = (value: string | undefined, body: () => void) =>
    withEnv({ DENALI_DECODE_RAGGED_MMA: value }, body);
  env(undefined, () => {
    assert.equal(decodeRaggedMmaWanted(), true);
    assert.equal(decodeRaggedMmaWanted(false), false);
  });
  env("0", () => {
    assert.equal(decodeRaggedMmaWanted(), false);
    assert.equal(decodeRaggedMmaWanted(true), true, "an explicit option wins over the environment");
  });
  env("1", () => assert.equal(decodeRaggedMmaWanted(), true));
  for (const bad of ["yes", "2", "true"]) {
    env(bad, () =>
      assert.throws(
        () => decodeRaggedMmaWanted(),
        new RangeError(
          `DENALI_DECODE_RAGGED_MMA=${bad} is not 0 or 1 (whether the tensor-core decode kernels ` +
            "take the ragged split; default 1)",
        ),
      ));
  }
});
