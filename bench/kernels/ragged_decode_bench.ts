/**
 * Ragged decode attention benchmark (GPU machine:
 * `deno run -A bench/kernels/ragged_decode_bench.ts`).
 *
 * Every other decode benchmark gives all rows one context length. A serving batch does not: its
 * rows are requests at different points of ShareGPT-shaped prompts and completions. At large
 * batch the decode kernel gives one block to each (sequence, KV-head group) with the whole
 * context (up to 2048 tokens), grid (x = partitions, y = head blocks, z = batch), and the GPU
 * dispatches blocks in index order, so a long sequence late in the batch can leave a tail where
 * most SMs idle. This measures how much, and what the order of rows or smaller partitions buys.
 *
 * Per batch B (Llama-3-8B attention: 32 query heads, 8 KV heads, head dim 128, bf16 cache, block
 * size 16), B context lengths are drawn by raggedContexts (serve_bench's requestShapes, each
 * request at a uniform point of its completion), and timed (medianUs) as:
 * - `ragged_arrival`: the rows in drawn order; `ragged_longest_first` and
 *   `ragged_shortest_first`: the same rows (contexts and block tables) longest or shortest first;
 * - `uniform_same_tokens`: every row at the mean context (the same total tokens), so the same
 *   bytes without the raggedness;
 * - `ragged_arrival_sm<N>` and `ragged_longest_first_sm<N>`: arrival and longest first on ops
 *   whose partition target is N blocks per SM (`--per-sm`, default 8 and 16: smaller partitions,
 *   combined by the fused reduce, where the batch does not fill that target);
 * - `ragged_arrival_slack<S>`, `ragged_longest_first_slack<S>` and `uniform_same_tokens_slack<S>`:
 *   the same on ops whose ragged split takes slack S (`--slack`, default 0 and 1.5; 0 is the
 *   launch-time partition of before the split, the default ops take 2 unless DENALI_DECODE_RAGGED
 *   says otherwise), reaching batches of up to R block targets of rows with `--ragged-rows R`;
 * - `read_only_same_size`: measure.ts's read-only kernel over the same K and V bytes, the floor.
 * Bytes = K and V of every attended position + q + out, as attention_bench's decode counts.
 * Block tables take scattered blocks of a shuffled pool; input sets rotate over disjoint blocks,
 * at least 128 MiB of K+V in all, so L2 (50 MB) never holds the next call's cache. After each
 * batch, `# contexts ...`, `# partitions ...` and `# ragged ...` comment lines give the context
 * statistics, the partition each variant ran with and the time ratios of this run.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { AttentionOps } from "../../ops/ops.ts";
import { configPreset } from "../../models/config.ts";
import { attentionShape } from "../../models/model.ts";
import {
  decodeBlocksPerSmWanted,
  decodeHeadsPerBlock,
  decodePartSize,
  decodeRaggedRowsWanted,
  decodeRaggedSlackWanted,
  loadAttentionOps,
  raggedSplitParts,
} from "../../ops/gpu/attention.ts";
import { requestShapes } from "../serve_bench.ts";
import {
  benchBuffers,
  medianUs,
  printBench,
  printCopyBandwidth,
  readOnlyKernel,
  seededBf16,
  shuffled,
} from "./measure.ts";
import { helpRequested, positiveList } from "../../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/kernels/ragged_decode_bench.ts [--batches LIST] [--seed N]
       [--max-len N] [--per-sm LIST] [--slack LIST] [--ragged-rows R]

Decode attention on an NVIDIA GPU over batches of ShareGPT-shaped (ragged) context lengths: the
rows in arrival, longest-first and shortest-first order, a uniform batch of the same tokens,
smaller partitions, and the read-only kernel over the same bytes. One BENCH line each, then
"# ragged" lines with the time ratios.
  --batches LIST   decode batches (default 64,128,256)
  --seed N         context-length seed (default 1)
  --max-len N      longest context, the engine's maxModelLen (default 2048)
  --per-sm LIST    partition targets in decode blocks per SM for the *_sm<N> variants
                   (default 8,16; a batch that fills the target alone keeps one
                   partition a row: the "# partitions" line says what each variant ran)
  --slack LIST     ragged-split slacks for the *_slack<S> variants (default 0,1.5; 0 is
                   off, else 1..3.75 in quarters; the default ops take 2)
  --ragged-rows R  how far the *_slack<S> variants' split reaches, in block targets of
                   rows (default: the default ops', 2 unless DENALI_DECODE_RAGGED_ROWS)
  -h, --help       show this help`;

/** The largest batch accepted: past it the rotated K+V sets outgrow an 80 GB card. */
const MAX_BATCH = 4096;
/** The largest --max-len accepted (the drawn prompts and outputs are each at most half). */
const MAX_LEN_LIMIT = 131072;

