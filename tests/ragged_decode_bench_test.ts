/**
 * The ragged decode benchmark's pure helpers (bench/kernels/ragged_decode_bench.ts): the drawn
 * context lengths, the longest-first order, the uniform batch of the same tokens, the block
 * tables and their permutation, and the command line. No GPU: importing the bench runs nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  contextStats,
  fillTables,
  longestFirst,
  parseRaggedArgs,
  permuteRows,
  raggedContexts,
  tableBlocks,
  uniformContexts,
} from "../bench/kernels/ragged_decode_bench.ts";

/** serve_bench's documented ShareGPT means (requestShapes): prompt and completion tokens. */
const PROMPT_MEAN = 227, OUTPUT_MEAN = 200;

Deno.test("ragged bench: contexts are deterministic, bounded and ShareGPT-shaped", () => {
  assert.deepEqual(raggedContexts(256, 1, 2048), raggedContexts(256, 1, 2048));
  assert.notDeepEqual(raggedContexts(256, 1, 2048), raggedContexts(256, 2, 2048));
  // Request i is the same request at any batch (requestShapes draws a prefix), and so its point.
  assert.deepEqual(raggedContexts(64, 1, 2048), raggedContexts(256, 1, 2048).subarray(0, 64));
  // A request halfway through its completion on average, plus the new token.
  const expected = PROMPT_MEAN + OUTPUT_MEAN / 2 + 1;
  for (const seed of [0, 1, 7]) {
    const contexts = raggedContexts(2000, seed, 2048);
    assert.equal(contexts.length, 2000);
    // The shortest prompt (4 tokens) plus the new token, and the engine's maxModelLen.
    assert.ok(contexts.every((c) => c >= 5 && c <= 2048), `seed ${seed}`);
    const { mean, p50, max } = contextStats(contexts);
    assert.ok(Math.abs(mean - expected) < 0.15 * expected, `seed ${seed}: mean ${mean}`);
    // Ragged: long-tailed, the median well below the mean, some rows several times it.
    assert.ok(p50 < 0.85 * mean && max > 3 * mean, `seed ${seed}: p50 ${p50}, max ${max}`);
  }
  // A short maxLen clips every row to it.
  assert.ok(raggedContexts(500, 1, 64).every((c) => c >= 5 && c <= 64));
});

Deno.test("ragged bench: longest first is a permutation, non-increasing, ties by index", () => {
  const contexts = raggedContexts(300, 3, 2048);
  const order = longestFirst(contexts);
  assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: 300 }, (_, i) => i));
  for (let i = 1; i < order.length; i++) {
    const [a, b] = [contexts[order[i - 1]], contexts[order[i]]];
    assert.ok(a > b || (a === b && order[i - 1] < order[i]), `at ${i}: ${a}, ${b}`);
  }
  assert.deepEqual([...longestFirst([3, 5, 5, 1, 3])], [1, 2, 0, 4, 3]);
  assert.deepEqual([...longestFirst([])], []);
});

Deno.test("ragged bench: the uniform batch holds the same tokens, within one of the mean", () => {
  const contexts = raggedContexts(128, 1, 2048);
  const uniform = uniformContexts(contexts);
  const { total, mean } = contextStats(contexts);
  assert.equal(contextStats(uniform).total, total);
  assert.ok(uniform.every((c) => c === Math.floor(mean) || c === Math.ceil(mean)));
  assert.deepEqual([...uniformContexts([1, 2, 3, 11])], [5, 4, 4, 4]);
  assert.deepEqual(contextStats([4, 1, 3, 2]), { mean: 2.5, p50: 3, max: 4, total: 10 });
});

