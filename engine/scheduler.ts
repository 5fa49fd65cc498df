/**
 * Continuous batching: decides which sequences run each step and how many tokens each computes.
 * The block manager decides where their K/V lives; the model runner executes the plan. The three
 * only meet through `step()` → run → `postprocess()` (or `failStep()`), strictly alternating.
 *
 * Each step fills a token budget (`maxBatchedTokens`) in this order:
 * 1. every running sequence with one token left to compute (decodes), 1 token each, oldest first
 *    or longest context first ({@link DecodeOrder}); a decode whose next token starts a new block
 *    gets one, and when none is left the NEWEST running sequence is preempted (blocks freed, put
 *    back at the front of the queue, recomputed later from its prompt plus what it generated)
 *    until the block is found; the oldest request always progresses;
 * 2. running sequences part-way through their prefill, in arrival order, a chunk each;
 * 3. waiting sequences, first come first served, while the budget, `maxRunning` and the cache
 *    allow; a request that does not fit stops admission (no overtaking), and none are admitted in
 *    a step that preempted (admitting would only thrash).
 * Because maxBatchedTokens >= maxRunning, step 1 always fits, so no decode is ever starved.
 *
 * The hot path allocates nothing: the plan's arrays are preallocated for maxRunning entries and
 * the same plan object is returned every step (valid until the next `step()`).
 *
 * @module
 */

import type { BlockManager } from "./block_manager.ts";
import type { FinishReason, Sequence } from "./sequence.ts";

/** Limits of a Scheduler. */
export interface SchedulerConfig {
  /** Most sequences running at once (the batch size of a decode step). */
  readonly maxRunning: number;
  /** Most tokens computed in one step, over all sequences; must be >= maxRunning. */
  readonly maxBatchedTokens: number;
  /** Most tokens (prompt + generated) one sequence may hold; default unlimited. */
  readonly maxModelLen?: number;
  /** How a step orders its decode entries; default "arrival" (see {@link DecodeOrder}). */
  readonly decodeOrder?: DecodeOrder;
}

/**
 * The order of a step's decode entries:
 * - "arrival": oldest running sequence first;
 * - "longest-first": longest context first. At large batches decode attention gives each
 *   sequence's whole context to one block per KV head group, and a GPU starts blocks in index
 *   order, so a long context that starts last runs on while the rest of the device idles.
 *   Started first, the short ones fill in behind it (longest-processing-time-first).
 * Rows are independent (every per-sequence input is rebuilt each step, and sampling seeds are
 * per sequence), so the order changes no token.
 */
export type DecodeOrder = "arrival" | "longest-first";

/** The decode orders, for option checks and flags. */
export const DECODE_ORDERS: readonly DecodeOrder[] = ["arrival", "longest-first"];

// Sort keys pack (context, entry index) into one float64: -context · KEY_SPAN + index. A power of
// two, so the index comes back exactly; entries stay below it (BatchPlan's capacity check).
const KEY_SPAN = 2 ** 20;

/** A request that can never run with this engine's limits; it names both sizes and the remedy. */
export class RequestRejectedError extends Error {
  /**
   * Creates the error.
   * @param message what is too large, by how much, and what to change
   */
  constructor(message: string) {
    super(message);
    this.name = "RequestRejectedError";
  }
}

/**
 * What one step computes: `count` entries, entry i computing `numTokens[i]` tokens of `seq(i)`
 * starting at position `seq(i).numComputedTokens`. Entries [0, numDecodes) are single-token
 * decodes; the rest are prefill chunks (which may also be a single token). Entry i yields a
 * sampled token iff `samples[i]` is 1 (its chunk reaches the sequence's last token).
 */
export class BatchPlan {
  /** Entries in this step. */
  count = 0;
  /** Leading entries that are decodes. */
  numDecodes = 0;
  /** Sum of numTokens over the entries. */
  totalTokens = 0;
  /** Tokens entry i computes. */
  readonly numTokens: Int32Array;
  /** 1 if entry i samples a token this step. */
  readonly samples: Uint8Array;
  readonly #seqs: (Sequence | null)[];
  readonly #moved: (Sequence | null)[];
  readonly #keys: Float64Array;
  // keys.subarray(0, n), made once per n: a step's sort allocates nothing once warm.
  readonly #keyViews: (Float64Array | undefined)[] = [];

