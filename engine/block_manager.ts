/**
 * Where each sequence's K/V lives: a fixed pool of `numBlocks` blocks of `blockSize` tokens,
 * per-sequence block tables, and prefix caching. Pure bookkeeping over block numbers; the device
 * buffers are engine/kv_cache.ts's, sized by its `capacityFromMemory`.
 *
 * A block is in exactly one of three states:
 * - free: on the free stack, content meaningless;
 * - in use: refCount > 0, held by that many sequences' block tables;
 * - evictable: refCount 0 but its content is cached (registered under its hash), kept on an LRU
 *   list and reclaimed only when the free stack is empty, so a later request with the same
 *   prefix can still hit it.
 *
 * Prefix caching. A FULL block whose K/V is computed is registered under a 64-bit hash of its
 * token ids chained with the previous block's hash (FNV-1a 64, below). A new sequence walks its
 * blocks from the start and reuses every registered block that matches, stopping at the first
 * miss. Collisions are handled by verification, never trusted: a hit counts only if the stored
 * token ids equal the sequence's AND the stored parent is the block the sequence just reused (same
 * physical id and same generation, so a parent that was evicted and reused does not match). With
 * both checks a hit is exact whatever the hash function does; a collision only costs a cache
 * miss. Two different blocks never share a hash entry: the first registered keeps it and the
 * other stays private (uncached) — correct, merely uncached.
 *
 * Blocks are registered only after their K/V is computed (`commit`), so no sequence can reuse a
 * block that a chunked prefill has not written yet. The last block of a new sequence is never a
 * hit, even if cached: at least one token must be computed to get the logits to sample from.
 *
 * Nothing in allocate / appendSlot / free / commit allocates: the free list is an Int32Array
 * stack, the LRU an intrusive doubly linked list over Int32Arrays, and the hash index an
 * open-addressing table over an Int32Array.
 *
 * @module
 */

import type { Sequence } from "./sequence.ts";

/**
 * Hashes tokens[start, start + count) chained with the parent hash (parentHi:parentLo, 0:0 for
 * the first block) into out[0] (high 32 bits) and out[1] (low 32 bits), allocating nothing.
 */
export type BlockHashFn = (
  tokens: ArrayLike<number>,
  start: number,
  count: number,
  parentHi: number,
  parentLo: number,
  out: Uint32Array,
) => void;

// FNV-1a 64: offset basis 0xcbf29ce484222325, prime 0x100000001b3 = 2^40 + 0x1b3.
const FNV_BASIS_HI = 0xcbf29ce4;
const FNV_BASIS_LO = 0x84222325;
const FNV_PRIME_LO = 0x1b3;
const TWO_32 = 4294967296;

/**
 * FNV-1a 64 (the standard byte-wise algorithm) over the parent hash as 8 little-endian bytes
 * (low word first) followed by each token id as 4 little-endian bytes, without BigInt: the state
 * is two u32 lanes, and multiplying by 2^40 + 0x1b3 is lo·0x1b3 (exact in a double, < 2^41) plus
 * a carry into hi·0x1b3, plus lo shifted into the high lane by 40 − 32 = 8 bits.
 */
export const fnv1aBlockHash: BlockHashFn = (tokens, start, count, parentHi, parentLo, out) => {
  let hi = FNV_BASIS_HI;
  let lo = FNV_BASIS_LO;
  for (let w = -2; w < count; w++) {
    let word = w === -2 ? parentLo : w === -1 ? parentHi : tokens[start + w];
    for (let b = 0; b < 4; b++) {
      lo = (lo ^ (word & 0xff)) >>> 0;
      word >>>= 8;
      const p = lo * FNV_PRIME_LO;
      hi = (Math.imul(hi, FNV_PRIME_LO) + Math.floor(p / TWO_32) + (lo << 8)) >>> 0;
      lo = p >>> 0;
    }
  }
  out[0] = hi;
  out[1] = lo;
};

/** Options of a BlockManager. */
export interface BlockManagerOptions {
  /** Share full blocks across sequences by content (default true). */
  readonly prefixCaching?: boolean;
  /** The block hash; tests inject colliding ones. Default `fnv1aBlockHash`. */
  readonly hash?: BlockHashFn;
}

const NONE = -1;

/** Allocates KV-cache blocks to sequences, with reference-counted prefix sharing. */
export class BlockManager {
  /** Blocks in the pool. */
  readonly numBlocks: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Whether full blocks are shared by content. */
  readonly prefixCaching: boolean;
  /** Prompt tokens looked up in the prefix cache so far (for the hit rate). */
  queriedTokens = 0;
  /** Of those, tokens served from cached blocks. */
  hitTokens = 0;

