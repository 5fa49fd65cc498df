/**
 * The per-step i32 inputs of a forward pass — token ids, positions, KV slots, block tables,
 * context lengths, query starts and the rows to take logits from — built on the host from a
 * {@link BatchPlan} and uploaded to fixed device addresses.
 *
 * Every array lives at a fixed offset in one pinned host buffer and one device buffer, both
 * allocated once for the largest step. Fixed device addresses are what a captured graph needs:
 * it replays with whatever the last upload put there. Each array is uploaded with one copy of
 * its used prefix, rounded up to {@link UPLOAD_GRANULE} elements; the host views for those
 * copies are made once per length and kept, so a warmed-up step allocates nothing.
 *
 * Decode entries and prefill entries get separate context-length and block-table arrays, so
 * decodeAttention and prefillAttention each read their own from offset 0 without a sliced view.
 *
 * @module
 */

import type { Backend, DeviceBuffer, HostBuffer, Stream } from "../backends/backend.ts";
import type { BatchPlan } from "./scheduler.ts";

/** Uploads copy whole granules of this many i32, so few distinct host views ever exist. */
export const UPLOAD_GRANULE = 64;

/** Sizes a BatchInputs is allocated for. */
export interface BatchInputsOptions {
  /** Most tokens in one step (the scheduler's maxBatchedTokens). */
  readonly maxTokens: number;
  /** Most entries in one step (the scheduler's maxRunning), padding included. */
  readonly maxEntries: number;
  /** Most blocks one sequence's table can hold: ceil(maxModelLen / blockSize). */
  readonly maxBlocksPerSeq: number;
  /** Tokens per KV block. */
  readonly blockSize: number;
}

/** How to pad a decode-only step to a captured graph's fixed shape. */
export interface DecodePadding {
  /** Decode rows the graph was captured for (>= the plan's entries). */
  readonly batch: number;
  /** Block-table row stride the graph was captured with. */
  readonly maxBlocks: number;
  /** maxContext the graph was captured with (>= every entry's context length). */
  readonly maxContext: number;
  /** A KV block no sequence owns, which padding rows attend to. */
  readonly scratchBlock: number;
}

/** One i32 array at a fixed place in the host and device buffers. */
class Region {
  /** Elements uploaded by the last build. */
  used = 0;
  readonly #views: (Int32Array | undefined)[] = [];

  constructor(readonly host: Int32Array, readonly device: DeviceBuffer) {}

  /** Copies the used prefix (rounded up to a granule, within the region) to the device. */
  upload(backend: Backend, stream: Stream): void {
    if (this.used === 0) return;
    const granules = Math.ceil(this.used / UPLOAD_GRANULE);
    let view = this.#views[granules];
    if (view === undefined) {
      view = this.host.subarray(0, Math.min(granules * UPLOAD_GRANULE, this.host.length));
      this.#views[granules] = view;
    }
    backend.copyToDevice(this.device, view, stream);
  }
}

/** Preallocated host and device arrays for the inputs of one forward step. */
export class BatchInputs {
  /** Tokens of the step, padding included. */
  numTokens = 0;
  /** Leading decode rows, padding included (a decode row is one token). */
  numDecodes = 0;
  /** Prefill entries after the decodes. */
  numPrefills = 0;
  /** Tokens of the prefill entries. */
  prefillTokens = 0;
  /** Rows that yield a sampled token. */
  numSamples = 0;
  /**
   * Whether the logit rows must be gathered (logitRows) before the output layer; false when
   * every token row samples, in order, so the normed hidden states are already the rows.
   */
  gather = false;
  /** Block-table row stride of the decode entries. */
  decodeMaxBlocks = 0;
  /** Longest decode context (or the graph's fixed maxContext). */
  decodeMaxContext = 0;
  /** Block-table row stride of the prefill entries. */
  prefillMaxBlocks = 0;
  /** Plan entry of each sample row: sampleEntry[s] = i. */
  readonly sampleEntry: Int32Array;

  /** i32 [maxTokens]: the token fed at each row. */
  readonly tokenIds: DeviceBuffer;
  /** i32 [maxTokens]: each row's position in its sequence. */
  readonly positions: DeviceBuffer;
  /** i32 [maxTokens]: each row's KV slot; -1 for padding. */
  readonly slots: DeviceBuffer;
  /** i32 [maxEntries]: the token row each sample's logits come from. */
  readonly logitRows: DeviceBuffer;
  /** i32 [maxEntries]: context length of each decode row. */
  readonly decodeContextLens: DeviceBuffer;
  /** i32 [maxEntries, decodeMaxBlocks]: block table of each decode row. */
  readonly decodeBlockTables: DeviceBuffer;
  /** i32 [maxEntries]: context length (cached + new) of each prefill entry. */
  readonly prefillContextLens: DeviceBuffer;
  /** i32 [maxEntries, prefillMaxBlocks]: block table of each prefill entry. */
  readonly prefillBlockTables: DeviceBuffer;
  /** i32 [maxEntries + 1]: prefix sums of the prefill entries' token counts, from 0. */
  readonly queryStarts: DeviceBuffer;