  /** @param capacity most entries (the scheduler's maxRunning) */
  constructor(capacity: number) {
    if (capacity > KEY_SPAN) {
      throw new RangeError(`BatchPlan: capacity must be <= ${KEY_SPAN}, got ${capacity}`);
    }
    this.numTokens = new Int32Array(capacity);
    this.samples = new Uint8Array(capacity);
    this.#seqs = new Array(capacity).fill(null);
    this.#moved = new Array(capacity).fill(null);
    this.#keys = new Float64Array(capacity);
  }

  /** The sequence of entry i. */
  seq(i: number): Sequence {
    const s = this.#seqs[i];
    if (i >= this.count || s === null) {
      throw new RangeError(`BatchPlan.seq: entry ${i} is outside this plan of ${this.count}`);
    }
    return s;
  }

  /** Entries that sample, i.e. rows of logits the runner must produce. */
  get numSamples(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) n += this.samples[i];
    return n;
  }

  /** Empties the plan, dropping sequence references so finished ones can be collected. */
  clear(): void {
    for (let i = 0; i < this.count; i++) this.#seqs[i] = null;
    this.count = 0;
    this.numDecodes = 0;
    this.totalTokens = 0;
  }

  /**
   * Reorders the decode entries [0, numDecodes) longest context first, ties oldest first
   * (scheduler use). Every decode entry computes one token and samples, so only the sequences
   * move.
   */
  orderDecodesLongestFirst(): void {
    const n = this.numDecodes, seqs = this.#seqs, moved = this.#moved;
    if (n < 2) return;
    const keys = this.#keyViews[n] ??= this.#keys.subarray(0, n);
    for (let i = 0; i < n; i++) keys[i] = -seqs[i]!.numTokens * KEY_SPAN + i;
    keys.sort();
    for (let j = 0; j < n; j++) {
      const key = keys[j];
      moved[j] = seqs[key - Math.floor(key / KEY_SPAN) * KEY_SPAN];
    }
    for (let j = 0; j < n; j++) {
      seqs[j] = moved[j];
      moved[j] = null;
    }
  }

  /** Adds an entry (scheduler use). */
  push(seq: Sequence, tokens: number, samples: boolean): void {
    const i = this.count++;
    this.#seqs[i] = seq;
    this.numTokens[i] = tokens;
    this.samples[i] = samples ? 1 : 0;
    this.totalTokens += tokens;
  }
}

/** A snapshot of scheduler counters, for a /metrics endpoint. */
export interface SchedulerMetrics {
  /** Sequences running now. */
  readonly running: number;
  /** Sequences waiting, preempted ones included. */
  readonly waiting: number;
  /** Fraction of KV blocks held by sequences, in [0, 1]. */
  readonly kvUsage: number;
  /** KV blocks held by sequences. */
  readonly kvBlocksUsed: number;
  /** KV blocks in the pool. */
  readonly kvBlocksTotal: number;
  /** Preemptions since start. */
  readonly preemptions: number;
  /** Tokens computed in prefill (prompts and recomputation) since start. */
  readonly prefillTokens: number;
  /** Tokens sampled since start. */
  readonly generatedTokens: number;
  /** Fraction of queried prompt tokens served from the prefix cache. */
  readonly prefixCacheHitRate: number;
  /** Finished sequences by reason since start. */
  readonly finished: Readonly<Record<FinishReason, number>>;
}

/** Continuous-batching scheduler over a BlockManager. */
export class Scheduler {
  /** The KV-cache bookkeeping it schedules into. */
  readonly blocks: BlockManager;
  /** Most sequences running at once. */
  readonly maxRunning: number;
  /** Token budget per step. */
  readonly maxBatchedTokens: number;
  /** Most tokens per sequence. */
  readonly maxModelLen: number;
  /** How each step orders its decode entries. */
  readonly decodeOrder: DecodeOrder;

