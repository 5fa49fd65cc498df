/**
 * The KV block manager: exact accounting of blocks, allocation at block boundaries, prefix
 * sharing with reference counts, collision handling with injected bad hashes, LRU eviction of
 * cached blocks. Expected values are worked out by hand from the
 * block size, or (for the hash) from an independent BigInt FNV-1a 64.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BlockHashFn, BlockManager, fnv1aBlockHash } from "../../engine/block_manager.ts";
import { Sequence } from "../../engine/sequence.ts";

const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

/** Pretends a step computed every token of seq, then registers its full blocks. */
function computeAll(bm: BlockManager, seq: Sequence): void {
  seq.numComputedTokens = seq.numTokens;
  bm.commit(seq);
}

// Reference FNV-1a 64 over bytes, in BigInt: independent of the two-lane implementation.
function fnv1a64Ref(bytes: Iterable<number>): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

function leBytes(words: number[]): number[] {
  return words.flatMap((w) => [w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, (w >>> 24) & 0xff]);
}

Deno.test("reference FNV-1a 64 matches the published test vectors", () => {
  const enc = new TextEncoder();
  assert.equal(fnv1a64Ref([]), 0xcbf29ce484222325n);
  assert.equal(fnv1a64Ref(enc.encode("a")), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv1a64Ref(enc.encode("foobar")), 0x85944171f73967e8n);
});

Deno.test("fnv1aBlockHash equals FNV-1a 64 over parent (LE, low word first) then token bytes", () => {
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const out = new Uint32Array(2);
  for (let trial = 0; trial < 50; trial++) {
    const tokens = Int32Array.from(range(0, 1 + (trial % 33)), () => rand() & 0x7fffffff);
    const start = trial % 3;
    const count = tokens.length - start;
    const parentHi = rand();
    const parentLo = rand();
    fnv1aBlockHash(tokens, start, count, parentHi, parentLo, out);
    const expected = fnv1a64Ref(leBytes([parentLo, parentHi, ...tokens.subarray(start)]));
    assert.equal((BigInt(out[0]) << 32n) | BigInt(out[1]), expected, `trial ${trial}`);
  }
});

Deno.test("allocate and free hand out and take back exactly the blocks used", () => {
  const bm = new BlockManager(10, 4);
  assert.equal(bm.numFreeBlocks, 10);
  const a = new Sequence(range(1, 9)); // 9 tokens -> 3 blocks
  const b = new Sequence(range(100, 4)); // 4 tokens -> 1 block
  bm.allocate(a);
  bm.allocate(b);
  assert.equal(a.blockTable.length, 3);
  assert.equal(b.blockTable.length, 1);
  assert.equal(new Set([...a.blockTable, ...b.blockTable]).size, 4, "blocks are distinct");
  assert.equal(bm.numFreeBlocks, 6);
  assert.equal(bm.numUsedBlocks, 4);
  assert.equal(a.numComputedTokens, 0, "nothing cached yet");
  bm.free(a);
  assert.equal(bm.numFreeBlocks, 9);
  assert.deepEqual(a.blockTable, []);
  bm.free(b);
  assert.equal(bm.numFreeBlocks, 10);
  assert.equal(bm.usage, 0);
  bm.free(b); // freeing an empty table is a no-op, not a double free
  assert.equal(bm.numFreeBlocks, 10);
});

Deno.test("appendSlot adds a block only when the last one is full", () => {
  const bm = new BlockManager(8, 4);
  const s = new Sequence(range(1, 4)); // exactly one full block
  bm.allocate(s);
  assert.equal(s.blockTable.length, 1);
  const blocksAfter: number[] = [];
  for (let t = 0; t < 9; t++) {
    s.appendToken(50 + t);
    assert.equal(bm.appendSlot(s), true);
    blocksAfter.push(s.blockTable.length);
  }
  // Tokens 5..13: a new block at tokens 5 and 9 and 13 (positions 4, 8, 12).
  assert.deepEqual(blocksAfter, [2, 2, 2, 2, 3, 3, 3, 3, 4]);
  assert.equal(bm.numFreeBlocks, 4);
  assert.equal(bm.appendSlot(s), true, "no new token, no new block");
  assert.equal(s.blockTable.length, 4);
});

Deno.test("appendSlot returns false and changes nothing when no block is left", () => {
  const bm = new BlockManager(2, 2, { prefixCaching: false });
  const s = new Sequence([1, 2, 3, 4]);
  bm.allocate(s);
  s.appendToken(5);
  assert.equal(bm.canAppend(s), false);
  assert.equal(bm.appendSlot(s), false);
  assert.equal(s.blockTable.length, 2);
  assert.equal(bm.numFreeBlocks, 0);
});

