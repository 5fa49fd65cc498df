/**
 * The continuous-batching scheduler, driven by a fake model that keeps a fake paged KV cache:
 * each step writes, for every token it computes, a value standing for that token's K/V (a hash
 * of the whole prefix up to it) into the slot the block table gives, and every sampling entry
 * then reads its whole context back from the cache and checks each slot. The sampled token is a
 * function of the context, so the expected outputs come from a plain loop with no scheduler at
 * all. A block shared wrongly, freed too early, overwritten by another sequence, or a position
 * skipped or computed twice shows up as a wrong slot or a wrong output.
 *
 * @module
 */

import assert from "node:assert/strict";
import { BlockManager } from "../../engine/block_manager.ts";
import {
  type BatchPlan,
  type DecodeOrder,
  RequestRejectedError,
  Scheduler,
} from "../../engine/scheduler.ts";
import { type SamplingParams, Sequence } from "../../engine/sequence.ts";

const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

/** What the K/V at position p stands for: a hash of tokens[0..p]. */
function prefixHashes(tokens: ArrayLike<number>, n: number): Int32Array {
  const h = new Int32Array(n);
  let x = 17;
  for (let p = 0; p < n; p++) h[p] = x = (Math.imul(x, 31) + tokens[p] + 1) | 0;
  return h;
}

/** The fake model's next token for a context ending in prefix hash h: always in [100, 150). */
const nextToken = (h: number) => 100 + ((h >>> 0) % 50);

/** The outputs the fake model gives for a prompt, computed without any scheduler. */
function reference(prompt: number[], maxTokens: number): number[] {
  const tokens = [...prompt];
  while (tokens.length < prompt.length + maxTokens) {
    tokens.push(nextToken(prefixHashes(tokens, tokens.length)[tokens.length - 1]));
  }
  return tokens.slice(prompt.length);
}

class FakeModel {
  readonly kv: Int32Array;
  steps = 0;
  constructor(readonly bm: BlockManager) {
    this.kv = new Int32Array(bm.numBlocks * bm.blockSize);
  }

  slot(seq: Sequence, p: number): number {
    const bs = this.bm.blockSize;
    return seq.blockTable[Math.floor(p / bs)] * bs + (p % bs);
  }

  run(plan: BatchPlan): Int32Array {
    this.steps++;
    const bs = this.bm.blockSize;
    const ids = new Int32Array(plan.count).fill(-1);
    for (let i = 0; i < plan.count; i++) {
      const seq = plan.seq(i);
      const start = seq.numComputedTokens;
      const n = plan.numTokens[i];
      assert.ok(n >= 1 && start + n <= seq.numTokens, `entry ${i} overruns its tokens`);
      assert.ok(seq.blockTable.length * bs >= start + n, `entry ${i} has no slot for its tokens`);
      assert.equal(plan.samples[i] === 1, start + n === seq.numTokens);
      const h = prefixHashes(seq.tokenBuffer, start + n);
      for (let p = start; p < start + n; p++) {
        const block = seq.blockTable[Math.floor(p / bs)];
        assert.equal(this.bm.refCount(block), 1, "a step must never write into a shared block");
        this.kv[this.slot(seq, p)] = h[p];
      }
    }
    for (let i = 0; i < plan.count; i++) {
      if (plan.samples[i] === 0) continue;
      const seq = plan.seq(i);
      const h = prefixHashes(seq.tokenBuffer, seq.numTokens);
      for (let p = 0; p < seq.numTokens; p++) {
        assert.equal(this.kv[this.slot(seq, p)], h[p], `seq ${seq.id}: stale K/V at position ${p}`);
      }
      ids[i] = nextToken(h[seq.numTokens - 1]);
    }
    return ids;
  }
}

