/**
 * The default batch limits by device, and how a given limit pulls the other along.
 *
 * @module
 */

import assert from "node:assert/strict";
import { batchLimits, LARGE_DEVICE_BYTES } from "../../engine/batch_limits.ts";

const H100 = { kind: "cuda", totalMemory: 80 * 2 ** 30 };
const SMALL_GPU = { kind: "hip", totalMemory: 24 * 2 ** 30 };
const BIG_CPU = { kind: "cpu", totalMemory: 512 * 2 ** 30 };

Deno.test("batch limits: 1024 and 8192 on a large GPU, 256 and 2048 elsewhere", () => {
  assert.deepEqual(batchLimits({}, H100), { maxRunning: 1024, maxBatchedTokens: 8192 });
  assert.deepEqual(batchLimits({}, { kind: "cuda", totalMemory: LARGE_DEVICE_BYTES }), {
    maxRunning: 1024,
    maxBatchedTokens: 8192,
  });
  assert.deepEqual(batchLimits({}, { kind: "cuda", totalMemory: LARGE_DEVICE_BYTES - 1 }), {
    maxRunning: 256,
    maxBatchedTokens: 2048,
  });
  assert.deepEqual(batchLimits({}, SMALL_GPU), { maxRunning: 256, maxBatchedTokens: 2048 });
  assert.deepEqual(batchLimits({}, BIG_CPU), { maxRunning: 256, maxBatchedTokens: 2048 });
});

Deno.test("batch limits: a given limit is kept and the other stays consistent with it", () => {
  assert.deepEqual(batchLimits({ maxRunning: 64 }, H100), {
    maxRunning: 64,
    maxBatchedTokens: 8192,
  });
  assert.deepEqual(batchLimits({ maxRunning: 4096 }, SMALL_GPU), {
    maxRunning: 4096,
    maxBatchedTokens: 4096,
  });
  assert.deepEqual(batchLimits({ maxBatchedTokens: 512 }, H100), {
    maxRunning: 512,
    maxBatchedTokens: 512,
  });
  assert.deepEqual(batchLimits({ maxBatchedTokens: 4096 }, SMALL_GPU), {
    maxRunning: 256,
    maxBatchedTokens: 4096,
  });
  assert.deepEqual(batchLimits({ maxRunning: 8, maxBatchedTokens: 32 }, H100), {
    maxRunning: 8,
    maxBatchedTokens: 32,
  });
});
