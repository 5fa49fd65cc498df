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
 * Order, as in vLLM: penalties change the logits the sampler sees; logprobs are of the raw
 * model output (read from the lm head's bf16 logits, which penalties do not touch), like
 * vLLM's default `raw_logprobs`.
 *
 * @module
 */

import type { Backend, DeviceBuffer, HostBuffer, Stream } from "../backends/backend.ts";
import type { LlamaOps, SamplingBuffers } from "../backends/ops.ts";
import { MAX_TOP_LOGPROBS, type Sequence } from "./sequence.ts";

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
  readonly #ops: LlamaOps;
  readonly #stream: Stream;
  readonly #vocab: number;
  readonly #owned: DeviceBuffer[] = [];
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
  constructor(backend: Backend, ops: LlamaOps, stream: Stream, options: SamplerOptions) {
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
    let greedy = true, penalised = false, topN = -1;
    for (let s = 0; s < count; s++) {
      const seq = rows.seqOf(s);
      if (seq.params.temperature > 0) greedy = false;
      if (seq.penaltyCounts !== null) penalised = true;
      if (seq.params.logprobs !== null && seq.params.logprobs > topN) topN = seq.params.logprobs;
    }
    // A vocabulary smaller than the request has only that many alternatives.
    topN = Math.min(topN, vocab);
    this.#launchedRows = count;
    this.#launchedTopN = topN;
    if (count === 0) return;
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