/** Steps until nothing is left, checking the budget every step. */
function drive(
  s: Scheduler,
  model: FakeModel,
  onStep?: (plan: BatchPlan) => void,
  afterStep?: () => void,
): void {
  for (let guard = 0; s.hasWork; guard++) {
    assert.ok(guard < 10_000, "the scheduler is not making progress");
    const plan = s.step();
    assert.ok(plan.totalTokens <= s.maxBatchedTokens);
    assert.ok(plan.count <= s.maxRunning);
    onStep?.(plan);
    if (plan.count > 0) s.postprocess(plan, model.run(plan));
    afterStep?.();
  }
}

function setup(
  numBlocks: number,
  blockSize: number,
  maxRunning: number,
  maxBatchedTokens: number,
  decodeOrder: DecodeOrder = "arrival",
) {
  const bm = new BlockManager(numBlocks, blockSize);
  const s = new Scheduler(bm, { maxRunning, maxBatchedTokens, decodeOrder });
  return { bm, s, model: new FakeModel(bm) };
}

const entries = (plan: BatchPlan) =>
  Array.from({ length: plan.count }, (_, i) => [plan.seq(i).id, plan.numTokens[i]]);

function seq(prompt: number[], params: Partial<SamplingParams>, id: number): Sequence {
  return new Sequence(prompt, params, id);
}

Deno.test("new requests join the batch while others decode", () => {
  const { s, model } = setup(64, 4, 8, 64);
  const a = seq(range(1, 6), { maxTokens: 10 }, 1);
  s.add(a);
  for (let i = 0; i < 3; i++) {
    const plan = s.step();
    s.postprocess(plan, model.run(plan));
  }
  assert.equal(a.numOutputTokens, 3);
  const b = seq(range(50, 9), { maxTokens: 4 }, 2);
  s.add(b);
  const plan = s.step();
  assert.deepEqual(entries(plan), [[1, 1], [2, 9]]);
  assert.equal(plan.numDecodes, 1);
  assert.deepEqual([...plan.samples.subarray(0, 2)], [1, 1]);
  s.postprocess(plan, model.run(plan));
  drive(s, model);
  assert.deepEqual([...a.outputTokenIds()], reference(range(1, 6), 10));
  assert.deepEqual([...b.outputTokenIds()], reference(range(50, 9), 4));
});

Deno.test("chunked prefill fills the token budget exactly", () => {
  const { s, model } = setup(64, 4, 4, 16);
  const a = seq(range(1, 40), { maxTokens: 3 }, 1);
  const b = seq(range(100, 5), { maxTokens: 3 }, 2);
  s.add(a);
  s.add(b);
  const plans: number[][][] = [];
  const sampled: number[][] = [];
  drive(s, model, (plan) => {
    plans.push(entries(plan));
    sampled.push([...plan.samples.subarray(0, plan.count)]);
  });
  assert.deepEqual(plans, [
    [[1, 16]],
    [[1, 16]],
    [[1, 8], [2, 5]], // a's last 8, then b joins with the 8 left over
    [[1, 1], [2, 1]],
    [[1, 1], [2, 1]],
  ]);
  assert.deepEqual(sampled, [[0], [0], [1, 1], [1, 1], [1, 1]]);
  assert.deepEqual([...a.outputTokenIds()], reference(range(1, 40), 3));
  assert.deepEqual([...b.outputTokenIds()], reference(range(100, 5), 3));
  assert.equal(s.metrics().prefillTokens, 45);
  assert.equal(s.metrics().generatedTokens, 6);
});

Deno.test("under KV pressure the newest sequence is preempted, then resumes and finishes", () => {
  // 6 blocks of 4 = 24 slots; each request ends at 8 + 12 = 20 tokens (5 blocks): both can't.
  const { bm, s, model } = setup(6, 4, 4, 32);
  const a = seq(range(1, 8), { maxTokens: 12 }, 1);
  const b = seq(range(60, 8), { maxTokens: 12 }, 2);
  s.add(a);
  s.add(b);
  let sawPreempted = false;
  drive(s, model, () => {
    if (b.status === "preempted") sawPreempted = true;
    assert.notEqual(a.status, "preempted", "the older request is never the victim");
  });
  assert.ok(sawPreempted);
  assert.ok(b.numPreemptions >= 1);
  assert.equal(a.numPreemptions, 0);
  assert.equal(s.metrics().preemptions, b.numPreemptions);
  for (const x of [a, b]) {
    assert.equal(x.finishReason, "length");
    assert.equal(x.numOutputTokens, 12);
  }
  assert.deepEqual([...a.outputTokenIds()], reference(range(1, 8), 12));
  assert.deepEqual([...b.outputTokenIds()], reference(range(60, 8), 12));
  assert.equal(bm.numFreeBlocks, 6);
});

