/**
 * The sampler: turns one step's logits into token ids on the device, per sequence — penalties,
 * then greedy or temperature/top-k/top-p/min-p sampling with a seeded RNG, then, where asked,
 * log-probabilities of the chosen token and its top alternatives.
 *
 * Every buffer is allocated once, for `maxRows` rows, so a step allocates no device memory.
 * Penalties and logprobs cost nothing unless a row in the step asks for them: the common step
 * is one argmax (or sample) launch and one copy of the ids back.
 *
 * A step is two calls: `launch` enqueues everything, copies included, into pinned host memory
 * (so the copies are asynchronous), and `collect` reads the results once the stream has got
 * there. Between the two the caller is free to serve its event loop while the device works.
 *
 * Order, as in vLLM: the built-in logits processors first — logitBias, bannedTokenIds and
 * minTokens as one sparse edit launch, then allowedTokenIds and the per-step token bitmask
 * ({@link TokenBitmaskFiller}) as one mask launch over the constrained rows — then penalties,
 * then temperature and the filters. Each costs nothing unless a row in the step uses it.
 * Logprobs are of the raw model output (read from the lm head's bf16 logits, which none of
 * these touch), like vLLM's default `raw_logprobs`.
 *
 * @module
 */

import type { Backend, DeviceBuffer, HostBuffer, Stream } from "../backends/backend.ts";
import { bitmaskWords, type ModelOps, type SamplingBuffers } from "../ops/ops.ts";
import type { LogitsProcessor, LogitsRows } from "./logits_processors.ts";
import { MAX_TOP_LOGPROBS, type Sequence } from "./sequence.ts";
import { StagedWords } from "./staged_words.ts";

/** Log-probabilities of one sampled token, from the model's raw output distribution. */
export interface TokenLogprobs {
  /** log p of the sampled token. */
  readonly logprob: number;
  /** The `logprobs` most likely tokens, most likely first (ties: lower id first). */
  readonly top: readonly { readonly tokenId: number; readonly logprob: number }[];
}

/** Sizes a {@link Sampler} is allocated for. */
export interface SamplerOptions {
  /** Most rows sampled in one step (the engine's maxRunning). */
  readonly maxRows: number;
  /** Vocabulary size (row length of the logits). */
  readonly vocab: number;
  /** Most tokens per sequence: bounds the distinct tokens a row's penalties can name. */
  readonly maxModelLen: number;
  /** Processors of every row, run by {@link Sampler.launchEngineProcessors}; default none. */
  readonly engineProcessors?: readonly LogitsProcessor[];
}

/** Which sequence each sample row belongs to. */
export interface SampleRows {
  /** Number of rows. */
  readonly count: number;
  /** The sequence of row s. */
  seqOf(s: number): Sequence;
}

/** One step's sampling on a device; see the module doc. */
export class Sampler {
  readonly #backend: Backend;
  readonly #ops: ModelOps;
  readonly #stream: Stream;
  readonly #vocab: number;
  readonly #owned: DeviceBuffer[] = [];
  readonly #stagedOwned: StagedWords[] = [];
  #hostRows: Float32Array = new Float32Array(0);
  #hostRowsBuffer: HostBuffer | null = null;
  readonly #hosts: HostBuffer[] = [];

