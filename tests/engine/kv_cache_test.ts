/**
 * The device KV cache: sizing from free memory (expected values worked out by hand), and the
 * buffers on the CPU backend — layout sizes, the zeroed scratch block, and that a failed
 * allocation frees what it took.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import { capacityFromMemory, kvBytesPerBlock, KvCache } from "../../engine/kv_cache.ts";

Deno.test("kvBytesPerBlock and capacityFromMemory size the cache", () => {
  // Llama 3 8B: 32 layers, 8 KV heads of 128, bf16, 16 tokens: 2·32·8·16·128·2 = 2 MiB.
  const per = kvBytesPerBlock({ numLayers: 32, numKvHeads: 8, headDim: 128, blockSize: 16 });
  assert.equal(per, 2 * 2 ** 20);
  const cap = capacityFromMemory(10 * 2 ** 30, 0.9, per, 16);
  assert.equal(cap.numBlocks, Math.floor((9 * 2 ** 30) / (2 * 2 ** 20))); // 4608
  assert.equal(cap.bytes, 4608 * per);
  assert.match(cap.description, /^KV cache: 4608 blocks × 16 tokens = 73728 tokens, 9\.00 GiB/);
  assert.match(cap.description, /0\.9 of 10\.00 GiB free/);
  assert.equal(capacityFromMemory(2 * per - 1, 1, per).numBlocks, 1);
});

Deno.test("capacityFromMemory names the numbers and the remedy when nothing fits", () => {
  assert.throws(
    () => capacityFromMemory(1000, 0.5, 600),
    /0\.5 of 1000 free bytes .* less than one block of 600 bytes; free device memory, raise/,
  );
  assert.throws(() => capacityFromMemory(1e9, 0, 100), /fraction must be in \(0, 1\], got 0/);
  assert.throws(() => capacityFromMemory(1e9, 1.5, 100), /fraction must be in \(0, 1\], got 1.5/);
  assert.throws(() => capacityFromMemory(-1, 0.5, 100), /freeBytes must be .* got -1/);
  assert.throws(() => capacityFromMemory(1e9, 0.5, 0), /bytesPerBlock must be an integer >= 1/);
  assert.throws(
    () => kvBytesPerBlock({ numLayers: 32, numKvHeads: 0, headDim: 128, blockSize: 16 }),
    /numKvHeads must be an integer >= 1, got 0/,
  );
});

Deno.test("KvCache allocates every layer with a zeroed scratch block, and frees on failure", () => {
  const backend = new CpuBackend();
  const shape = { numLayers: 3, numKvHeads: 2, headDim: 8, blockSize: 4 };
  const blockBytes = 2 * 4 * 8 * 2;
  const stream = backend.defaultStream;
  const cache = new KvCache(backend, shape, 5, stream);
  try {
    assert.equal(cache.scratchBlock, 5);
    assert.equal(cache.bytesPerBlock, kvBytesPerBlock(shape));
    for (let l = 0; l < 3; l++) {
      for (const buffer of [cache.k(l), cache.v(l)]) {
        assert.equal(buffer.bytes, 6 * blockBytes);
        const bytes = new Uint8Array(blockBytes);
        backend.copyToHost(bytes, buffer.slice(5 * blockBytes, blockBytes));
        assert.ok(bytes.every((b) => b === 0), `layer ${l}: scratch block not zeroed`);
      }
    }
  } finally {
    cache.free();
  }

  // Out of memory on the fourth buffer: the three before it are released, the error passes on.
  const live = new Set<unknown>();
  let allocs = 0;
  const failing = Object.create(backend, {
    alloc: {
      value: (bytes: number) => {
        if (++allocs === 4) throw new Error("out of memory (test)");
        const buffer = backend.alloc(bytes);
        live.add(buffer);
        return buffer;
      },
    },
    free: { value: (buffer: unknown) => live.delete(buffer) },
  });
  assert.throws(() => new KvCache(failing, shape, 5, stream), /out of memory \(test\)/);
  assert.equal(live.size, 0);
  assert.throws(() => new KvCache(backend, shape, 0, stream), /numBlocks must be an integer >= 1/);
});