  readonly #hash: BlockHashFn;
  readonly #refCount: Int32Array;
  readonly #freeStack: Int32Array;
  #freeTop: number;
  // Evictable LRU: head is the least recently freed, evicted first.
  readonly #lruPrev: Int32Array;
  readonly #lruNext: Int32Array;
  #lruHead = NONE;
  #lruTail = NONE;
  #lruCount = 0;
  // Registered (cached) block metadata.
  readonly #cached: Uint8Array;
  readonly #hashHi: Uint32Array;
  readonly #hashLo: Uint32Array;
  readonly #parent: Int32Array;
  readonly #parentGen: Uint32Array;
  readonly #gen: Uint32Array;
  readonly #blockTokens: Int32Array;
  // Open-addressing index (linear probing, load <= 1/2): slot -> block id or NONE.
  readonly #index: Int32Array;
  readonly #indexMask: number;
  readonly #indexShift: number;
  readonly #scratch = new Uint32Array(2);
  // The last probe, so canAllocate followed by allocate hashes the prompt once.
  readonly #probeHits: Int32Array;
  #probeCount = 0;
  #probeEvictable = 0;
  #probeChainHi = 0;
  #probeChainLo = 0;
  #probeSeq: Sequence | null = null;
  #probeTokens = 0;
  #probeVersion = -1;
  #version = 0;