  readonly #waiting: Sequence[] = [];
  // Oldest admitted first: preemption takes from the end.
  readonly #running: Sequence[] = [];
  readonly #live = new Map<number, Sequence>();
  readonly #plan: BatchPlan;
  #inFlight = false;
  #preemptions = 0;
  #prefillTokens = 0;
  #generatedTokens = 0;
  readonly #finished: Record<FinishReason, number> = { stop: 0, length: 0, abort: 0, error: 0 };

  /**
   * @param blocks the block manager of the KV cache
   * @param config limits; maxBatchedTokens >= maxRunning so every decode fits in one step
   */
  constructor(blocks: BlockManager, config: SchedulerConfig) {
    const { maxRunning, maxBatchedTokens, maxModelLen = Infinity, decodeOrder = "arrival" } =
      config;
    if (!Number.isInteger(maxRunning) || maxRunning < 1) {
      throw new RangeError(`Scheduler: maxRunning must be an integer >= 1, got ${maxRunning}`);
    }
    if (!Number.isInteger(maxBatchedTokens) || maxBatchedTokens < maxRunning) {
      throw new RangeError(
        `Scheduler: maxBatchedTokens (${maxBatchedTokens}) must be an integer >= maxRunning ` +
          `(${maxRunning}), or some decodes could not run every step; raise it or lower maxRunning`,
      );
    }
    if (maxModelLen !== Infinity && (!Number.isInteger(maxModelLen) || maxModelLen < 2)) {
      throw new RangeError(`Scheduler: maxModelLen must be an integer >= 2, got ${maxModelLen}`);
    }
    if (!DECODE_ORDERS.includes(decodeOrder)) {
      throw new RangeError(
        `Scheduler: decodeOrder must be ${DECODE_ORDERS.join(" or ")}, got ${decodeOrder}`,
      );
    }
    this.blocks = blocks;
    this.maxRunning = maxRunning;
    this.maxBatchedTokens = maxBatchedTokens;
    this.maxModelLen = maxModelLen;
    this.decodeOrder = decodeOrder;
    this.#plan = new BatchPlan(maxRunning);
  }

  /**
   * Queues a request; it joins the batch at the next step with room. Throws
   * RequestRejectedError for a request that could never run (its prompt alone exceeds the KV
   * cache or maxModelLen), rather than letting it wait forever.
   */
  add(seq: Sequence): void {
    if (seq.status !== "waiting" || seq.blockTable.length !== 0 || seq.numOutputTokens !== 0) {
      throw new Error(`Scheduler.add: sequence ${seq.id} is not new (status ${seq.status})`);
    }
    if (this.#live.has(seq.id)) {
      throw new Error(`Scheduler.add: a sequence with id ${seq.id} is already scheduled`);
    }
    const bs = this.blocks.blockSize;
    const capacity = this.blocks.numBlocks * bs;
    if (seq.numTokens > capacity) {
      throw new RequestRejectedError(
        `the prompt is ${seq.numTokens} tokens but the whole KV cache holds ${capacity} tokens ` +
          `(${this.blocks.numBlocks} blocks of ${bs}); shorten the prompt or give the KV cache ` +
          `more memory`,
      );
    }
    if (seq.numTokens >= this.maxModelLen) {
      throw new RequestRejectedError(
        `the prompt is ${seq.numTokens} tokens but the model's context is ${this.maxModelLen} ` +
          `tokens, leaving no room to generate; shorten the prompt`,
      );
    }
    this.#live.set(seq.id, seq);
    this.#waiting.push(seq);
  }