  readonly #ids: DeviceBuffer;
  readonly #idsHost: Int32Array;
  // What the launched step asked for, for collect.
  #launchedRows = 0;
  #launchedTopN = -1;
  readonly #workspace: DeviceBuffer;
  // Sampling parameters: one device buffer of seven [R]-word arrays, sent with one copy.
  readonly #params: SamplingBuffers;
  readonly #paramsDevice: DeviceBuffer;
  readonly #paramsHost: HostBuffer;
  readonly #temperature: Float32Array;
  readonly #topK: Int32Array;
  readonly #topP: Float32Array;
  readonly #minP: Float32Array;
  readonly #seed: Uint32Array;
  readonly #step: Int32Array;
  // Penalties: f32 [R, 3] per row and i32 [capacity, 3] (row, token, outputCount) entries.
  readonly #penalties: DeviceBuffer;
  readonly #penaltiesHost: HostBuffer;
  readonly #penaltyValues: Float32Array;
  readonly #entries: DeviceBuffer;
  readonly #entriesHost: HostBuffer;
  readonly #entryWords: Int32Array;
  #entryCount = 0;
  #entryRow = 0;
  // Logprobs: chosen f32 [R], top ids i32 [R, 20], top values f32 [R, 20].
  readonly #chosen: DeviceBuffer;
  readonly #topIds: DeviceBuffer;
  readonly #topValues: DeviceBuffer;
  readonly #chosenHost: Float32Array;
  readonly #topIdsHost: Int32Array;
  readonly #topValuesHost: Float32Array;
  // Logit edits: i32 [capacity, 3] (row, token, addend bits), grown when a step needs more.
  readonly #edits: StagedWords;
  // User processors: the rows of each (position, processor) group, and the groups in order.
  readonly #groupRows: StagedWords;
  readonly #groupProcessors: LogitsProcessor[] = [];
  readonly #groupStarts: number[] = [];
  readonly #grouped: Uint8Array;
  readonly #processorRows: ProcessorRows;
  readonly #engineProcessors: readonly LogitsProcessor[];
  readonly #allRows: StagedWords;
  // Bitmasks: i32 [R, words] masks (one view per slot, made once) and i32 [R] rows.
  readonly #maskWords: number;
  readonly #masks: DeviceBuffer;
  readonly #masksHost: HostBuffer;
  readonly #maskViews: Int32Array[] = [];
  readonly #maskScratch: Int32Array;
  readonly #maskRows: DeviceBuffer;
  readonly #maskRowsHost: Int32Array;
  // Bound once: Map.forEach with a prebound callback walks the counts without an iterator.
  readonly #pushEntry = (count: number, token: number) => {
    const at = 3 * this.#entryCount++;
    this.#entryWords[at] = this.#entryRow;
    this.#entryWords[at + 1] = token;
    this.#entryWords[at + 2] = count;
  };

  /**
   * Allocates every buffer for `options.maxRows` rows on `stream`'s device; frees what it
   * allocated if one allocation fails.
   */
  constructor(backend: Backend, ops: ModelOps, stream: Stream, options: SamplerOptions) {
    const { maxRows: R, vocab } = options;
    this.#backend = backend;
    this.#ops = ops;
    this.#stream = stream;
    this.#vocab = vocab;
    try {
      this.#ids = this.#alloc(R * 4);
      this.#idsHost = this.#pinned(Int32Array, R);
      this.#workspace = this.#alloc(ops.sampleWorkspaceBytes(R, vocab));

      // seed (u64) first so it is 8-byte aligned; every array starts on 16 bytes.
      const words = Math.ceil(R / 4) * 4;
      this.#paramsDevice = this.#alloc(words * 4 * 7);
      this.#paramsHost = this.#allocHost(words * 4 * 7);
      const host = this.#paramsHost.bytes.buffer;
      const base = this.#paramsHost.bytes.byteOffset;
      const at = (word: number, length: number) => this.#paramsDevice.slice(word * 4, length);
      this.#seed = new Uint32Array(host, base, 2 * R);
      this.#temperature = new Float32Array(host, base + 2 * words * 4, R);
      this.#topK = new Int32Array(host, base + 3 * words * 4, R);
      this.#topP = new Float32Array(host, base + 4 * words * 4, R);
      this.#minP = new Float32Array(host, base + 5 * words * 4, R);
      this.#step = new Int32Array(host, base + 6 * words * 4, R);
      this.#params = {
        seed: at(0, 8 * R),
        temperature: at(2 * words, 4 * R),
        topK: at(3 * words, 4 * R),
        topP: at(4 * words, 4 * R),
        minP: at(5 * words, 4 * R),
        step: at(6 * words, 4 * R),
      };

      this.#penalties = this.#alloc(R * 3 * 4);
      this.#penaltiesHost = this.#allocHost(R * 3 * 4);
      const penaltyBytes = this.#penaltiesHost.bytes;
      this.#penaltyValues = new Float32Array(
        penaltyBytes.buffer,
        penaltyBytes.byteOffset,
        R * 3,
      );
      // A row names each distinct token of its sequence at most once.
      const capacity = R * Math.min(options.maxModelLen, vocab);
      this.#entries = this.#alloc(capacity * 3 * 4);
      this.#entriesHost = this.#allocHost(capacity * 3 * 4);
      const entryBytes = this.#entriesHost.bytes;
      this.#entryWords = new Int32Array(entryBytes.buffer, entryBytes.byteOffset, capacity * 3);

      const top = R * MAX_TOP_LOGPROBS;
      this.#chosen = this.#alloc(R * 4);
      this.#topIds = this.#alloc(top * 4);
      this.#topValues = this.#alloc(top * 4);
      this.#chosenHost = this.#pinned(Float32Array, R);
      this.#topIdsHost = this.#pinned(Int32Array, top);
      this.#topValuesHost = this.#pinned(Float32Array, top);

      this.#edits = this.#staged(3 * 16 * R);
      this.#groupRows = this.#staged(4 * R);
      this.#grouped = new Uint8Array(R);
      this.#allRows = this.#staged(R);
      for (let r = 0; r < R; r++) this.#allRows.words[r] = r;
      this.#allRows.upload(R, stream);
      this.#engineProcessors = options.engineProcessors ?? [];
      this.#processorRows = new ProcessorRows(backend, stream, vocab, (count) => {
        // Taken on first use (most engines never run a host processor), grown by doubling.
        if (this.#hostRows.length < count * vocab) {
          // An earlier group's copies back may still read the old buffer.
          stream.synchronize();
          this.#hostRowsBuffer?.free();
          this.#hostRowsBuffer = null;
          const rows = Math.min(R, Math.max(count, (2 * this.#hostRows.length) / vocab));
          this.#hostRowsBuffer = backend.allocHost(4 * rows * vocab);
          const bytes = this.#hostRowsBuffer.bytes;
          this.#hostRows = new Float32Array(bytes.buffer, bytes.byteOffset, rows * vocab);
        }
        return this.#hostRows.subarray(0, count * vocab);
      });
      const perRow = bitmaskWords(vocab);
      this.#maskWords = perRow;
      this.#masks = this.#alloc(R * perRow * 4);
      this.#masksHost = this.#allocHost(R * perRow * 4);
      const maskWords = wordsOf(this.#masksHost);
      for (let k = 0; k < R; k++) {
        this.#maskViews.push(maskWords.subarray(k * perRow, (k + 1) * perRow));
      }
      this.#maskScratch = new Int32Array(perRow);
      this.#maskRows = this.#alloc(R * 4);
      this.#maskRowsHost = this.#pinned(Int32Array, R);
    } catch (error) {
      this.free();
      throw error;
    }
  }

  /**
   * Enqueues the sampling of one token per row from `logits` (f32 [rows.count, vocab], changed
   * in place by penalties) and, for rows whose sequence asks, log-probabilities from `rawLogits`
   * (bf16, the same rows before any change), with the copies back to the host. Wait for the
   * stream, then call {@link collect}.
   */
  launch(rows: SampleRows, logits: DeviceBuffer, rawLogits: DeviceBuffer): void {
    const count = rows.count, vocab = this.#vocab, ops = this.#ops, stream = this.#stream;
    let greedy = true, penalised = false, edited = false, masked = false, topN = -1, longest = 0;
    for (let s = 0; s < count; s++) {
      const seq = rows.seqOf(s);
      const p = seq.params;
      if (p.temperature > 0) greedy = false;
      if (seq.penaltyCounts !== null) penalised = true;
      if (seq.logitEdits.after !== null || seq.logitEdits.beforeMin !== null) edited = true;
      if (p.allowedTokenIds !== null || p.tokenBitmask !== null) masked = true;
      if (p.logitsProcessors.length > longest) longest = p.logitsProcessors.length;
      if (seq.params.logprobs !== null && seq.params.logprobs > topN) topN = seq.params.logprobs;
    }
    // A vocabulary smaller than the request has only that many alternatives.
    topN = Math.min(topN, vocab);
    this.#launchedRows = count;
    this.#launchedTopN = topN;
    if (count === 0) return;
    if (edited) this.#applyEdits(rows, logits);
    if (masked) this.#applyMasks(rows, logits);
    if (longest > 0) this.#applyProcessors(rows, logits, longest);
    if (penalised) this.#applyPenalties(rows, logits);
    if (greedy) {
      ops.argmax(this.#ids, logits, count, vocab, stream);
    } else {
      this.#fillParams(rows);
      ops.sample(this.#ids, logits, this.#params, count, vocab, this.#workspace, stream);
    }
    const backend = this.#backend;
    // The whole (small) array: a view of `count` ids would allocate every step.
    backend.copyToHost(this.#idsHost, this.#ids, stream);
    if (topN < 0) return;
    ops.logprobs(
      this.#chosen,
      this.#topIds,
      this.#topValues,
      rawLogits,
      this.#ids,
      count,
      vocab,
      topN,
      stream,
    );
    backend.copyToHost(this.#chosenHost.subarray(0, count), this.#chosen, stream);
    if (topN === 0) return;
    backend.copyToHost(this.#topIdsHost.subarray(0, count * topN), this.#topIds, stream);
    backend.copyToHost(this.#topValuesHost.subarray(0, count * topN), this.#topValues, stream);
  }

  /**
   * After the stream has passed the launched step: writes row s's id to `sampled[entryOf[s]]`
   * and, where `logprobs` is given, row s's log-probabilities to `logprobs[entryOf[s]]`
   * (undefined for rows that did not ask). `rows` must be the launched rows.
   */
  collect(
    rows: SampleRows,
    entryOf: Int32Array,
    sampled: Int32Array,
    logprobs: (TokenLogprobs | undefined)[] | null,
  ): void {
    const count = this.#launchedRows, topN = this.#launchedTopN;
    for (let s = 0; s < count; s++) {
      const entry = entryOf[s];
      sampled[entry] = this.#idsHost[s];
      if (logprobs === null) continue;
      const want = rows.seqOf(s).params.logprobs;
      logprobs[entry] = want === null
        ? undefined
        : this.#rowLogprobs(s, topN, Math.min(want, this.#vocab));
    }
  }

  /** Releases every buffer; safe to call twice. */
  free(): void {
    this.#hostRowsBuffer?.free();
    this.#hostRowsBuffer = null;
    for (const staged of this.#stagedOwned) staged.free();
    this.#stagedOwned.length = 0;
    for (const buffer of this.#owned) this.#backend.free(buffer);
    this.#owned.length = 0;
    for (const host of this.#hosts) host.free();
    this.#hosts.length = 0;
  }

  #rowLogprobs(s: number, stride: number, n: number): TokenLogprobs {
    const top: { tokenId: number; logprob: number }[] = new Array(n);
    for (let j = 0; j < n; j++) {
      top[j] = {
        tokenId: this.#topIdsHost[s * stride + j],
        logprob: this.#topValuesHost[s * stride + j],
      };
    }
    return { logprob: this.#chosenHost[s], top };
  }

  #applyEdits(rows: SampleRows, logits: DeviceBuffer): void {
    let needed = 0;
    for (let s = 0; s < rows.count; s++) needed += editsOf(rows.seqOf(s))?.length ?? 0;
    needed /= 2;
    this.#edits.reserve(3 * needed);
    const words = this.#edits.words;
    let at = 0;
    for (let s = 0; s < rows.count; s++) {
      const pairs = editsOf(rows.seqOf(s));
      if (pairs === null) continue;
      for (let j = 0; j < pairs.length; j += 2) {
        words[at++] = s;
        words[at++] = pairs[j];
        words[at++] = pairs[j + 1];
      }
    }
    if (needed === 0) return;
    const stream = this.#stream;
    this.#edits.upload(at, stream);
    this.#ops.applyLogitEdits(logits, this.#edits.device, needed, rows.count, this.#vocab, stream);
  }

  /**
   * Enqueues the engine-wide processors over logits rows [0, count). The model calls it at the
   * end of its forward pass, so decode graphs record it.
   */
  launchEngineProcessors(logits: DeviceBuffer, count: number): void {
    const view = this.#processorRows;
    for (const processor of this.#engineProcessors) {
      view.set(logits, this.#allRows, 0, count, null);
      processor.process(view);
    }
  }

  /**
   * Runs the requests' own processors: position by position, one call per distinct processor
   * over all the rows that have it at that position, so each row sees its list in order.
   */
  #applyProcessors(rows: SampleRows, logits: DeviceBuffer, longest: number): void {
    const count = rows.count, grouped = this.#grouped;
    const starts = this.#groupStarts, processors = this.#groupProcessors;
    this.#groupRows.reserve(count * longest);
    const ids = this.#groupRows.words;
    let at = 0, groups = 0;
    for (let j = 0; j < longest; j++) {
      grouped.fill(0, 0, count);
      for (let s = 0; s < count; s++) {
        const list = rows.seqOf(s).params.logitsProcessors;
        if (grouped[s] === 1 || list.length <= j) continue;
        const processor = list[j];
        processors[groups] = processor;
        starts[groups++] = at;
        for (let t = s; t < count; t++) {
          const other = rows.seqOf(t).params.logitsProcessors;
          if (grouped[t] === 0 && other.length > j && other[j] === processor) {
            grouped[t] = 1;
            ids[at++] = t;
          }
        }
      }
    }
    starts[groups] = at;
    this.#groupRows.upload(at, this.#stream);
    const view = this.#processorRows;
    for (let g = 0; g < groups; g++) {
      view.set(logits, this.#groupRows, starts[g], starts[g + 1] - starts[g], rows);
      processors[g].process(view);
      processors[g] = NO_PROCESSOR; // hold no user object past the step
    }
  }

  #applyMasks(rows: SampleRows, logits: DeviceBuffer): void {
    const words = this.#maskWords, scratch = this.#maskScratch;
    let k = 0;
    for (let s = 0; s < rows.count; s++) {
      const seq = rows.seqOf(s);
      const { allowedTokenIds: allowed, tokenBitmask: filler } = seq.params;
      if (allowed === null && filler === null) continue;
      const mask = this.#maskViews[k];
      mask.fill(0);
      let used = false;
      if (filler !== null) used = filler.fill(mask, seq) === true;
      if (allowed !== null) {
        const into = used ? scratch : mask;
        if (used) scratch.fill(0);
        for (let j = 0; j < allowed.length; j++) {
          const id = allowed[j];
          into[id >>> 5] |= 1 << (id & 31);
        }
        if (used) { for (let w = 0; w < words; w++) mask[w] &= scratch[w]; }
        used = true;
      }
      if (used) this.#maskRowsHost[k++] = s;
    }
    if (k === 0) return;
    const backend = this.#backend, stream = this.#stream;
    backend.copyToDevice(this.#masks, this.#masksHost.bytes.subarray(0, k * words * 4), stream);
    backend.copyToDevice(this.#maskRows, this.#maskRowsHost, stream);
    this.#ops.applyTokenBitmask(
      logits,
      this.#masks,
      this.#maskRows,
      k,
      rows.count,
      this.#vocab,
      stream,
    );
  }

  #applyPenalties(rows: SampleRows, logits: DeviceBuffer): void {
    const values = this.#penaltyValues;
    this.#entryCount = 0;
    for (let s = 0; s < rows.count; s++) {
      const seq = rows.seqOf(s);
      const p = seq.params;
      values[3 * s] = p.repetitionPenalty;
      values[3 * s + 1] = p.presencePenalty;
      values[3 * s + 2] = p.frequencyPenalty;
      if (seq.penaltyCounts === null) continue;
      this.#entryRow = s;
      seq.penaltyCounts.forEach(this.#pushEntry);
    }
    const backend = this.#backend, stream = this.#stream;
    const entryBytes = this.#entryCount * 12;
    backend.copyToDevice(
      this.#penalties,
      this.#penaltiesHost.bytes.subarray(0, rows.count * 12),
      stream,
    );
    if (entryBytes === 0) return;
    backend.copyToDevice(this.#entries, this.#entriesHost.bytes.subarray(0, entryBytes), stream);
    this.#ops.applyPenalties(
      logits,
      this.#entries,
      this.#entryCount,
      this.#penalties,
      rows.count,
      this.#vocab,
      stream,
    );
  }

  #fillParams(rows: SampleRows): void {
    for (let s = 0; s < rows.count; s++) {
      const seq = rows.seqOf(s);
      const p = seq.params;
      this.#temperature[s] = p.temperature;
      this.#topK[s] = p.topK;
      this.#topP[s] = p.topP;
      this.#minP[s] = p.minP;
      // The engine always sets a seed; null only reaches here from direct use.
      const seed = p.seed ?? seq.id;
      this.#seed[2 * s] = seed >>> 0;
      this.#seed[2 * s + 1] = Math.floor(seed / 4294967296) >>> 0;
      this.#step[s] = seq.numOutputTokens;
    }
    this.#backend.copyToDevice(this.#paramsDevice, this.#paramsHost.bytes, this.#stream);
  }

  #staged(capacity: number): StagedWords {
    const staged = new StagedWords(this.#backend, capacity);
    this.#stagedOwned.push(staged);
    return staged;
  }

  #alloc(bytes: number): DeviceBuffer {
    const buffer = this.#backend.alloc(bytes);
    this.#owned.push(buffer);
    return buffer;
  }

  /** A typed array over new pinned memory, so device-to-host copies into it are asynchronous. */
  #pinned<T extends Int32Array | Float32Array>(
    type: { new (buffer: ArrayBuffer, offset: number, length: number): T },
    length: number,
  ): T {
    const bytes = this.#allocHost(length * 4).bytes;
    return new type(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
  }

  #allocHost(bytes: number): HostBuffer {
    const host = this.#backend.allocHost(bytes);
    this.#hosts.push(host);
    return host;
  }
}

/** Stands in for a processor slot after its step, so the sampler keeps no user object alive. */
const NO_PROCESSOR: LogitsProcessor = { name: "none", capturable: true, process() {} };

/** The LogitsRows a processor call sees; one object, reset before every call. */
class ProcessorRows implements LogitsRows {
  logits!: DeviceBuffer;
  count = 0;
  offset = 0;
  #rows: StagedWords | null = null;
  #sampleRows: SampleRows | null = null;

  constructor(
    readonly backend: Backend,
    readonly stream: Stream,
    readonly vocab: number,
    readonly hostRows: (count: number) => Float32Array,
  ) {}

  get rowIds(): Int32Array {
    return this.#rows!.words;
  }

  get rowIdsDevice(): DeviceBuffer {
    return this.#rows!.device;
  }

  set(
    logits: DeviceBuffer,
    rows: StagedWords,
    offset: number,
    count: number,
    sampleRows: SampleRows | null,
  ): void {
    this.logits = logits;
    this.#rows = rows;
    this.offset = offset;
    this.count = count;
    this.#sampleRows = sampleRows;
  }

  sequence(k: number): Sequence | null {
    const rows = this.#sampleRows;
    return rows === null ? null : rows.seqOf(this.#rows!.words[this.offset + k]);
  }
}

/** The sequence's (token, addend bits) edit pairs for its next token, or null. */
function editsOf(seq: Sequence): Int32Array | null {
  const edits = seq.logitEdits;
  return seq.numOutputTokens < seq.params.minTokens ? edits.beforeMin : edits.after;
}

/** An Int32Array over a whole host buffer. */
function wordsOf(host: HostBuffer): Int32Array {
  return new Int32Array(host.bytes.buffer, host.bytes.byteOffset, host.bytes.byteLength >> 2);
}