Deno.test("ragged bench: tables use disjoint pool blocks, and permuting moves whole rows", () => {
  const contexts = Int32Array.from([33, 1, 16, 17]);
  const blockSize = 16, maxBlocks = 3, sets = 2;
  assert.equal(tableBlocks(contexts, blockSize), 3 + 1 + 1 + 2);
  const pool = Int32Array.from({ length: 14 }, (_, i) => 100 + i);
  const tables = fillTables(contexts, blockSize, maxBlocks, sets, pool);
  // deno-fmt-ignore
  assert.deepEqual([...tables], [
    100, 101, 102, 103, 0, 0, 104, 0, 0, 105, 106, 0,
    107, 108, 109, 110, 0, 0, 111, 0, 0, 112, 113, 0,
  ]);
  assert.throws(
    () => fillTables(contexts, blockSize, maxBlocks, 3, pool),
    new RangeError("fillTables: the pool holds 14 blocks, the sets need 21"),
  );
  const order = longestFirst(contexts); // 33, 17, 16, 1
  assert.deepEqual([...order], [0, 3, 2, 1]);
  // Each set's rows reordered as the contexts are: 33, 17, 16, 1 tokens.
  // deno-fmt-ignore
  assert.deepEqual([...permuteRows(tables, order, maxBlocks)], [
    100, 101, 102, 105, 106, 0, 104, 0, 0, 103, 0, 0,
    107, 108, 109, 112, 113, 0, 111, 0, 0, 110, 0, 0,
  ]);
  // At a real batch: no block twice across rows and sets.
  const big = raggedContexts(256, 1, 2048);
  const rowBlocks = Math.ceil(Math.max(...big) / 16);
  const need = 2 * tableBlocks(big, 16);
  const filled = fillTables(big, 16, rowBlocks, 2, Int32Array.from({ length: need }, (_, i) => i));
  const used: number[] = [];
  for (let row = 0; row < 2 * 256; row++) {
    const blocks = Math.ceil(big[row % 256] / 16);
    used.push(...filled.subarray(row * rowBlocks, row * rowBlocks + blocks));
  }
  assert.equal(new Set(used).size, need);
});

Deno.test("ragged bench: the command line has defaults and refuses bad flags by name", () => {
  assert.deepEqual(parseRaggedArgs([]), {
    batches: [64, 128, 256],
    seed: 1,
    maxLen: 2048,
    perSm: [8, 16],
    slack: [0, 1.5],
    raggedRows: null,
  });
  assert.deepEqual(
    parseRaggedArgs([
      "--batches",
      "8,32",
      "--seed",
      "0",
      "--max-len",
      "4096",
      "--per-sm",
      "32",
      "--slack",
      "2.25",
      "--ragged-rows",
      "3.5",
    ]),
    { batches: [8, 32], seed: 0, maxLen: 4096, perSm: [32], slack: [2.25], raggedRows: 3.5 },
  );
  for (const bad of ["", "0.5", "9", "x"]) {
    assert.throws(
      () => parseRaggedArgs([`--ragged-rows=${bad}`]),
      new RangeError(`--ragged-rows ${bad}: expected a number from 1 to 8, e.g. 4`),
    );
  }
  for (const bad of ["", "0,", "0.5", "1.1", "4", "x"]) {
    const text = bad === "0," ? "" : bad;
    assert.throws(
      () => parseRaggedArgs([`--slack=${bad}`]),
      new RangeError(
        `--slack ${bad}: ${text} is not 0 (off) or 1..3.75 in steps of 0.25, e.g. --slack 0,1.5`,
      ),
    );
  }
  for (const bad of ["", "64,", "abc", "0", "1.5", "-8"]) {
    assert.throws(
      () => parseRaggedArgs([`--batches=${bad}`]),
      new RangeError(
        `--batches ${bad}: expected positive integers separated by commas, e.g. --batches 64,128,256`,
      ),
    );
  }
  assert.throws(() => parseRaggedArgs(["--batches", "8192"]), /--batches 8192: batch 8192 is past/);
  assert.throws(() => parseRaggedArgs(["--per-sm", "x"]), /--per-sm x: .* e\.g\. --per-sm 8,16/);
  assert.throws(
    () => parseRaggedArgs(["--seed=-1"]),
    new RangeError("--seed -1: expected an integer from 0 to 4294967295"),
  );
  assert.throws(() => parseRaggedArgs(["--max-len", "8"]), /--max-len 8: expected an integer/);
  assert.throws(() => parseRaggedArgs(["--max-len", "2k"]), /--max-len 2k: expected an integer/);
  for (const bad of [["--batch", "64"], ["--seed"], ["64"]]) {
    assert.throws(() => parseRaggedArgs(bad), (error: Error) => {
      assert.ok(error instanceof RangeError, `${bad}: ${error}`);
      assert.match(
        error.message,
        /the flags are --batches, --seed, --max-len, --per-sm, --slack and --ragged-rows/,
      );
      return true;
    });
  }
});

Deno.test("ragged bench: --help prints the usage and touches no GPU", async () => {
  const script = new URL("../bench/kernels/ragged_decode_bench.ts", import.meta.url).pathname;
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", script, "--help"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(new TextDecoder().decode(stdout), /^Usage: .*ragged_decode_bench\.ts/);
});
