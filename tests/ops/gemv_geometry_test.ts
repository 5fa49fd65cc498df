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
  quantizedGemvSplit,
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
