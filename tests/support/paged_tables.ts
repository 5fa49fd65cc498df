/**
 * Block tables for paged-attention tests: sequences scattered over a shuffled pool of blocks, so
 * a kernel that walks blocks in order, or reads past a context, gets the wrong keys.
 *
 * @module
 */

import { rng } from "./numeric.ts";

/** Seeded Fisher-Yates permutation of 0..n-1. */
export function shuffled(n: number, seed: number): number[] {
  const next = rng(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next(0, 1) * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Block tables for sequences of `lengths` tokens over a shuffled pool (two spare blocks), -1 in
 * every entry a sequence does not use, so a kernel reading past a context reads garbage ids.
 */
export function pagedTables(
  lengths: readonly number[],
  blockSize: number,
  maxBlocks: number,
  seed: number,
): { table: Int32Array; numBlocks: number } {
  const need = lengths.map((n) => Math.ceil(n / blockSize));
  const numBlocks = need.reduce((a, b) => a + b, 0) + 2;
  const pool = shuffled(numBlocks, seed);
  const table = new Int32Array(lengths.length * maxBlocks).fill(-1);
  let used = 0;
  need.forEach((n, s) => {
    for (let i = 0; i < n; i++) table[s * maxBlocks + i] = pool[used++];
  });
  return { table, numBlocks };
}
