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
  quantizedGemvSplitForGrid,
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

Deno.test("quantizedGemvSplitForGrid: halves the split exactly where the grid goes from 1-2 waves to one", () => {
  // Against the definition, over shapes and occupancies: the split is the default one unless the
  // default grid passes one wave of `slots` and the halved grid fits in it.
  let halved = 0;
  for (const rows of [16, 8]) {
    for (const k of [512, 1024, 3584, 4096, 14336]) {
      for (let n = 256; n <= 32768; n += 1792) {
        for (const slots of [132, 264, 396, 1056]) {
          const base = quantizedGemvSplit(k, rows);
          const split = quantizedGemvSplitForGrid(k, n, rows, slots);
          const want = base >= 2 && gemvGridBlocks(n, rows, base) > slots &&
              gemvGridBlocks(n, rows, base / 2) <= slots
            ? base / 2
            : base;
          assert.equal(split, want, `rows=${rows} k=${k} n=${n} slots=${slots}`);
          if (split !== base) halved++;
        }
      }
    }
  }
  assert.ok(halved > 0, "some grid halves");
  // The H100 shapes (two blocks an SM, 264 slots): only the 6144-row grid (384 blocks) halves.
  assert.deepEqual(
    [6144, 4096, 1024, 28672].map((n) => quantizedGemvSplitForGrid(4096, n, 16, 264)),
    [4, 8, 8, 8],
  );
  // One step of K: nothing to halve.
  assert.equal(quantizedGemvSplitForGrid(256, 1 << 20, 16, 1), 1);
});