  /**
   * Plans the next step. Returns the scheduler's single plan object, empty (count 0) when there
   * is nothing to run. Call postprocess or failStep with it before the next step.
   */
  step(): BatchPlan {
    if (this.#inFlight) {
      throw new Error(
        "Scheduler.step: the previous plan is still in flight; call postprocess(plan, ids) or " +
          "failStep(plan, error) first",
      );
    }
    const plan = this.#plan;
    const running = this.#running;
    plan.clear();
    let budget = this.maxBatchedTokens;
    let preempted = false;

    for (let i = 0; i < running.length; i++) {
      const seq = running[i];
      if (seq.numTokens - seq.numComputedTokens !== 1) continue;
      let scheduled = true;
      while (!this.blocks.appendSlot(seq)) {
        const victim = running[running.length - 1];
        if (victim === seq && running.length === 1) {
          // It alone fills the cache: it has reached the most context this cache can hold.
          running.pop();
          this.blocks.free(seq);
          this.#finish(seq, "length");
          scheduled = false;
          break;
        }
        this.#preempt(victim);
        preempted = true;
        if (victim === seq) {
          scheduled = false;
          break;
        }
      }
      if (!scheduled) break; // seq was the last running sequence
      plan.push(seq, 1, true);
      budget--;
    }
    plan.numDecodes = plan.count;
    if (this.decodeOrder === "longest-first") plan.orderDecodesLongestFirst();

    for (let i = 0; i < running.length && budget > 0; i++) {
      const seq = running[i];
      const left = seq.numTokens - seq.numComputedTokens;
      if (left <= 1) continue;
      const n = Math.min(left, budget);
      plan.push(seq, n, n === left);
      budget -= n;
    }

    const waiting = this.#waiting;
    while (!preempted && waiting.length > 0 && running.length < this.maxRunning && budget > 0) {
      const seq = waiting[0];
      if (!this.blocks.canAllocate(seq)) {
        if (running.length > 0) break; // wait for running sequences to free blocks
        // Nothing holds a block, yet it does not fit: it never will. Fail it, never hang it.
        waiting.shift();
        this.#finish(
          seq,
          "error",
          new RequestRejectedError(
            `sequence ${seq.id} needs ${this.blocks.blocksFor(seq.numTokens)} KV blocks for ` +
              `${seq.numTokens} tokens but the cache has ${this.blocks.numBlocks}`,
          ),
        );
        continue;
      }
      waiting.shift();
      this.blocks.allocate(seq);
      seq.status = "running";
      running.push(seq);
      const left = seq.numTokens - seq.numComputedTokens;
      const n = Math.min(left, budget);
      plan.push(seq, n, n === left);
      budget -= n;
    }