Deno.test("a sequence that alone fills the cache ends with length instead of hanging", () => {
  const { bm, s, model } = setup(2, 4, 2, 8);
  const a = seq(range(1, 5), { maxTokens: 100 }, 1);
  s.add(a);
  drive(s, model);
  // Tokens 1..8 fit in 2 blocks; the 9th would need a third. 5 prompt + 4 generated = 9.
  assert.equal(a.finishReason, "length");
  assert.equal(a.numOutputTokens, 4);
  assert.deepEqual([...a.outputTokenIds()], reference(range(1, 5), 4));
  assert.equal(bm.numFreeBlocks, 2);
});

Deno.test("max_tokens, EOS, stop token ids and finish() end sequences with the right reason", async () => {
  const { s, model } = setup(64, 4, 8, 64);
  const prompt = range(3, 7);
  const ref = reference(prompt, 40);
  const firstAt = (k: number) => ref.indexOf(ref[k]);
  const eos = ref[firstAt(5)];
  const eosAt = firstAt(5);

  const byLength = seq(prompt, { maxTokens: 6 }, 1);
  const byEos = seq(prompt, { maxTokens: 40, eosTokenIds: [eos] }, 2);
  const ignoring = seq(prompt, { maxTokens: 9, eosTokenIds: [eos], ignoreEos: true }, 3);
  const byStopId = seq(prompt, { maxTokens: 40, stopTokenIds: [eos], ignoreEos: true }, 4);
  // Stop strings are text, which the scheduler does not see: the engine ends such a sequence
  // with finish(), here after its 4th token.
  const byString = seq(prompt, { maxTokens: 40, stop: ["x"] }, 5);
  const textless = seq(prompt, { maxTokens: 7, stop: ["x"] }, 6);
  for (const x of [byLength, byEos, ignoring, byStopId, byString, textless]) s.add(x);
  drive(s, model, undefined, () => {
    if (byString.numOutputTokens === 4 && !byString.isFinished) {
      assert.ok(s.finish(byString.id, "stop"));
    }
  });

  assert.equal(byLength.finishReason, "length");
  assert.deepEqual([...byLength.outputTokenIds()], ref.slice(0, 6));
  assert.equal(await byLength.done, "length");

  assert.equal(byEos.finishReason, "stop");
  assert.equal(byEos.stopReason, eos);
  assert.deepEqual([...byEos.outputTokenIds()], ref.slice(0, eosAt + 1), "EOS is the last id");

  assert.equal(ignoring.finishReason, "length");
  assert.equal(ignoring.numOutputTokens, 9);

  assert.equal(byStopId.finishReason, "stop", "stop_token_ids apply even with ignoreEos");
  assert.equal(byStopId.numOutputTokens, eosAt + 1);

  assert.equal(byString.finishReason, "stop");
  assert.equal(byString.numOutputTokens, 4);
  assert.equal(byString.blockTable.length, 0, "finish() frees the blocks");
  assert.ok(!s.finish(byString.id, "stop"), "a finished sequence cannot finish again");
  assert.equal(textless.finishReason, "length");
  assert.equal(textless.numOutputTokens, 7);
});

Deno.test("maxModelLen ends a sequence with length", () => {
  const bm = new BlockManager(64, 4);
  const s = new Scheduler(bm, { maxRunning: 4, maxBatchedTokens: 16, maxModelLen: 12 });
  const a = seq(range(1, 9), { maxTokens: 100 }, 1);
  s.add(a);
  drive(s, new FakeModel(bm));
  assert.equal(a.finishReason, "length");
  assert.equal(a.numTokens, 12);
});

