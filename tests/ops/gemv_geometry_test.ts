/**
 * The GEMVs' shared geometry (ops/gpu/gemv_geometry.ts): the forced K split that loadLinearOps,
 * loadFp8Ops and loadAwqOps all check the same way, and the default split and grid it replaces.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  forcedGemvSplit,
  gemvGridBlocks,
  gemvSplitOf16,
  gemvStagesFor,
  quantizedGemvSplit,
  waveFill,
} from "../../ops/gpu/gemv_geometry.ts";

Deno.test("forcedGemvSplit: unset is 0 (not forced), 1/2/4/8 pass, anything else names the option", () => {
  assert.equal(forcedGemvSplit("loadAwqOps: gemvSplit", undefined), 0);
  for (const split of [1, 2, 4, 8]) assert.equal(forcedGemvSplit("x", split), split);
  for (const bad of [0, 3, 16, -1, 2.5, NaN]) {
    assert.throws(
      () => forcedGemvSplit("loadFp8Ops: gemvSplit", bad),
      new RangeError(`loadFp8Ops: gemvSplit must be 1, 2, 4 or 8, got ${bad}`),
    );
  }
});

Deno.test("quantized GEMV geometry: K = 4096 splits 8 ways on 16 rows; the grid covers N", () => {
  // 4096 / 256 = 16 steps of 16 rows → 8; 1280 / 256 = 5 steps → 4; 256 → 1 step → 1.
  assert.deepEqual([4096, 1280, 256].map((k) => quantizedGemvSplit(k, 16)), [8, 4, 1]);
  // 28672 rows: one 16-row group a block at split 8; 4 groups (64 rows) at split 2; a tail rounds up.
  assert.equal(gemvGridBlocks(28672, 16, 8), 1792);
  assert.equal(gemvGridBlocks(28672, 16, 2), 448);
  assert.equal(gemvGridBlocks(4360, 16, 1), 35);
});

Deno.test("waveFill: blocks over the slots of the waves they take", () => {
  assert.equal(waveFill(264, 264), 1);
  assert.equal(waveFill(288, 264), 288 / 528);
  assert.equal(waveFill(132, 264), 0.5);
  assert.equal(waveFill(1792, 264), 1792 / (7 * 264));
  // No blocks, or no slots (a kernel that cannot launch so), fill nothing.
  assert.equal(waveFill(0, 264), 0);
  assert.equal(waveFill(100, 0), 0);
});

Deno.test("gemvStagesFor: one step only where it fills the waves strictly fuller than two", () => {
  // 132 SMs, 3 blocks an SM with one step, 2 with two: one step for 265..396 blocks, and again
  // where two steps would leave a short last wave that one does not (1100: 0.93 against 0.83).
  const at = (blocks: number) => gemvStagesFor(blocks, 132, 3, 2);
  assert.deepEqual(
    [1, 256, 264, 265, 288, 384, 396, 397, 896, 1100].map(at),
    [2, 2, 2, 1, 1, 1, 1, 2, 2, 1],
  );
  // Both kernels fit the same number an SM (the 8-row GEMVs), or the one-step one cannot launch.
  assert.equal(gemvStagesFor(300, 132, 2, 2), 2);
  assert.equal(gemvStagesFor(300, 132, 0, 2), 2);
});

Deno.test("gemvSplitOf16: split 4 for 2-4 waves where half the blocks fill them as full", () => {
  const slots = 2 * 132;
  // Split-8 grids of 2 or 4 waves halve with the same fill: 4.
  assert.deepEqual([288, 384, 896].map((b) => gemvSplitOf16(b, slots)), [4, 4, 4]);
  // One wave or fewer, 3 waves (the half-size grid emptier), or past 4 waves (Qwen3-8B's gate/up
  // at 1536 blocks, 6 waves, though the fills tie): 8.
  assert.deepEqual(
    [64, 224, 256, 264, 700, 1536, 1792, 8016].map((b) => gemvSplitOf16(b, slots)),
    [8, 8, 8, 8, 8, 8, 8, 8],
  );
});