/** The benchmark's command line, parsed. */
export interface RaggedBenchArgs {
  /** Decode batches, in the order given. */
  readonly batches: number[];
  /** Seed of the context lengths. */
  readonly seed: number;
  /** Longest context (the engine's maxModelLen). */
  readonly maxLen: number;
  /** Partition targets (decode blocks per SM) of the *_sm<N> variants. */
  readonly perSm: number[];
  /** Ragged-split slacks of the *_slack<S> variants (0: off). */
  readonly slack: number[];
  /** How far the *_slack<S> variants' split reaches (rows in block targets); null: default. */
  readonly raggedRows: number | null;
}

/**
 * Parses the command line (without `--help`, which helpRequested answers first). A bad flag or
 * value is a RangeError naming the flag and what it takes.
 */
export function parseRaggedArgs(args: readonly string[]): RaggedBenchArgs {
  const parsed = () => {
    try {
      return parseArgs({
        args: [...args],
        options: {
          batches: { type: "string", default: "64,128,256" },
          seed: { type: "string", default: "1" },
          "max-len": { type: "string", default: "2048" },
          "per-sm": { type: "string", default: "8,16" },
          slack: { type: "string", default: "0,1.5" },
          "ragged-rows": { type: "string" },
        },
      }).values;
    } catch (error) {
      throw new RangeError(
        `${
          (error as Error).message.replace(/\.$/, "")
        }; the flags are --batches, --seed, --max-len, --per-sm, --slack and --ragged-rows, ` +
          "each with a value (see --help)",
      );
    }
  };
  const values = parsed();
  const list = (flag: string, text: string, example: string) => {
    try {
      return positiveList(flag, text);
    } catch (error) {
      throw new RangeError(`${(error as Error).message}, e.g. ${flag} ${example}`);
    }
  };
  const integer = (flag: string, text: string, min: number, max: number) => {
    const value = Number(text);
    if (text.trim() === "" || !Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`${flag} ${text}: expected an integer from ${min} to ${max}`);
    }
    return value;
  };
  // The ops' own rule (decodeRaggedRowsWanted), its error in the flag's words.
  const raggedRows = (text: string) => {
    try {
      return decodeRaggedRowsWanted(text.trim() === "" ? NaN : Number(text));
    } catch {
      throw new RangeError(`--ragged-rows ${text}: expected a number from 1 to 8, e.g. 4`);
    }
  };
  const batches = list("--batches", values.batches, "64,128,256");
  const tooBig = batches.find((b) => b > MAX_BATCH);
  if (tooBig !== undefined) {
    throw new RangeError(
      `--batches ${values.batches}: batch ${tooBig} is past ${MAX_BATCH} (the rotated K+V sets ` +
        "would outgrow the card); give smaller batches",
    );
  }
  return {
    batches,
    seed: integer("--seed", values.seed, 0, 2 ** 32 - 1),
    maxLen: integer("--max-len", values["max-len"], 16, MAX_LEN_LIMIT),
    perSm: list("--per-sm", values["per-sm"], "8,16"),
    raggedRows: values["ragged-rows"] === undefined ? null : raggedRows(values["ragged-rows"]),
    slack: values.slack.split(",").map((text) => {
      try {
        return decodeRaggedSlackWanted(text.trim() === "" ? NaN : Number(text));
      } catch {
        throw new RangeError(
          `--slack ${values.slack}: ${text} is not 0 (off) or 1..3.75 in steps of 0.25, ` +
            "e.g. --slack 0,1.5",
        );
      }
    }),
  };
}