  /**
   * @param numBlocks blocks in the pool (see kv_cache.ts `capacityFromMemory`)
   * @param blockSize tokens per block
   */
  constructor(numBlocks: number, blockSize: number, options: BlockManagerOptions = {}) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1 || numBlocks > 1 << 30) {
      throw new RangeError(
        `BlockManager: numBlocks must be an integer in [1, 2^30], got ${numBlocks}`,
      );
    }
    if (!Number.isInteger(blockSize) || blockSize < 1) {
      throw new RangeError(`BlockManager: blockSize must be an integer >= 1, got ${blockSize}`);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.prefixCaching = options.prefixCaching ?? true;
    this.#hash = options.hash ?? fnv1aBlockHash;
    this.#refCount = new Int32Array(numBlocks);
    this.#freeStack = new Int32Array(numBlocks);
    // Reversed, so the first allocations pop 0, 1, 2, ...: easier to read in logs and tests.
    for (let i = 0; i < numBlocks; i++) this.#freeStack[i] = numBlocks - 1 - i;
    this.#freeTop = numBlocks;
    this.#lruPrev = new Int32Array(numBlocks).fill(NONE);
    this.#lruNext = new Int32Array(numBlocks).fill(NONE);
    this.#probeHits = new Int32Array(numBlocks);
    const cacheBlocks = this.prefixCaching ? numBlocks : 0;
    this.#cached = new Uint8Array(cacheBlocks);
    this.#hashHi = new Uint32Array(cacheBlocks);
    this.#hashLo = new Uint32Array(cacheBlocks);
    this.#parent = new Int32Array(cacheBlocks);
    this.#parentGen = new Uint32Array(cacheBlocks);
    this.#gen = new Uint32Array(cacheBlocks);
    this.#blockTokens = new Int32Array(cacheBlocks * blockSize);
    let bits = 1;
    while (1 << bits < 2 * cacheBlocks) bits++;
    this.#index = new Int32Array(1 << bits).fill(NONE);
    this.#indexMask = (1 << bits) - 1;
    this.#indexShift = 32 - bits;
  }

  /** Blocks a sequence of `numTokens` tokens occupies. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** Blocks that can be handed out now: free plus evictable. */
  get numFreeBlocks(): number {
    return this.#freeTop + this.#lruCount;
  }

  /** Blocks held by at least one sequence. */
  get numUsedBlocks(): number {
    return this.numBlocks - this.#freeTop - this.#lruCount;
  }

  /** Unused blocks that still hold cached content. */
  get numEvictableBlocks(): number {
    return this.#lruCount;
  }

  /** Fraction of blocks held by sequences, for /metrics. */
  get usage(): number {
    return this.numUsedBlocks / this.numBlocks;
  }

  /** How many sequences hold `block`. */
  refCount(block: number): number {
    return this.#refCount[block];
  }

  /** Whether `block` is registered in the prefix cache. */
  isCached(block: number): boolean {
    return this.prefixCaching && this.#cached[block] === 1;
  }

  /** Whether `seq`'s tokens (prompt, plus any generated before a preemption) fit now. */
  canAllocate(seq: Sequence): boolean {
    this.#probe(seq);
    const fresh = this.blocksFor(seq.numTokens) - this.#probeCount;
    // Reusing an evictable block takes it out of the pool just as a fresh block does.
    return fresh + this.#probeEvictable <= this.numFreeBlocks;
  }

  /**
   * Gives `seq` blocks for all its tokens, reusing cached prefix blocks, and sets
   * numComputedTokens to the tokens those cover. Throws if it does not fit: check canAllocate.
   */
  allocate(seq: Sequence): void {
    if (seq.blockTable.length !== 0) {
      throw new Error(
        `BlockManager.allocate: sequence ${seq.id} already holds blocks; free it first`,
      );
    }
    if (!this.canAllocate(seq)) {
      throw new Error(
        `BlockManager.allocate: sequence ${seq.id} needs ${this.blocksFor(seq.numTokens)} blocks ` +
          `(${this.#probeCount} cached) but only ${this.numFreeBlocks} are free; ` +
          `call canAllocate first and wait or preempt`,
      );
    }
    const hits = this.#probeCount;
    for (let i = 0; i < hits; i++) {
      const b = this.#probeHits[i];
      if (this.#refCount[b] === 0) this.#lruRemove(b);
      this.#refCount[b]++;
      seq.blockTable.push(b);
    }
    const total = this.blocksFor(seq.numTokens);
    for (let i = hits; i < total; i++) seq.blockTable.push(this.#takeFresh());
    seq.numComputedTokens = hits * this.blockSize;
    seq.hashedBlocks = hits;
    seq.chainHashHi = this.#probeChainHi;
    seq.chainHashLo = this.#probeChainLo;
    if (this.prefixCaching) {
      this.queriedTokens += seq.numTokens;
      this.hitTokens += hits * this.blockSize;
    }
    this.#version++;
  }

  /** Whether appendSlot would succeed for `seq` now. */
  canAppend(seq: Sequence): boolean {
    return this.blocksFor(seq.numTokens) - seq.blockTable.length <= this.numFreeBlocks;
  }

  /**
   * Makes sure every token of `seq` (in particular the last, about to be fed) has a slot, adding
   * a block when the last one is full. Returns false, changing nothing, when no block is left;
   * the scheduler then preempts.
   */
  appendSlot(seq: Sequence): boolean {
    const need = this.blocksFor(seq.numTokens) - seq.blockTable.length;
    if (need <= 0) return true;
    if (need > this.numFreeBlocks) return false;
    for (let i = 0; i < need; i++) seq.blockTable.push(this.#takeFresh());
    this.#version++;
    return true;
  }

  /**
   * Releases `seq`'s blocks and resets its KV progress. Blocks no one else holds go to the
   * evictable LRU if cached, else to the free stack. The tail is released first, so the tail
   * of a prefix is evicted before its head, which other requests are likelier to share.
   */
  free(seq: Sequence): void {
    const table = seq.blockTable;
    for (let i = table.length - 1; i >= 0; i--) {
      const b = table[i];
      if (--this.#refCount[b] > 0) continue;
      if (this.prefixCaching && this.#cached[b] === 1) this.#lruAppend(b);
      else this.#freeStack[this.#freeTop++] = b;
    }
    table.length = 0;
    seq.numComputedTokens = 0;
    seq.hashedBlocks = 0;
    seq.chainHashHi = 0;
    seq.chainHashLo = 0;
    this.#version++;
  }

  /**
   * Registers the blocks of `seq` that became full and computed since the last call, so later
   * requests can share them. Call after each successful step that computed tokens of `seq`.
   */
  commit(seq: Sequence): void {
    if (!this.prefixCaching) return;
    const bs = this.blockSize;
    const full = Math.min(Math.floor(seq.numComputedTokens / bs), seq.blockTable.length);
    const out = this.#scratch;
    for (let i = seq.hashedBlocks; i < full; i++) {
      this.#hash(seq.tokenBuffer, i * bs, bs, seq.chainHashHi, seq.chainHashLo, out);
      const b = seq.blockTable[i];
      if (this.#cached[b] === 0 && this.#lookup(out[0], out[1]) === NONE) {
        this.#register(
          b,
          out[0],
          out[1],
          i > 0 ? seq.blockTable[i - 1] : NONE,
          seq.tokenBuffer,
          i * bs,
        );
      }
      seq.chainHashHi = out[0];
      seq.chainHashLo = out[1];
      seq.hashedBlocks = i + 1;
    }
  }

  /** One line for logs: pool size and current occupancy. */
  describe(): string {
    return `KV blocks: ${this.numBlocks} × ${this.blockSize} tokens = ` +
      `${this.numBlocks * this.blockSize} tokens; ${this.numUsedBlocks} in use, ` +
      `${this.#lruCount} cached, ${this.#freeTop} free; prefix caching ` +
      (this.prefixCaching ? "on" : "off");
  }

  // Finds the longest verified cached prefix of seq into #probeHits, memoised per (seq, state).
  #probe(seq: Sequence): void {
    if (
      this.#probeSeq === seq && this.#probeVersion === this.#version &&
      this.#probeTokens === seq.numTokens
    ) return;
    this.#probeSeq = seq;
    this.#probeVersion = this.#version;
    this.#probeTokens = seq.numTokens;
    this.#probeCount = 0;
    this.#probeEvictable = 0;
    this.#probeChainHi = 0;
    this.#probeChainLo = 0;
    if (!this.prefixCaching) return;
    const bs = this.blockSize;
    // Blocks lying wholly before the last token: the last token is always recomputed.
    // Hits are distinct blocks, so numBlocks also bounds them.
    const eligible = Math.min(Math.floor((seq.numTokens - 1) / bs), this.numBlocks);
    const out = this.#scratch;
    const tokens = seq.tokenBuffer;
    let parent = NONE;
    for (let i = 0; i < eligible; i++) {
      this.#hash(tokens, i * bs, bs, this.#probeChainHi, this.#probeChainLo, out);
      const b = this.#lookup(out[0], out[1]);
      if (b === NONE || this.#parent[b] !== parent) break;
      if (parent !== NONE && this.#parentGen[b] !== this.#gen[parent]) break;
      if (!this.#sameTokens(b, tokens, i * bs)) break;
      this.#probeHits[i] = b;
      this.#probeCount++;
      if (this.#refCount[b] === 0) this.#probeEvictable++;
      this.#probeChainHi = out[0];
      this.#probeChainLo = out[1];
      parent = b;
    }
  }

  #sameTokens(block: number, tokens: Int32Array, start: number): boolean {
    const bs = this.blockSize;
    const base = block * bs;
    for (let i = 0; i < bs; i++) {
      if (this.#blockTokens[base + i] !== tokens[start + i]) return false;
    }
    return true;
  }

  // A block with no content worth keeping: the free stack first, else the LRU's oldest.
  #takeFresh(): number {
    let b: number;
    if (this.#freeTop > 0) {
      b = this.#freeStack[--this.#freeTop];
    } else {
      b = this.#lruHead;
      this.#lruRemove(b);
      this.#unregister(b);
    }
    this.#refCount[b] = 1;
    // A new generation: cached children of the block's old content no longer match it.
    if (this.prefixCaching) this.#gen[b] = (this.#gen[b] + 1) >>> 0;
    return b;
  }

  #register(b: number, hi: number, lo: number, parent: number, tokens: Int32Array, start: number) {
    this.#cached[b] = 1;
    this.#hashHi[b] = hi;
    this.#hashLo[b] = lo;
    this.#parent[b] = parent;
    this.#parentGen[b] = parent === NONE ? 0 : this.#gen[parent];
    const base = b * this.blockSize;
    for (let i = 0; i < this.blockSize; i++) this.#blockTokens[base + i] = tokens[start + i];
    let slot = this.#home(hi, lo);
    while (this.#index[slot] !== NONE) slot = (slot + 1) & this.#indexMask;
    this.#index[slot] = b;
    this.#version++;
  }

  // Removes b from the index with backward-shift deletion, so probing needs no tombstones.
  #unregister(b: number): void {
    const index = this.#index;
    const mask = this.#indexMask;
    let hole = this.#home(this.#hashHi[b], this.#hashLo[b]);
    while (index[hole] !== b) hole = (hole + 1) & mask;
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      const e = index[j];
      if (e === NONE) break;
      const home = this.#home(this.#hashHi[e], this.#hashLo[e]);
      // e may fill the hole only if its home is not cyclically within (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      index[hole] = e;
      hole = j;
    }
    index[hole] = NONE;
    this.#cached[b] = 0;
  }

  #lookup(hi: number, lo: number): number {
    let slot = this.#home(hi, lo);
    for (;;) {
      const e = this.#index[slot];
      if (e === NONE) return NONE;
      if (this.#hashHi[e] === hi && this.#hashLo[e] === lo) return e;
      slot = (slot + 1) & this.#indexMask;
    }
  }

  // Fibonacci hashing of both lanes: FNV's low bits alone are weakly mixed.
  #home(hi: number, lo: number): number {
    return Math.imul(hi ^ Math.imul(lo, 0x85ebca6b), 0x9e3779b1) >>> this.#indexShift;
  }

  #lruAppend(b: number): void {
    this.#lruPrev[b] = this.#lruTail;
    this.#lruNext[b] = NONE;
    if (this.#lruTail === NONE) this.#lruHead = b;
    else this.#lruNext[this.#lruTail] = b;
    this.#lruTail = b;
    this.#lruCount++;
  }

  #lruRemove(b: number): void {
    const prev = this.#lruPrev[b];
    const next = this.#lruNext[b];
    if (prev === NONE) this.#lruHead = next;
    else this.#lruNext[prev] = next;
    if (next === NONE) this.#lruTail = prev;
    else this.#lruPrev[next] = prev;
    this.#lruPrev[b] = NONE;
    this.#lruNext[b] = NONE;
    this.#lruCount--;
  }
}
