/**
 * qkvRope's cache write (QkvRopeArgs.cache) on the CPU op set: the cache rows it writes are the
 * k and v rows it returns, at the token's slot in kvWrite's paged layout (block, head, offset),
 * bf16 as they are and fp8 as backends/fp8.ts quantizes them; padding and out-of-cache slots
 * write nothing; and the checks name what is wrong. The layout is recomputed here by hand, not
 * through kvWrite.
 *
 * @module
 */

import assert from "node:assert/strict";
import { encodeBf16, fromBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { quantizeE4m3 } from "../../backends/fp8.ts";
import { cpuElementwiseOps } from "../../ops/cpu/elementwise.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import type { AttentionShape, QkvRopeArgs } from "../../ops/ops.ts";
import { createRopeTable, ropeInverseFrequencies } from "../../models/rope.ts";
import { readInto } from "../support/device.ts";
import { randomArray } from "../support/numeric.ts";

const cpu = new CpuBackend();
const stream = cpu.defaultStream;
const HEADS = 4, KV_HEADS = 2, HEAD_DIM = 8, BLOCK = 4, BLOCKS = 5, TOKENS = 3;

function shapeOf(kvDtype?: "fp8"): AttentionShape {
  const base = {
    numHeads: HEADS,
    numKvHeads: KV_HEADS,
    headDim: HEAD_DIM,
    blockSize: BLOCK,
    scale: 1 / Math.sqrt(HEAD_DIM),
  };
  return kvDtype ? { ...base, kvDtype, kScale: 0.25, vScale: 1.5 } : base;
}

/** A call over random q|k|v rows; slots 9 (block 2, offset 1), -1 (padding) and 17. */
function setUp(shape: AttentionShape) {
  const width = (HEADS + 2 * KV_HEADS) * HEAD_DIM, kvWidth = KV_HEADS * HEAD_DIM;
  const bytesPer = shape.kvDtype === "fp8" ? 1 : 2;
  const cacheBytes = BLOCKS * KV_HEADS * BLOCK * HEAD_DIM * bytesPer;
  const buffer = (data: ArrayBufferView | number) => {
    const bytes = typeof data === "number" ? data : data.byteLength;
    const b = cpu.alloc(bytes);
    if (typeof data !== "number") cpu.copyToDevice(b, data);
    return b;
  };
  const sentinel = new Uint8Array(cacheBytes).fill(0x5a);
  const args: QkvRopeArgs = {
    q: buffer(2 * TOKENS * HEADS * HEAD_DIM),
    k: buffer(2 * TOKENS * kvWidth),
    v: buffer(2 * TOKENS * kvWidth),
    qkv: buffer(encodeBf16(randomArray(TOKENS * width, 5, -2, 2))),
    positions: buffer(Int32Array.of(3, 0, 7)),
    table: createRopeTable(cpu, ropeInverseFrequencies(HEAD_DIM, 10000)),
    bias: null,
    qNorm: null,
    kNorm: null,
    eps: 1e-6,
    tokens: TOKENS,
    numHeads: HEADS,
    numKvHeads: KV_HEADS,
    cache: {
      kCache: buffer(sentinel),
      vCache: buffer(sentinel),
      slots: buffer(Int32Array.of(9, -1, 17)),
      shape,
    },
  };
  return { args, cacheBytes, kvWidth };
}

for (const kvDtype of [undefined, "fp8"] as const) {
  Deno.test(`qkvRope with a ${kvDtype ?? "bf16"} cache writes its k and v rows at each slot`, () => {
    const shape = shapeOf(kvDtype);
    const { args, cacheBytes, kvWidth } = setUp(shape);
    const ops = cpuOps();
    ops.qkvRope(args, stream);
    const k = readInto(cpu, args.k, new Uint16Array(TOKENS * kvWidth));
    const v = readInto(cpu, args.v, new Uint16Array(TOKENS * kvWidth));
    const cache = args.cache!;
    const caches = [[cache.kCache, k, 0.25], [cache.vCache, v, 1.5]] as const;
    for (const [buffer, rows, scale] of caches) {
      const got = readInto(cpu, buffer, new Uint8Array(cacheBytes));
      const expected = new Uint8Array(cacheBytes).fill(0x5a);
      const view = new DataView(expected.buffer);
      // Slot 9: block 2, offset 1; slot 17: block 4, offset 1; token 1 is padding.
      for (const [t, block, offset] of [[0, 2, 1], [2, 4, 1]]) {
        for (let h = 0; h < KV_HEADS; h++) {
          const row = ((block * KV_HEADS + h) * BLOCK + offset) * HEAD_DIM;
          for (let d = 0; d < HEAD_DIM; d++) {
            const bits = rows[t * kvWidth + h * HEAD_DIM + d];
            if (kvDtype === "fp8") expected[row + d] = quantizeE4m3(fromBf16Bits(bits), scale);
            else view.setUint16(2 * (row + d), bits, true);
          }
        }
      }
      assert.deepEqual(got, expected);
    }
    // The k rows are rotated (position 3 is not the identity), so the cache holds RoPE's output.
    const unrotated = readInto(cpu, args.qkv, new Uint16Array((HEADS + 2 * KV_HEADS) * HEAD_DIM))
      .subarray(HEADS * HEAD_DIM, HEADS * HEAD_DIM + kvWidth);
    assert.notDeepEqual(k.subarray(0, kvWidth), unrotated);
  });
}

Deno.test("qkvRope's cache write rejects a mismatched shape, a small cache, and a lone family", () => {
  const { args } = setUp(shapeOf());
  const ops = cpuOps();
  const cache = args.cache!;
  assert.throws(
    () =>
      ops.qkvRope(
        { ...args, cache: { ...cache, shape: { ...cache.shape, numKvHeads: 1 } } },
        stream,
      ),
    /qkvRope: cache.shape has 1 KV heads of 8, the projection 2 of 8; pass the layer's own/,
  );
  assert.throws(
    () => ops.qkvRope({ ...args, cache: { ...cache, kCache: cpu.alloc(16) } }, stream),
    /qkvRope: kCache has 16 bytes, needs 128 \(one cache block\)/,
  );
  assert.throws(
    () => ops.qkvRope({ ...args, cache: { ...cache, slots: cpu.alloc(4) } }, stream),
    /qkvRope: slots has 4 bytes, needs 12 \(tokens i32\)/,
  );
  assert.throws(
    () => cpuElementwiseOps().qkvRope(args, stream),
    /qkvRope: the CPU elementwise family alone cannot write the KV cache .* use cpuOps\(\)/,
  );
  // A failed check leaves the record as the caller built it.
  assert.equal(args.cache, cache);
});