  readonly #backend: Backend;
  readonly #options: BatchInputsOptions;
  readonly #host: HostBuffer;
  readonly #device: DeviceBuffer;
  readonly #regions: Region[];
  readonly #tokens: Region;
  readonly #positions: Region;
  readonly #slots: Region;
  readonly #logitRows: Region;
  readonly #decodeLens: Region;
  readonly #decodeTables: Region;
  readonly #prefillLens: Region;
  readonly #prefillTables: Region;
  readonly #queryStarts: Region;

  /**
   * Allocates the host (pinned where the backend can) and device arrays.
   *
   * @param backend the device the inputs are uploaded to
   * @param options the largest step the arrays must hold
   */
  constructor(backend: Backend, options: BatchInputsOptions) {
    for (const key of ["maxTokens", "maxEntries", "maxBlocksPerSeq", "blockSize"] as const) {
      const value = options[key];
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`BatchInputs: ${key} must be an integer >= 1, got ${value}`);
      }
    }
    this.#backend = backend;
    this.#options = options;
    const { maxTokens, maxEntries, maxBlocksPerSeq } = options;
    const counts = [
      maxTokens,
      maxTokens,
      maxTokens,
      maxEntries,
      maxEntries,
      maxEntries * maxBlocksPerSeq,
      maxEntries,
      maxEntries * maxBlocksPerSeq,
      maxEntries + 1,
    ];
    // Every region starts on a 16-byte boundary, as vectorised kernels may want.
    const offsets: number[] = [];
    let total = 0;
    for (const count of counts) {
      offsets.push(total);
      total += Math.ceil(count / 4) * 4;
    }
    this.sampleEntry = new Int32Array(maxEntries);
    this.#device = backend.alloc(total * 4);
    try {
      this.#host = backend.allocHost(total * 4);
    } catch (error) {
      backend.free(this.#device);
      throw error;
    }
    const bytes = this.#host.bytes;
    const all = new Int32Array(bytes.buffer, bytes.byteOffset, total);
    this.#regions = counts.map((count, i) =>
      new Region(
        all.subarray(offsets[i], offsets[i] + count),
        this.#device.slice(offsets[i] * 4, count * 4),
      )
    );
    [
      this.#tokens,
      this.#positions,
      this.#slots,
      this.#logitRows,
      this.#decodeLens,
      this.#decodeTables,
      this.#prefillLens,
      this.#prefillTables,
      this.#queryStarts,
    ] = this.#regions;
    this.tokenIds = this.#tokens.device;
    this.positions = this.#positions.device;
    this.slots = this.#slots.device;
    this.logitRows = this.#logitRows.device;
    this.decodeContextLens = this.#decodeLens.device;
    this.decodeBlockTables = this.#decodeTables.device;
    this.prefillContextLens = this.#prefillLens.device;
    this.prefillBlockTables = this.#prefillTables.device;
    this.queryStarts = this.#queryStarts.device;
  }

  /**
   * Fills the host arrays for `plan`. With `padding` (decode-only plans), the decode rows are
   * padded to `padding.batch` rows that write nothing (slot -1) and attend to one position of
   * the scratch block, and the block tables use the graph's stride.
   *
   * @throws RangeError if the plan does not fit the sizes given at construction
   */
  build(plan: BatchPlan, padding: DecodePadding | null = null): void {
    const { blockSize: bs, maxTokens, maxEntries, maxBlocksPerSeq } = this.#options;
    const count = plan.count;
    const decodes = plan.numDecodes;
    if (padding !== null && decodes !== count) {
      throw new RangeError("BatchInputs.build: only decode-only plans can be padded");
    }
    const rows = padding === null ? decodes : padding.batch;
    const numTokens = plan.totalTokens + rows - decodes;
    if (numTokens > maxTokens || rows + count - decodes > maxEntries) {
      throw new RangeError(
        `BatchInputs.build: ${numTokens} tokens in ${rows + count - decodes} entries exceed ` +
          `the ${maxTokens} tokens and ${maxEntries} entries the inputs were sized for`,
      );
    }

    // Block-table strides: the longest table among each kind of entry, or the graph's.
    let decodeBlocks = 1, decodeContext = 1, prefillBlocks = 1;
    for (let i = 0; i < count; i++) {
      const seq = plan.seq(i);
      const context = seq.numComputedTokens + plan.numTokens[i];
      const blocks = Math.ceil(context / bs);
      if (blocks > seq.blockTable.length || blocks > maxBlocksPerSeq) {
        throw new RangeError(
          `BatchInputs.build: sequence ${seq.id} needs ${blocks} blocks for ${context} tokens ` +
            `but holds ${seq.blockTable.length} (at most ${maxBlocksPerSeq} fit a table)`,
        );
      }
      if (i < decodes) {
        if (blocks > decodeBlocks) decodeBlocks = blocks;
        if (context > decodeContext) decodeContext = context;
      } else if (blocks > prefillBlocks) {
        prefillBlocks = blocks;
      }
    }
    if (padding !== null) {
      if (padding.maxBlocks < decodeBlocks || padding.maxContext < decodeContext) {
        throw new RangeError(
          `BatchInputs.build: the graph's ${padding.maxBlocks} blocks / ${padding.maxContext} ` +
            `tokens do not cover a context of ${decodeContext} tokens`,
        );
      }
      decodeBlocks = padding.maxBlocks;
      decodeContext = padding.maxContext;
    }

    const tokens = this.#tokens.host, positions = this.#positions.host, slots = this.#slots.host;
    const logitRows = this.#logitRows.host, sampleEntry = this.sampleEntry;
    const decodeLens = this.#decodeLens.host, decodeTables = this.#decodeTables.host;
    const prefillLens = this.#prefillLens.host, prefillTables = this.#prefillTables.host;
    const queryStarts = this.#queryStarts.host;
    let row = 0, samples = 0;
    for (let i = 0; i < count; i++) {
      const seq = plan.seq(i);
      const start = seq.numComputedTokens;
      const n = plan.numTokens[i];
      const table = seq.blockTable;
      const ids = seq.tokenBuffer;
      for (let j = 0; j < n; j++) {
        const pos = start + j;
        tokens[row + j] = ids[pos];
        positions[row + j] = pos;
        slots[row + j] = table[Math.floor(pos / bs)] * bs + (pos % bs);
      }
      const context = start + n;
      const blocks = Math.ceil(context / bs);
      if (i < decodes) {
        decodeLens[i] = context;
        const base = i * decodeBlocks;
        for (let b = 0; b < blocks; b++) decodeTables[base + b] = table[b];
      } else {
        const p = i - decodes;
        prefillLens[p] = context;
        queryStarts[p] = row - decodes;
        const base = p * prefillBlocks;
        for (let b = 0; b < blocks; b++) prefillTables[base + b] = table[b];
      }
      row += n;
      if (plan.samples[i] === 1) {
        logitRows[samples] = row - 1;
        sampleEntry[samples] = i;
        samples++;
      }
    }
    const prefills = count - decodes;
    queryStarts[prefills] = row - decodes;

    if (padding !== null) {
      // Padding rows sit after the real decodes: they write no K/V (slot -1) and attend to
      // position 0 of the scratch block, so they read initialised memory and touch nothing live.
      const scratch = padding.scratchBlock;
      for (let r = count; r < rows; r++) {
        tokens[r] = 0;
        positions[r] = 0;
        slots[r] = -1;
        decodeLens[r] = 1;
        decodeTables[r * decodeBlocks] = scratch;
      }
    }

    this.numTokens = numTokens;
    this.numDecodes = rows;
    this.numPrefills = prefills;
    this.prefillTokens = plan.totalTokens - decodes;
    this.numSamples = samples;
    this.gather = padding === null && samples !== numTokens;
    this.decodeMaxBlocks = decodeBlocks;
    this.decodeMaxContext = decodeContext;
    this.prefillMaxBlocks = prefillBlocks;

    this.#tokens.used = numTokens;
    this.#positions.used = numTokens;
    this.#slots.used = numTokens;
    this.#logitRows.used = this.gather ? samples : 0;
    this.#decodeLens.used = rows;
    this.#decodeTables.used = rows * decodeBlocks;
    this.#prefillLens.used = prefills;
    this.#prefillTables.used = prefills * prefillBlocks;
    this.#queryStarts.used = prefills > 0 ? prefills + 1 : 0;
  }

  /**
   * Enqueues one host-to-device copy per array the last build used, on `stream`. The host
   * arrays must stay untouched until the stream has run the copies (the next build comes after
   * the step's results were read back, which synchronises).
   */
  upload(stream: Stream): void {
    for (const region of this.#regions) region.upload(this.#backend, stream);
  }

  /** Frees the host and device arrays; the inputs must not be used afterwards. */
  free(): void {
    this.#host.free();
    this.#backend.free(this.#device);
  }
}