Deno.test("cancel frees every block of a waiting, a prefilling and a decoding sequence", async () => {
  const { bm, s, model } = setup(32, 4, 2, 8);
  const initial = bm.numFreeBlocks;
  const decoding = seq(range(1, 3), { maxTokens: 50 }, 1);
  const prefilling = seq(range(20, 30), { maxTokens: 50 }, 2);
  const waiting = seq(range(60, 5), { maxTokens: 50 }, 3);
  for (const x of [decoding, prefilling, waiting]) s.add(x);
  for (let i = 0; i < 2; i++) {
    const plan = s.step();
    s.postprocess(plan, model.run(plan));
  }
  assert.equal(decoding.numComputedTokens, decoding.numTokens - 1, "decoding");
  assert.ok(prefilling.numComputedTokens > 0 && prefilling.numComputedTokens < 30, "prefilling");
  assert.equal(waiting.status, "waiting", "maxRunning is 2");
  assert.ok(bm.numFreeBlocks < initial);

  assert.equal(s.cancel(waiting.id), true);
  assert.equal(s.cancel(prefilling.id), true);
  assert.equal(s.cancel(decoding.id), true);
  for (const x of [decoding, prefilling, waiting]) {
    assert.equal(x.finishReason, "abort");
    assert.equal(x.cancelled, true);
    assert.deepEqual(x.blockTable, []);
    assert.equal(await x.done, "abort");
  }
  assert.equal(bm.numFreeBlocks, initial);
  assert.equal(bm.numUsedBlocks, 0);
  assert.equal(s.hasWork, false);
  assert.equal(s.cancel(decoding.id), false, "already finished");
  assert.equal(s.cancel(12345), false, "unknown id");
  assert.equal(s.metrics().finished.abort, 3);
});

Deno.test("cancel during a step frees at once and the step's result skips it", () => {
  const { bm, s, model } = setup(32, 4, 4, 16);
  const a = seq(range(1, 6), { maxTokens: 5 }, 1);
  const b = seq(range(40, 6), { maxTokens: 5 }, 2);
  s.add(a);
  s.add(b);
  const plan = s.step();
  const ids = model.run(plan);
  s.cancel(b.id); // arrives while the step is on the device
  assert.deepEqual(b.blockTable, []);
  s.postprocess(plan, ids);
  assert.equal(b.numOutputTokens, 0);
  drive(s, model);
  assert.deepEqual([...a.outputTokenIds()], reference(range(1, 6), 5));
  assert.equal(bm.numFreeBlocks, 32);
});

Deno.test("failStep fails the plan's sequences with the error and leaves the rest running", async () => {
  const { bm, s, model } = setup(32, 4, 2, 8);
  const a = seq(range(1, 3), { maxTokens: 5 }, 1);
  const b = seq(range(20, 12), { maxTokens: 5 }, 2);
  const c = seq(range(40, 4), { maxTokens: 5 }, 3); // waits: maxRunning is 2
  for (const x of [a, b, c]) s.add(x);
  let plan = s.step();
  s.postprocess(plan, model.run(plan));
  plan = s.step();
  assert.deepEqual(entries(plan), [[1, 1], [2, 7]]);
  const d = seq(range(80, 4), { maxTokens: 5 }, 4); // arrives while the step runs
  s.add(d);
  const error = new Error("device fault in step 2");
  s.failStep(plan, error);
  for (const x of [a, b]) {
    assert.equal(x.finishReason, "error");
    assert.equal(x.error, error);
    assert.equal(await x.done, "error");
  }
  drive(s, model);
  for (const [x, prompt] of [[c, range(40, 4)], [d, range(80, 4)]] as const) {
    assert.equal(x.finishReason, "length");
    assert.deepEqual([...x.outputTokenIds()], reference(prompt, 5));
  }
  assert.equal(bm.numFreeBlocks, 32);
  assert.equal(s.metrics().finished.error, 2);
});