Deno.test("prefix caching shares full blocks by content, with reference counts", () => {
  const bs = 4;
  const bm = new BlockManager(16, bs);
  const shared = range(1, 2 * bs);
  const a = new Sequence([...shared, 90, 91, 92]);
  bm.allocate(a);
  computeAll(bm, a);
  assert.ok(bm.isCached(a.blockTable[0]) && bm.isCached(a.blockTable[1]));
  assert.equal(bm.isCached(a.blockTable[2]), false, "a partial block is never cached");

  const b = new Sequence([...shared, 70]);
  bm.allocate(b);
  assert.deepEqual(b.blockTable.slice(0, 2), a.blockTable.slice(0, 2));
  assert.notEqual(b.blockTable[2], a.blockTable[2]);
  assert.equal(b.numComputedTokens, 2 * bs, "the shared blocks need no recompute");
  assert.equal(bm.refCount(a.blockTable[0]), 2);
  assert.equal(bm.refCount(a.blockTable[1]), 2);

  const c = new Sequence([...range(1, bs), ...range(200, bs), 5]); // differs in block 2
  bm.allocate(c);
  assert.equal(c.blockTable[0], a.blockTable[0]);
  assert.notEqual(c.blockTable[1], a.blockTable[1]);
  assert.equal(c.numComputedTokens, bs);
  assert.equal(bm.refCount(a.blockTable[0]), 3);
  assert.equal(bm.refCount(a.blockTable[1]), 2);
  // 3 (a) + 1 (b's own) + 2 (c's own) blocks in use.
  assert.equal(bm.numUsedBlocks, 6);
  assert.equal(bm.hitTokens, 3 * bs);

  for (const s of [a, b, c]) bm.free(s);
  assert.equal(bm.numFreeBlocks, 16);
  assert.equal(bm.numUsedBlocks, 0);
});

Deno.test("the block holding the last token is recomputed even when cached", () => {
  const bm = new BlockManager(8, 4);
  const a = new Sequence(range(1, 8)); // exactly two full blocks
  bm.allocate(a);
  computeAll(bm, a);
  const b = new Sequence(range(1, 8));
  bm.allocate(b);
  assert.equal(b.numComputedTokens, 4, "one token at least must run to produce logits");
  assert.equal(b.blockTable[0], a.blockTable[0]);
  assert.notEqual(b.blockTable[1], a.blockTable[1]);
  assert.equal(bm.refCount(a.blockTable[1]), 1);
});

Deno.test("blocks are shared only once computed", () => {
  const bs = 4;
  const bm = new BlockManager(8, bs);
  const prompt = range(1, 3 * bs);
  const a = new Sequence(prompt);
  bm.allocate(a);
  const early = new Sequence(prompt);
  bm.allocate(early);
  assert.equal(early.numComputedTokens, 0, "a's blocks are not computed yet");
  bm.free(early);
  a.numComputedTokens = bs + 2; // a chunked prefill has written 1.5 blocks
  bm.commit(a);
  const late = new Sequence(prompt);
  bm.allocate(late);
  assert.equal(late.numComputedTokens, bs);
  assert.equal(late.blockTable[0], a.blockTable[0]);
});

Deno.test("a hash collision is caught by comparing token ids", () => {
  const constant: BlockHashFn = (_t, _s, _c, _ph, _pl, out) => {
    out[0] = 7;
    out[1] = 7;
  };
  const bm = new BlockManager(16, 2, { hash: constant });
  const a = new Sequence([1, 2, 3, 4, 0]);
  bm.allocate(a);
  computeAll(bm, a);
  const b = new Sequence([5, 6, 3, 4, 0]); // same "hash", different tokens
  bm.allocate(b);
  assert.equal(b.numComputedTokens, 0);
  assert.ok(b.blockTable.every((x) => !a.blockTable.includes(x)));
  assert.equal(bm.refCount(a.blockTable[0]), 1);
  computeAll(bm, b); // its blocks collide with a's entry and stay private
  assert.equal(bm.isCached(b.blockTable[0]), false);
  const c = new Sequence([1, 2, 9, 9, 0]); // block 0 truly matches, block 1 collides
  bm.allocate(c);
  assert.equal(c.numComputedTokens, 2);
  assert.equal(c.blockTable[0], a.blockTable[0]);
  assert.notEqual(c.blockTable[1], a.blockTable[1]);
});

Deno.test("equal tokens under a different prefix are not a hit", () => {
  // A hash that ignores the parent: block content alone decides it.
  const tokensOnly: BlockHashFn = (t, s, c, _ph, _pl, out) => {
    fnv1aBlockHash(t, s, c, 0, 0, out);
  };
  const bm = new BlockManager(16, 2, { hash: tokensOnly });
  const a = new Sequence([1, 2, 3, 4, 0]);
  bm.allocate(a);
  computeAll(bm, a);
  const e = new Sequence([3, 4, 3, 4, 0]); // block 0 has a's block-1 tokens and hash
  bm.allocate(e);
  assert.equal(e.numComputedTokens, 0, "a's block 1 has a parent, e's block 0 has none");
});