    this.#inFlight = plan.count > 0;
    return plan;
  }

  /**
   * Applies a finished step: marks the computed tokens, registers newly full blocks for prefix
   * sharing, appends each sampling entry's token (`sampledIds[i]` for entry i; entries that do
   * not sample are ignored) and ends sequences on a stop token or a length limit. Stop strings are text, which
   * the engine matches; it ends those sequences with {@link finish}.
   * Sequences cancelled while the step ran are skipped.
   */
  postprocess(plan: BatchPlan, sampledIds: ArrayLike<number>): void {
    if (sampledIds.length < plan.count) {
      // The runner is out of step with the plan; fail the plan so its requests end, then say so.
      const error = new RangeError(
        `Scheduler.postprocess: sampledIds has ${sampledIds.length} entries but the plan has ` +
          `${plan.count}; pass one id per entry (entries that do not sample are ignored)`,
      );
      this.failStep(plan, error);
      throw error;
    }
    this.#land(plan, "postprocess");
    let anyFinished = false;
    for (let i = 0; i < plan.count; i++) {
      const seq = plan.seq(i);
      if (seq.isFinished) continue;
      const n = plan.numTokens[i];
      if (i >= plan.numDecodes) this.#prefillTokens += n;
      seq.numComputedTokens += n;
      this.blocks.commit(seq);
      if (plan.samples[i] === 0) continue;
      seq.appendToken(sampledIds[i]);
      this.#generatedTokens++;
      const reason = this.#stopReason(seq, sampledIds[i]);
      if (reason !== null) {
        this.blocks.free(seq);
        this.#finish(seq, reason);
        anyFinished = true;
      }
    }
    if (anyFinished) this.#dropFinished();
  }

  /**
   * Fails every unfinished sequence of `plan` with `error` (the step that ran them failed) and
   * frees their blocks; sequences outside the plan carry on. Nothing it ran is committed.
   */
  failStep(plan: BatchPlan, error: Error): void {
    this.#land(plan, "failStep");
    for (let i = 0; i < plan.count; i++) {
      const seq = plan.seq(i);
      if (seq.isFinished) continue;
      this.blocks.free(seq);
      this.#finish(seq, "error", error);
    }
    this.#dropFinished();
  }

  /**
   * Cancels a request wherever it is (waiting, prefilling, decoding, or in the step now running):
   * its blocks are freed at once and it finishes with "abort". Returns false for an unknown or
   * finished id. Safe mid-step because steps run one at a time: the in-flight step's writes to
   * the freed blocks land before the next step hands them out.
   */
  cancel(id: number): boolean {
    const seq = this.#live.get(id);
    if (seq === undefined) return false;
    seq.cancelled = true;
    return this.finish(id, "abort");
  }

  /**
   * Ends a live sequence with `reason` wherever it is, freeing its blocks at once, as
   * {@link cancel} does; the engine uses it when the text matched a stop string. Returns false
   * for an unknown or finished id.
   */
  finish(id: number, reason: FinishReason): boolean {
    const seq = this.#live.get(id);
    if (seq === undefined) return false;
    const w = this.#waiting.indexOf(seq);
    if (w >= 0) removeAt(this.#waiting, w);
    const r = this.#running.indexOf(seq);
    if (r >= 0) removeAt(this.#running, r);
    this.blocks.free(seq);
    this.#finish(seq, reason);
    return true;
  }

  /** Fails every live sequence with `error`, e.g. when the engine shuts down or dies. */
  failAll(error: Error): void {
    for (const seq of this.#live.values()) {
      this.blocks.free(seq);
      this.#finish(seq, "error", error);
    }
    this.#waiting.length = 0;
    this.#running.length = 0;
    this.#inFlight = false;
  }

  /** Sequences running now. */
  get numRunning(): number {
    return this.#running.length;
  }

  /** Sequences waiting, preempted ones included. */
  get numWaiting(): number {
    return this.#waiting.length;
  }

  /** Whether anything is left to run. */
  get hasWork(): boolean {
    return this.#running.length + this.#waiting.length > 0;
  }

  /** The live sequence with this id, if any. */
  get(id: number): Sequence | undefined {
    return this.#live.get(id);
  }

  /** Counters for /metrics. */
  metrics(): SchedulerMetrics {
    const b = this.blocks;
    return {
      running: this.#running.length,
      waiting: this.#waiting.length,
      kvUsage: b.usage,
      kvBlocksUsed: b.numUsedBlocks,
      kvBlocksTotal: b.numBlocks,
      preemptions: this.#preemptions,
      prefillTokens: this.#prefillTokens,
      generatedTokens: this.#generatedTokens,
      prefixCacheHitRate: b.queriedTokens === 0 ? 0 : b.hitTokens / b.queriedTokens,
      finished: { ...this.#finished },
    };
  }

  #land(plan: BatchPlan, what: string): void {
    if (plan !== this.#plan || !this.#inFlight) {
      throw new Error(
        `Scheduler.${what}: this plan is not the one in flight; call it once per non-empty step()`,
      );
    }
    this.#inFlight = false;
  }

  // Frees the newest running sequence and queues it first, to be recomputed when there is room.
  #preempt(seq: Sequence): void {
    this.#running.pop();
    this.blocks.free(seq);
    seq.status = "preempted";
    seq.numPreemptions++;
    this.#preemptions++;
    this.#waiting.unshift(seq);
  }

  #stopReason(seq: Sequence, id: number): FinishReason | null {
    const p = seq.params;
    if ((!p.ignoreEos && p.eosTokenIds.includes(id)) || p.stopTokenIds.includes(id)) {
      seq.stopReason = id;
      return "stop";
    }
    if (seq.numOutputTokens >= p.maxTokens || seq.numTokens >= this.maxModelLen) return "length";
    return null;
  }

  #finish(seq: Sequence, reason: FinishReason, error: Error | null = null): void {
    this.#live.delete(seq.id);
    this.#finished[reason]++;
    seq.finish(reason, error);
  }

  #dropFinished(): void {
    const running = this.#running;
    let j = 0;
    for (let i = 0; i < running.length; i++) {
      if (!running[i].isFinished) running[j++] = running[i];
    }
    while (running.length > j) running.pop();
  }
}

// Order-preserving removal without splice's result array.
function removeAt<T>(array: T[], index: number): void {
  for (let i = index; i < array.length - 1; i++) array[i] = array[i + 1];
  array.pop();
}