Deno.test("a prompt longer than the whole cache is rejected, naming both lengths", () => {
  const { s } = setup(8, 4, 4, 16);
  const big = seq(range(1, 40), {}, 1);
  assert.throws(
    () => s.add(big),
    (e: unknown) =>
      e instanceof RequestRejectedError &&
      /the prompt is 40 tokens but the whole KV cache holds 32 tokens \(8 blocks of 4\); shorten/
        .test(e.message),
  );
  assert.equal(s.hasWork, false);
  s.add(seq(range(1, 32), { maxTokens: 1 }, 2)); // exactly the cache: accepted
  const bm = new BlockManager(64, 4);
  const t = new Scheduler(bm, { maxRunning: 4, maxBatchedTokens: 16, maxModelLen: 10 });
  assert.throws(
    () => t.add(seq(range(1, 10), {}, 3)),
    /the prompt is 10 tokens but the model's context is 10 tokens, leaving no room/,
  );
});

Deno.test("misuse is refused with the remedy", () => {
  const bm = new BlockManager(8, 4);
  assert.throws(
    () => new Scheduler(bm, { maxRunning: 8, maxBatchedTokens: 4 }),
    /maxBatchedTokens \(4\) must be an integer >= maxRunning \(8\)/,
  );
  const s = new Scheduler(bm, { maxRunning: 2, maxBatchedTokens: 8 });
  s.add(seq([1, 2], {}, 2));
  assert.throws(() => s.add(seq([1], {}, 2)), /a sequence with id 2 is already scheduled/);
  const plan = s.step();
  assert.throws(() => s.step(), /previous plan is still in flight; call postprocess/);
  assert.throws(() => s.postprocess(plan, []), /sampledIds has 0 entries but the plan has 1/);
  assert.equal(s.get(2), undefined, "the plan was failed so its request does not hang");
  assert.throws(() => s.postprocess(plan, [1]), /not the one in flight/);
  assert.throws(() => new Sequence([]), /the prompt is empty/);
  assert.throws(
    () => new Sequence([1], { maxTokens: 0 }),
    /maxTokens must be an integer >= 1, got 0/,
  );
  assert.throws(() => new Sequence([1], { topP: 0 }), /topP must be in \(0, 1\], got 0/);
  assert.throws(() => new Sequence([1.5]), /prompt token 0 must be an int32 id >= 0, got 1.5/);
});

Deno.test("a repeated prompt reuses cached blocks and still computes the same output", () => {
  const { bm, s, model } = setup(64, 4, 4, 64);
  const prompt = range(1, 18);
  const a = seq(prompt, { maxTokens: 4 }, 1);
  s.add(a);
  drive(s, model);
  const b = seq(prompt, { maxTokens: 4 }, 2);
  s.add(b);
  const plan = s.step();
  assert.deepEqual(entries(plan), [[2, 2]], "16 of 18 prompt tokens come from the cache");
  s.postprocess(plan, model.run(plan));
  drive(s, model);
  assert.deepEqual([...b.outputTokenIds()], [...a.outputTokenIds()]);
  assert.deepEqual([...a.outputTokenIds()], reference(prompt, 4));
  assert.equal(s.metrics().prefixCacheHitRate, 16 / 36);
  assert.equal(bm.numFreeBlocks, 64);
});