Deno.test("a cached child of a reused parent block is not a hit", () => {
  // Sum of tokens, no chaining: easy to collide on purpose.
  const sum: BlockHashFn = (t, s, c, _ph, _pl, out) => {
    let x = 0;
    for (let i = 0; i < c; i++) x += t[s + i];
    out[0] = 0;
    out[1] = x;
  };
  const bm = new BlockManager(16, 2, { hash: sum });
  const a = new Sequence([1, 2, 5, 6, 0]);
  bm.allocate(a);
  computeAll(bm, a);
  const k = new Sequence([0, 3, 7, 8, 0]); // block 0 collides with a's (sum 3): k0 stays private
  bm.allocate(k);
  computeAll(bm, k);
  const [k0, k1] = k.blockTable;
  assert.equal(bm.isCached(k0), false);
  assert.equal(bm.isCached(k1), true, "k1 is cached with parent k0");
  bm.free(k);
  const n = new Sequence([9, 9, 0]);
  bm.allocate(n);
  assert.equal(n.blockTable[0], k0, "precondition: k0 is reused for new content");
  computeAll(bm, n);
  assert.equal(bm.isCached(k0), true);
  // [9, 9] hits k0; [7, 8] finds k1 whose parent id is k0, but k0's content changed since.
  const q = new Sequence([9, 9, 7, 8, 0]);
  bm.allocate(q);
  assert.equal(q.blockTable[0], k0);
  assert.equal(q.numComputedTokens, 2);
  assert.notEqual(q.blockTable[1], k1);
});

Deno.test("cached blocks wait on an LRU list and are reclaimed only when nothing is free", () => {
  const bs = 2;
  const bm = new BlockManager(6, bs);
  const a = new Sequence([1, 2, 3, 4, 5]); // 3 blocks; 2 full ones get cached
  bm.allocate(a);
  computeAll(bm, a);
  const [a0, a1, a2] = a.blockTable;
  bm.free(a);
  assert.equal(bm.numFreeBlocks, 6);
  assert.equal(bm.numEvictableBlocks, 2);
  assert.ok(bm.isCached(a0) && bm.isCached(a1) && !bm.isCached(a2));

  // 4 blocks: the 4 uncached ones first (a2 included), no eviction.
  const b = new Sequence([11, 12, 13, 14, 15, 16, 17]);
  bm.allocate(b);
  assert.ok(!b.blockTable.includes(a0) && !b.blockTable.includes(a1));
  assert.equal(bm.numEvictableBlocks, 2);

  // One more block: the free stack is empty, so the LRU's oldest goes: a's tail block, a1.
  const c = new Sequence([21]);
  bm.allocate(c);
  assert.deepEqual(c.blockTable, [a1]);
  assert.equal(bm.isCached(a1), false, "evicted blocks leave the cache");
  assert.equal(bm.isCached(a0), true);

  bm.free(b);
  const d = new Sequence([1, 2, 3, 4, 5]);
  bm.allocate(d);
  assert.equal(d.blockTable[0], a0, "the surviving head block still hits");
  assert.equal(d.numComputedTokens, 2);
});

Deno.test("canAllocate counts reused evictable blocks against the pool", () => {
  const bm = new BlockManager(3, 2);
  const a = new Sequence([1, 2, 3, 4, 5]);
  bm.allocate(a);
  computeAll(bm, a);
  bm.free(a); // 2 evictable + 1 free
  const same = new Sequence([1, 2, 3, 4, 5, 6]); // 2 hits (evictable) + 1 new block
  assert.equal(bm.canAllocate(same), true);
  const longer = new Sequence([1, 2, 3, 4, 5, 6, 7]); // 2 hits + 2 new blocks > 3
  assert.equal(bm.canAllocate(longer), false);
  assert.throws(
    () => bm.allocate(longer),
    /sequence \d+ needs 4 blocks \(2 cached\) but only 3 are free; call canAllocate first/,
  );
  assert.equal(bm.numFreeBlocks, 3, "a refused allocation changes nothing");
  bm.allocate(same);
  assert.equal(bm.numFreeBlocks, 0);
  assert.throws(() => bm.allocate(same), /already holds blocks; free it first/);
});

Deno.test("with prefix caching off nothing is shared", () => {
  const bm = new BlockManager(8, 2, { prefixCaching: false });
  const a = new Sequence([1, 2, 3, 4, 5]);
  bm.allocate(a);
  computeAll(bm, a);
  const b = new Sequence([1, 2, 3, 4, 5]);
  bm.allocate(b);
  assert.equal(b.numComputedTokens, 0);
  assert.equal(bm.numUsedBlocks, 6);
  bm.free(a);
  assert.equal(bm.numEvictableBlocks, 0);
});

Deno.test("bad constructor arguments are refused by name", () => {
  assert.throws(
    () => new BlockManager(0, 16),
    /numBlocks must be an integer in \[1, 2\^30\], got 0/,
  );
  assert.throws(() => new BlockManager(4, 1.5), /blockSize must be an integer >= 1, got 1.5/);
});