/**
 * B decode context lengths shaped like a ShareGPT serving batch: row i takes request i of
 * `requestShapes(batch, seed, 32000, maxLen)` at a uniform point of its completion, context =
 * prompt length + floor(u_i · outputTokens) + 1 (the new token), clipped to `maxLen`, with u_i
 * from a seeded xorshift32 in [0, 1). Deterministic for (batch, seed, maxLen).
 */
export function raggedContexts(batch: number, seed: number, maxLen: number): Int32Array {
  const shapes = requestShapes(batch, seed, 32000, maxLen);
  // A stream of its own, decorrelated from requestShapes' xorshift of the same seed.
  let s = Math.imul((seed >>> 0) ^ 0x5bd1e995, 0x9e3779b1) >>> 0 || 0x6a09e667;
  const out = new Int32Array(batch);
  for (let i = 0; i < batch; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const u = (s >>> 0) / 2 ** 32;
    const { prompt, outputTokens } = shapes[i];
    out[i] = Math.min(maxLen, prompt.length + Math.floor(u * outputTokens) + 1);
  }
  return out;
}

/** Row indices ordered longest context first, ties by lower index: a permutation of 0..n-1. */
export function longestFirst(contexts: ArrayLike<number>): Int32Array {
  const order = new Int32Array(contexts.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  return order.sort((a, b) => contexts[b] - contexts[a] || a - b);
}

/**
 * The same total tokens spread evenly over the rows: each row floor or ceil of the mean, the
 * first (total mod n) rows the longer, so the sum matches exactly.
 */
export function uniformContexts(contexts: ArrayLike<number>): Int32Array {
  const n = contexts.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += contexts[i];
  const base = Math.floor(total / n), extra = total - base * n;
  return Int32Array.from({ length: n }, (_, i) => base + (i < extra ? 1 : 0));
}

/** Summary of a batch's context lengths; p50 is the sorted middle element (upper for even n). */
export function contextStats(
  contexts: ArrayLike<number>,
): { mean: number; p50: number; max: number; total: number } {
  const sorted = Int32Array.from(contexts).sort();
  const total = sorted.reduce((a, b) => a + b, 0);
  return {
    mean: total / sorted.length,
    p50: sorted[sorted.length >> 1],
    max: sorted[sorted.length - 1],
    total,
  };
}

/** Cache blocks one set of block tables uses: Σ ceil(context / blockSize). */
export function tableBlocks(contexts: ArrayLike<number>, blockSize: number): number {
  let blocks = 0;
  for (let i = 0; i < contexts.length; i++) blocks += Math.ceil(contexts[i] / blockSize);
  return blocks;
}

/**
 * `sets` block tables, [sets][rows][maxBlocks] i32: row i of set s holds ceil(contexts[i] /
 * blockSize) blocks taken in turn from `pool` (set 0's rows first, then set 1's, ...), so no
 * block appears twice; entries past a row's blocks are 0. `pool` needs sets × tableBlocks entries.
 */
export function fillTables(
  contexts: ArrayLike<number>,
  blockSize: number,
  maxBlocks: number,
  sets: number,
  pool: ArrayLike<number>,
): Int32Array {
  const rows = contexts.length;
  const need = sets * tableBlocks(contexts, blockSize);
  if (pool.length < need) {
    throw new RangeError(`fillTables: the pool holds ${pool.length} blocks, the sets need ${need}`);
  }
  const tables = new Int32Array(sets * rows * maxBlocks);
  let next = 0;
  for (let s = 0; s < sets; s++) {
    for (let i = 0; i < rows; i++) {
      const blocks = Math.ceil(contexts[i] / blockSize);
      if (blocks > maxBlocks) {
        throw new RangeError(`fillTables: row ${i} needs ${blocks} blocks, past ${maxBlocks}`);
      }
      const at = (s * rows + i) * maxBlocks;
      for (let j = 0; j < blocks; j++) tables[at + j] = pool[next++];
    }
  }
  return tables;
}

/**
 * Each set's rows of `tables` ([sets][rows][rowLength]) reordered: row i of a set becomes that
 * set's row `order[i]`, as `contexts[order[i]]` becomes context i.
 */
export function permuteRows(
  tables: Int32Array,
  order: ArrayLike<number>,
  rowLength: number,
): Int32Array {
  const rows = order.length, setLength = rows * rowLength;
  const out = new Int32Array(tables.length);
  for (let set = 0; set < tables.length; set += setLength) {
    for (let i = 0; i < rows; i++) {
      const from = set + order[i] * rowLength;
      out.set(tables.subarray(from, from + rowLength), set + i * rowLength);
    }
  }
  return out;
}

/** `values` reordered: element i is `values[order[i]]`. */
function permuted(values: Int32Array, order: ArrayLike<number>): Int32Array {
  return Int32Array.from({ length: order.length }, (_, i) => values[order[i]]);
}

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const { batches, seed, maxLen, perSm, slack, raggedRows } = parseRaggedArgs(Deno.args);
  const SHAPE = attentionShape(configPreset("llama3-8b"), 16);
  const { numHeads, numKvHeads, headDim, blockSize } = SHAPE;
  const BLOCK_BYTES = numKvHeads * blockSize * headDim * 2; // one bf16 K (or V) block
  const PER_TOKEN = numKvHeads * headDim * 2 * 2; // K and V of one position
  const MIN_ROTATION_BYTES = 128 * 2 ** 20;
  // What the default ops below run with (DENALI_DECODE_PER_SM, else 4).
  const defaultPerSm = decodeBlocksPerSmWanted();
  const ratio = numHeads / numKvHeads;
  const headBlocks = numKvHeads * Math.ceil(ratio / decodeHeadsPerBlock(ratio));

  const gpu = openCuda();
  const stream = gpu.createStream();
  const ops = await loadAttentionOps(gpu);
  const tuned: [number, AttentionOps][] = [];
  for (const n of perSm) tuned.push([n, await loadAttentionOps(gpu, { decodeBlocksPerSm: n })]);
  const slacked: [number, AttentionOps][] = [];
  for (const n of slack) {
    const options = { decodeRaggedSlack: n, decodeRaggedRows: raggedRows ?? undefined };
    slacked.push([n, await loadAttentionOps(gpu, options)]);
  }
  const defaultSlack = decodeRaggedSlackWanted();
  const sms = Math.max(1, gpu.info.multiprocessors);
  console.log(
    `# ${gpu.info.name}, ${sms} SMs, programmatic decode: ${ops.decodeProgrammatic}, ` +
      `seed ${seed}, max-len ${maxLen}`,
  );
  const copyGbps = printCopyBandwidth(gpu, stream);
  const readOnly = await readOnlyKernel(gpu, stream);
  const { alloc, freeAll } = benchBuffers(gpu, stream);

  const upload = (data: Int32Array | Uint16Array): DeviceBuffer => {
    const buffer = alloc(Math.max(16, data.byteLength));
    gpu.copyToDevice(buffer, data);
    return buffer;
  };
  const randomBf16 = (count: number, seed: number) => upload(seededBf16(count, seed));
  const defaultReach = decodeRaggedRowsWanted();
  const partition = (
    batch: number,
    maxContext: number,
    blocksPerSm: number,
    slack: number,
    reach = defaultReach,
  ) => {
    const target = blocksPerSm * sms;
    const part = decodePartSize(batch, maxContext, headBlocks, target);
    const ragged = slack === 0
      ? 0
      : raggedSplitParts(batch, maxContext, headBlocks, target, reach, part);
    if (ragged > 0) return `ragged slack=${slack} grid_parts=${ragged}`;
    return `part=${part} parts=${Math.ceil(maxContext / part)}`;
  };

  for (const batch of batches) {
    const arrival = raggedContexts(batch, seed, maxLen);
    const uniform = uniformContexts(arrival);
    const stats = contextStats(arrival);
    const maxContext = stats.max, uniformMax = Math.max(...uniform);
    const maxBlocks = Math.ceil(maxContext / blockSize);
    const uniformMaxBlocks = Math.ceil(uniformMax / blockSize);
    console.log(
      `# contexts b${batch} mean=${stats.mean.toFixed(1)} p50=${stats.p50} max=${stats.max} ` +
        `total=${stats.total}`,
    );

    // Input sets over disjoint blocks of one scattered pool, at least MIN_ROTATION_BYTES of K+V
    // in all. The pools hold an even number of sets, so the read-only kernel's sources (slices
    // of the attended bytes) rotate over as much.
    const setBlocks = Math.max(tableBlocks(arrival, blockSize), tableBlocks(uniform, blockSize));
    const setBytes = setBlocks * BLOCK_BYTES * 2;
    const sets = Math.max(2, Math.ceil(MIN_ROTATION_BYTES / setBytes));
    const poolBlocks = 2 * Math.ceil(sets / 2) * setBlocks;
    const poolK = alloc(poolBlocks * BLOCK_BYTES);
    const poolV = alloc(poolBlocks * BLOCK_BYTES);
    // A finite bf16 pattern (0x3c3c ≈ 0.0115); values do not change the kernels' work.
    gpu.memset(poolK, 0x3c);
    gpu.memset(poolV, 0x3c);
    const order = shuffled(poolBlocks);

    const arrivalTables = fillTables(arrival, blockSize, maxBlocks, sets, order);
    const longest = longestFirst(arrival);
    const shortest = longest.slice().reverse();
    const tableSets = (tables: Int32Array, rowLength: number) => {
      const buffer = upload(tables);
      const bytes = batch * rowLength * 4;
      return Array.from({ length: sets }, (_, s) => buffer.slice(s * bytes, bytes));
    };
    const layouts = {
      arrival: { lens: upload(arrival), tables: tableSets(arrivalTables, maxBlocks) },
      longest_first: {
        lens: upload(permuted(arrival, longest)),
        tables: tableSets(permuteRows(arrivalTables, longest, maxBlocks), maxBlocks),
      },
      shortest_first: {
        lens: upload(permuted(arrival, shortest)),
        tables: tableSets(permuteRows(arrivalTables, shortest, maxBlocks), maxBlocks),
      },
      uniform: {
        lens: upload(uniform),
        tables: tableSets(
          fillTables(uniform, blockSize, uniformMaxBlocks, sets, order),
          uniformMaxBlocks,
        ),
      },
    };
    const q = randomBf16(batch * numHeads * headDim, 7);
    const out = alloc(batch * numHeads * headDim * 2);
    // Any call with batch' <= batch and maxContext' <= maxContext fits a workspace sized for it.
    const workspace = alloc(
      Math.max(
        ...[ops, ...tuned.map(([, o]) => o), ...slacked.map(([, o]) => o)].map((o) =>
          o.decodeWorkspaceBytes(batch, maxContext, SHAPE)
        ),
      ),
    );

    const kvBytes = stats.total * PER_TOKEN;
    const bytes = kvBytes + 2 * batch * numHeads * headDim * 2;
    const label = `b${batch}_s${seed}_tok${stats.total}_h32kv8d128`;
    const time = (
      name: string,
      impl: AttentionOps,
      layout: { lens: DeviceBuffer; tables: DeviceBuffer[] },
      rowBlocks: number,
      context: number,
    ): number => {
      const us = medianUs(gpu, stream, (rep) =>
        impl.decodeAttention({
          out,
          q,
          kCache: poolK,
          vCache: poolV,
          blockTables: layout.tables[rep % sets],
          contextLens: layout.lens,
          batch,
          maxBlocks: rowBlocks,
          maxContext: context,
          shape: SHAPE,
          workspace,
        }, stream));
      printBench(name, label, us, bytes);
      return us;
    };

    // The ragged rows (at their own longest context) and the uniform batch of the same tokens.
    const ragged = (name: string, impl: AttentionOps, layout: typeof layouts.arrival) =>
      time(name, impl, layout, maxBlocks, maxContext);
    const uniformTime = (name: string, impl: AttentionOps) =>
      time(name, impl, layouts.uniform, uniformMaxBlocks, uniformMax);
    const arrivalUs = ragged("ragged_arrival", ops, layouts.arrival);
    const longestUs = ragged("ragged_longest_first", ops, layouts.longest_first);
    const shortestUs = ragged("ragged_shortest_first", ops, layouts.shortest_first);
    const uniformUs = uniformTime("uniform_same_tokens", ops);
    const tunedUs = tuned.map(([n, impl]) => ({
      n,
      arrival: ragged(`ragged_arrival_sm${n}`, impl, layouts.arrival),
      longest: ragged(`ragged_longest_first_sm${n}`, impl, layouts.longest_first),
    }));
    const slackUs = slacked.map(([n, impl]) => ({
      n,
      arrival: ragged(`ragged_arrival_slack${n}`, impl, layouts.arrival),
      longest: ragged(`ragged_longest_first_slack${n}`, impl, layouts.longest_first),
      uniform: uniformTime(`uniform_same_tokens_slack${n}`, impl),
    }));
    // The read-only kernel over the attended K+V bytes, read contiguously from rotating slices
    // of the pools (each holds at least sets / 2 such slices).
    const perPool = Math.floor((poolBlocks * BLOCK_BYTES) / kvBytes);
    const sources = [poolK, poolV].flatMap((pool) =>
      Array.from({ length: perPool }, (_, i) => pool.slice(i * kvBytes, kvBytes))
    );
    const readOnlyUs = readOnly.print(label, sources, kvBytes, copyGbps);

    console.log(
      `# partitions b${batch} default ${
        partition(batch, maxContext, defaultPerSm, defaultSlack)
      }; uniform ${partition(batch, uniformMax, defaultPerSm, defaultSlack)}` +
        tuned.map(([n]) => `; sm${n} ${partition(batch, maxContext, n, defaultSlack)}`).join("") +
        slack.map((n) =>
          `; slack${n} ${partition(batch, maxContext, defaultPerSm, n, raggedRows ?? defaultReach)}`
        ).join(""),
    );
    const r = (a: number, b: number) => (a / b).toFixed(3);
    console.log(
      `# ragged b${batch} longest_first/arrival=${r(longestUs, arrivalUs)} ` +
        `shortest_first/arrival=${r(shortestUs, arrivalUs)} ` +
        `arrival/uniform=${r(arrivalUs, uniformUs)} ` +
        `longest_first/uniform=${r(longestUs, uniformUs)} ` +
        `arrival/read_only=${r(arrivalUs, readOnlyUs)} ` +
        `longest_first/read_only=${r(longestUs, readOnlyUs)} ` +
        `uniform/read_only=${r(uniformUs, readOnlyUs)}`,
    );
    for (const t of tunedUs) {
      console.log(
        `# ragged b${batch} sm${t.n} arrival_sm${t.n}/arrival=${r(t.arrival, arrivalUs)} ` +
          `longest_first_sm${t.n}/arrival=${r(t.longest, arrivalUs)} ` +
          `longest_first_sm${t.n}/read_only=${r(t.longest, readOnlyUs)}`,
      );
    }
    for (const t of slackUs) {
      console.log(
        `# ragged b${batch} slack${t.n} arrival_slack${t.n}/arrival=${r(t.arrival, arrivalUs)} ` +
          `longest_first_slack${t.n}/longest_first=${r(t.longest, longestUs)} ` +
          `uniform_slack${t.n}/uniform=${r(t.uniform, uniformUs)} ` +
          `longest_first_slack${t.n}/read_only=${r(t.longest, readOnlyUs)}`,
      );
    }
    freeAll();
  }
  gpu.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