Deno.test("random arrivals, cancellations and a small cache: every request ends correctly", () => {
  let seed = 7;
  const rand = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (const prefixCaching of [true, false]) {
    const bm = new BlockManager(24, 4, { prefixCaching });
    const s = new Scheduler(bm, { maxRunning: 6, maxBatchedTokens: 20 });
    const model = new FakeModel(bm);
    const all: { seq: Sequence; prompt: number[]; maxTokens: number }[] = [];
    const common = range(500, 8); // a shared system prompt, for prefix hits
    for (let step = 0; step < 2000 && (step < 300 || s.hasWork); step++) {
      if (step < 300 && rand(3) === 0) {
        const prompt = [...(rand(2) ? common : []), ...range(rand(1000), 1 + rand(30))];
        const maxTokens = 1 + rand(25);
        const x = new Sequence(prompt, { maxTokens }, all.length);
        s.add(x);
        all.push({ seq: x, prompt, maxTokens });
      }
      if (rand(20) === 0 && all.length > 0) s.cancel(rand(all.length));
      const plan = s.step();
      if (plan.count === 0) continue;
      if (rand(50) === 0) s.failStep(plan, new Error("injected"));
      else s.postprocess(plan, model.run(plan));
      assert.equal(bm.numUsedBlocks <= 24, true);
    }
    assert.equal(s.hasWork, false);
    assert.equal(bm.numFreeBlocks, 24, "every block came back");
    assert.equal(bm.numUsedBlocks, 0);
    const reasons = new Set<string>();
    for (const { seq: x, prompt, maxTokens } of all) {
      assert.ok(x.isFinished, `sequence ${x.id} never finished`);
      reasons.add(x.finishReason!);
      const expected = reference(prompt, maxTokens);
      if (x.finishReason === "length") assert.deepEqual([...x.outputTokenIds()], expected);
      else assert.deepEqual([...x.outputTokenIds()], expected.slice(0, x.numOutputTokens));
    }
    assert.deepEqual([...reasons].sort(), ["abort", "error", "length"]);
    assert.ok(s.metrics().preemptions > 0, "the cache was small enough to preempt");
  }
});

Deno.test("longest-first: decode entries go longest context first, ties oldest first, same tokens", () => {
  const prompts = [5, 31, 12, 31, 2, 19, 8].map((n, i) => range(10 * i + 1, n));
  const plans: Record<DecodeOrder, number[][][]> = { arrival: [], "longest-first": [] };
  for (const order of ["arrival", "longest-first"] as const) {
    // maxBatchedTokens 24 < the prompts' total: decodes share steps with prefill chunks.
    const { s, model } = setup(128, 4, 8, 24, order);
    const seqs = prompts.map((p, i) => seq(p, { maxTokens: 6 + (i % 3) }, i + 1));
    for (const x of seqs) s.add(x);
    drive(s, model, (plan) => {
      const decodes = Array.from({ length: plan.numDecodes }, (_, i) => plan.seq(i));
      plans[order].push(decodes.map((x) => [x.id, x.numTokens]));
      if (order === "arrival") return;
      for (let i = 1; i < decodes.length; i++) {
        const [a, b] = [decodes[i - 1], decodes[i]];
        assert.ok(
          a.numTokens > b.numTokens || (a.numTokens === b.numTokens && a.id < b.id),
          `entry ${i - 1} (seq ${a.id}, ${a.numTokens} tokens) before seq ${b.id} (${b.numTokens})`,
        );
      }
      for (let i = plan.numDecodes; i < plan.count; i++) assert.ok(plan.numTokens[i] >= 1);
    });
    for (const [i, x] of seqs.entries()) {
      assert.deepEqual(
        [...x.outputTokenIds()],
        reference(prompts[i], 6 + (i % 3)),
        `${order} ${i}`,
      );
    }
  }
  // The same decodes each step, only in another order, and the order did change somewhere.
  const sorted = (step: number[][]) => [...step].sort((a, b) => a[0] - b[0]);
  assert.deepEqual(plans["longest-first"].map(sorted), plans.arrival.map(sorted));
  assert.notDeepEqual(plans["longest-first"], plans.arrival);
});

Deno.test("a decode order that does not exist is refused, naming both", () => {
  assert.throws(
    () =>
      new Scheduler(new BlockManager(8, 4), {
        maxRunning: 2,
        maxBatchedTokens: 8,
        decodeOrder: "shortest-first" as never,
      }),
    new RangeError("Scheduler: decodeOrder must be arrival or longest-first, got shortest-first"),
  );
});
