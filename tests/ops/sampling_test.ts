/**
 * The CPU sampling ops against tests/fixtures/ops/sampling.json (float64 torch references from
 * tools/fixtures/sampling.py), Philox4x32-10 against Random123's known answers, the
 * deterministic exp2, seeded reproducibility, and the argument checks both backends share.
 *
 * Tolerances. logSoftmax is computed in float64 and stored as f32, so it is within an f32
 * rounding (6e-8 relative) of torch's float64; 1e-6 norm-wise leaves room and still catches any
 * real error. argmax is exact. applyPenalties rounds to f32 after each of its (at most four)
 * operations, each off by at most 2^-24 of its result, and every result is bounded by
 * |l'| + |frequency · outputCount| + |presence| (l' the logit after the repetition penalty), so
 * 2^-22 of that sum bounds the distance to torch's float64; untouched logits are exact. logprobs
 * does its log-sum-exp in float64 and rounds once to f32: within 2^-23 relative of torch (plus
 * 1e-12 for float64's own error), and its top ids are exact, ties included. Sampling is checked as a distribution: 20000 draws per setting
 * (100 seeds × 200 steps) against torch's filtered probabilities with a chi-square test at
 * significance 1e-4 (11 settings: a correct sampler fails one by bad luck with probability
 * ~0.1%); the draws are seeded, so the outcome is the same on every run. The fixture's
 * cases keep every token clear of filter boundaries, so a token torch filters out must never
 * be drawn at all.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuSamplingOps, exp2Det, newSampleTrace, sampleRow } from "../../ops/cpu/sampling.ts";
import type { SamplingBuffers } from "../../ops/ops.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { philox4x32, uniform24 } from "../../backends/philox.ts";
import { assertClose, randomArray } from "../support/numeric.ts";

interface SampleCase {
  name: string;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  logits: number[];
  expected: number[];
}

interface PenaltyCase {
  name: string;
  batch: number;
  vocab: number;
  logits: number[];
  /** (row, token, outputCount) triples, flat. */
  entries: number[];
  /** (repetition, presence, frequency) per row, flat. */
  penalties: number[];
  expected: number[];
}

interface LogprobsCase {
  name: string;
  batch: number;
  vocab: number;
  n: number;
  logitsBf16: number[];
  ids: number[];
  chosen: number[];
  topIds: number[];
  topValues: number[];
  /** Adjacent equal values inside the top n, over all rows. */
  ties: number;
}

interface Fixture {
  logSoftmax: { batch: number; vocab: number; logits: number[]; expected: number[] }[];
  argmax: { batch: number; vocab: number; logits: number[]; expected: number[] };
  sample: { vocab: number; cases: SampleCase[] };
  applyPenalties: PenaltyCase[];
  logprobs: LogprobsCase[];
}

const FIXTURE_URL = new URL("../fixtures/ops/sampling.json", import.meta.url);

function loadFixture(): Fixture {
  let text: string;
  try {
    text = Deno.readTextFileSync(FIXTURE_URL);
  } catch {
    throw new Error(
      `missing ${FIXTURE_URL.pathname}: generate it with \`python3 tools/fixtures/sampling.py\``,
    );
  }
  return JSON.parse(text);
}

const cpu = new CpuBackend();
const ops = cpuSamplingOps();
const stream = cpu.defaultStream;

function upload(data: ArrayBufferView): DeviceBuffer {
  const buffer = cpu.alloc(Math.max(8, data.byteLength));
  cpu.copyToDevice(buffer, data);
  return buffer;
}

/** Per-row sampling parameters as device buffers. */
function params(
  batch: number,
  row: (b: number) => {
    temperature: number;
    topK: number;
    topP: number;
    minP: number;
    seed: bigint;
    step: number;
  },
): SamplingBuffers {
  const t = new Float32Array(batch), k = new Int32Array(batch);
  const tp = new Float32Array(batch), mp = new Float32Array(batch);
  const seed = new BigUint64Array(batch), step = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const r = row(b);
    t[b] = r.temperature;
    k[b] = r.topK;
    tp[b] = r.topP;
    mp[b] = r.minP;
    seed[b] = r.seed;
    step[b] = r.step;
  }
  return {
    temperature: upload(t),
    topK: upload(k),
    topP: upload(tp),
    minP: upload(mp),
    seed: upload(seed),
    step: upload(step),
  };
}

function runSample(logits: Float32Array, p: SamplingBuffers, batch: number, vocab: number) {
  const ids = cpu.alloc(4 * batch);
  const workspace = cpu.alloc(ops.sampleWorkspaceBytes(batch, vocab));
  ops.sample(ids, upload(logits), p, batch, vocab, workspace, stream);
  const out = new Int32Array(batch);
  cpu.copyToHost(out, ids);
  return out;
}

/** The chi-square critical value at significance 1e-4 (Wilson–Hilferty; within 3% for df ≥ 1). */
function chiSquareCritical(df: number): number {
  const z = 3.719016485; // the standard normal's 1 - 1e-4 quantile
  const a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

/** Asserts fn throws a RangeError whose message matches `pattern`. */
function rejects(fn: () => void, pattern: RegExp): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof RangeError, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("philox4x32-10 matches Random123's known-answer vectors", () => {
  // Random123 tests/kat_vectors, philox4x32_10 lines (also in TensorFlow's and others' tests).
  const hex = (a: Uint32Array) => [...a].map((w) => w.toString(16).padStart(8, "0")).join(" ");
  assert.equal(hex(philox4x32(0, 0, 0, 0, 0, 0)), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const ones = 0xffffffff;
  assert.equal(
    hex(philox4x32(ones, ones, ones, ones, ones, ones)),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0)),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
  // The sampler's uniform: counter (step, 0, 0, 0), key (seed lo, seed hi), word 0 >>> 8.
  assert.equal(uniform24(7, 9, 3), philox4x32(3, 0, 0, 0, 7, 9)[0] >>> 8);
  assert.equal(uniform24(0, 0, -1), philox4x32(0xffffffff, 0, 0, 0, 0, 0)[0] >>> 8);
});

Deno.test("exp2Det is within 2 ulps of 2^y on [-32, 0] and exact at 0", () => {
  assert.equal(exp2Det(0), 1);
  let worst = 0;
  for (let i = 0; i <= 200_000; i++) {
    const y = Math.fround(-32 * (i / 200_000));
    const want = 2 ** y;
    const ulp = Math.fround(want) * 2 ** -23;
    worst = Math.max(worst, Math.abs(exp2Det(y) - want) / ulp);
  }
  assert.ok(worst <= 2, `exp2Det is off by ${worst.toFixed(2)} ulps`);
});

Deno.test("logSoftmax matches torch (float64)", () => {
  for (const c of loadFixture().logSoftmax) {
    const out = cpu.alloc(4 * c.batch * c.vocab);
    ops.logSoftmax(out, upload(Float32Array.from(c.logits)), c.batch, c.vocab, stream);
    const got = new Float32Array(c.batch * c.vocab);
    cpu.copyToHost(got, out);
    assertClose(got, c.expected, 1e-6, `logSoftmax ${c.batch}x${c.vocab}`);
  }
});

Deno.test("argmax matches torch, the first index on ties", () => {
  const c = loadFixture().argmax;
  const ids = cpu.alloc(4 * c.batch);
  ops.argmax(ids, upload(Float32Array.from(c.logits)), c.batch, c.vocab, stream);
  const got = new Int32Array(c.batch);
  cpu.copyToHost(got, ids);
  assert.deepEqual([...got], c.expected);
});

Deno.test("sample follows torch's filtered distributions (chi-square, 20000 seeded draws)", () => {
  const { vocab, cases } = loadFixture().sample;
  const draws = 20000;
  for (const [index, c] of cases.entries()) {
    const logits = new Float32Array(draws * vocab);
    for (let b = 0; b < draws; b++) logits.set(c.logits, b * vocab);
    const p = params(draws, (b) => ({
      temperature: c.temperature,
      topK: c.topK,
      topP: c.topP,
      minP: c.minP,
      seed: BigInt(1000 * index + (b % 100)) * 0x100000001n,
      step: Math.floor(b / 100),
    }));
    const ids = runSample(logits, p, draws, vocab);
    const counts = new Float64Array(vocab);
    for (const id of ids) counts[id]++;
    for (let i = 0; i < vocab; i++) {
      if (c.expected[i] === 0) {
        assert.equal(counts[i], 0, `${c.name}: token ${i} is filtered out but drawn`);
      }
    }
    const live = c.expected.flatMap((e, i) => e > 0 ? [i] : []);
    if (live.length === 1) {
      assert.equal(counts[live[0]], draws, `${c.name}: every draw is token ${live[0]}`);
      continue;
    }
    // Tokens expected fewer than 5 times are pooled, as the chi-square approximation needs.
    const bins: { observed: number; expected: number }[] = [];
    const pool = { observed: 0, expected: 0 };
    for (const i of live) {
      const e = draws * c.expected[i];
      if (e >= 5) bins.push({ observed: counts[i], expected: e });
      else {
        pool.observed += counts[i];
        pool.expected += e;
      }
    }
    if (pool.expected >= 5 || bins.length === 0) bins.push(pool);
    else if (pool.expected > 0) {
      const smallest = bins.reduce((a, b) => (a.expected < b.expected ? a : b));
      smallest.observed += pool.observed;
      smallest.expected += pool.expected;
    }
    const statistic = bins.reduce((s, b) => s + (b.observed - b.expected) ** 2 / b.expected, 0);
    const df = bins.length - 1;
    if (df === 0) continue;
    const critical = chiSquareCritical(df);
    assert.ok(
      statistic <= critical,
      `${c.name}: chi-square ${statistic.toFixed(1)} > ${critical.toFixed(1)} (df ${df})`,
    );
  }
});

Deno.test("sample is reproducible per (seed, step), wherever the row sits in the batch", () => {
  const vocab = 1000, batch = 64;
  const logits = randomArray(batch * vocab, 11, -5, 5);
  const row = (b: number) => ({
    temperature: 1,
    topK: 0,
    topP: 1,
    minP: 0,
    seed: BigInt(b % 8),
    step: 5,
  });
  const first = runSample(logits, params(batch, row), batch, vocab);
  const again = runSample(logits, params(batch, row), batch, vocab);
  assert.deepEqual(first, again);
  // Row 3 moved to row 0 with its seed and step draws the same token.
  const moved = logits.slice(3 * vocab, 4 * vocab);
  const alone = runSample(moved, params(1, () => row(3)), 1, vocab);
  assert.equal(alone[0], first[3]);
});

Deno.test("sample draws differ from step to step", () => {
  const words = new Set<number>();
  const uniforms = new Set<number>();
  for (let step = 0; step < 1000; step++) {
    words.add(philox4x32(step, 0, 0, 0, 1234, 0)[0]);
    uniforms.add(uniform24(1234, 0, step));
  }
  assert.equal(words.size, 1000);
  assert.ok(uniforms.size >= 990, `${uniforms.size} distinct 24-bit uniforms in 1000 steps`);
  // A flat distribution over 1000 tokens: 200 steps of one seed give many different tokens.
  const vocab = 1000, batch = 200;
  const logits = new Float32Array(batch * vocab);
  const ids = runSample(
    logits,
    params(batch, (b) => ({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 42n, step: b })),
    batch,
    vocab,
  );
  assert.ok(new Set(ids).size > 150, `only ${new Set(ids).size} distinct tokens in 200 steps`);
});

Deno.test("sample with temperature 0 (or below) is argmax", () => {
  const vocab = 777, batch = 16;
  const logits = randomArray(batch * vocab, 5, -5, 5);
  logits[3 * vocab + 100] = logits[3 * vocab + 700] = 9; // a tie: the first index wins
  const ids = runSample(
    logits,
    params(batch, (b) => ({
      temperature: b % 2 ? 0 : -1,
      topK: 5,
      topP: 0.5,
      minP: 0.1,
      seed: BigInt(b),
      step: b,
    })),
    batch,
    vocab,
  );
  const argmax = cpu.alloc(4 * batch);
  ops.argmax(argmax, upload(logits), batch, vocab, stream);
  const want = new Int32Array(batch);
  cpu.copyToHost(want, argmax);
  assert.deepEqual(ids, want);
  assert.equal(ids[3], 100);
});

Deno.test("sample keeps every tie at the top-k threshold, and vocab 1 always gives 0", () => {
  // p = 1, e^-1 three times, e^-2: top-k 2 keeps the four tokens at or above the 2nd largest.
  const logits = Float32Array.of(3, 2, 2, 2, 1);
  const batch = 2000;
  const all = new Float32Array(batch * 5);
  for (let b = 0; b < batch; b++) all.set(logits, 5 * b);
  const ids = runSample(
    all,
    params(batch, (b) => ({ temperature: 1, topK: 2, topP: 1, minP: 0, seed: 9n, step: b })),
    batch,
    5,
  );
  const counts = [0, 0, 0, 0, 0];
  for (const id of ids) counts[id]++;
  assert.equal(counts[4], 0);
  for (let i = 0; i < 4; i++) assert.ok(counts[i] > 100, `token ${i} drawn ${counts[i]} times`);

  const one = runSample(
    Float32Array.of(-3),
    params(1, () => ({ temperature: 0.7, topK: 1, topP: 0.1, minP: 0.5, seed: 1n, step: 1 })),
    1,
    1,
  );
  assert.equal(one[0], 0);
});

Deno.test("sampleRow's trace describes its decision", () => {
  const vocab = 300;
  const logits = randomArray(vocab, 21, -4, 4);
  const p = new Float32Array(vocab), scratch = new Float32Array(vocab);
  const trace = newSampleTrace();
  const id = sampleRow(logits, 0, vocab, 0.8, 40, 0.9, 0.01, 5, 6, 7, p, 0, scratch, trace);
  assert.equal(trace.id, id);
  assert.ok(!trace.greedy);
  assert.ok(trace.kThreshold > 0 && trace.pThreshold >= trace.kThreshold);
  assert.ok(trace.massAtThreshold >= trace.target && trace.massAboveThreshold < trace.target);
  assert.ok(trace.r < trace.zf && trace.zf <= trace.massAtThreshold);
  assert.ok(p[id] >= trace.pThreshold);
});

Deno.test("sampling ops reject bad sizes and buffers, naming the op", () => {
  const small = cpu.alloc(16);
  const big = cpu.alloc(1 << 16);
  const p = params(2, () => ({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0n, step: 0 }));
  const ws = cpu.alloc(ops.sampleWorkspaceBytes(2, 100));
  rejects(() => ops.argmax(big, big, 0, 10, stream), /^argmax: batch must be an integer/);
  rejects(() => ops.argmax(big, big, 2, 1.5, stream), /^argmax: vocab must be an integer/);
  rejects(() => ops.argmax(big, small, 2, 100, stream), /^argmax: logits holds 16 bytes/);
  rejects(() => ops.logSoftmax(small, big, 2, 100, stream), /^logSoftmax: out holds 16 bytes/);
  rejects(() => ops.logSoftmax(big, big, 2, -1, stream), /^logSoftmax: vocab must be/);
  rejects(() => ops.sample(big, big, p, 2, 0, ws, stream), /^sample: vocab must be an integer/);
  rejects(() => ops.sample(big, small, p, 2, 100, ws, stream), /^sample: logits holds/);
  rejects(() => ops.sample(big, big, p, 2, 100, small, stream), /^sample: workspace holds 16/);
  rejects(
    () => ops.sample(big, big, { ...p, seed: big.slice(4, 16) }, 2, 100, ws, stream),
    /^sample: params.seed must be 8-byte aligned/,
  );
  rejects(
    () => ops.sample(big, big, { ...p, topK: small.slice(0, 4) }, 2, 100, ws, stream),
    /^sample: params.topK holds 4 bytes/,
  );
  rejects(() => ops.sampleWorkspaceBytes(0, 100), /^sample: batch must be an integer/);
  assert.equal(ops.sampleWorkspaceBytes(3, 100), 4 * 4 * 100);
});

/** Runs applyPenalties on a fixture case; returns the logits after. */
function runPenalties(c: PenaltyCase, entries = c.entries): Float32Array {
  const logits = upload(Float32Array.from(c.logits));
  const count = entries.length / 3;
  ops.applyPenalties(
    logits,
    upload(Int32Array.from(entries)),
    count,
    upload(Float32Array.from(c.penalties)),
    c.batch,
    c.vocab,
    stream,
  );
  const got = new Float32Array(c.batch * c.vocab);
  cpu.copyToHost(got, logits);
  return got;
}

Deno.test("applyPenalties matches torch (float64); untouched logits stay exact", () => {
  const cases = loadFixture().applyPenalties;
  assert.ok(cases.some((c) => c.entries.length === 0), "the fixture has a count-0 case");
  for (const c of cases) {
    const got = runPenalties(c);
    const bound = new Float64Array(c.batch * c.vocab); // 0: untouched, compared exactly
    for (let k = 0; k < c.entries.length; k += 3) {
      const [row, token, seen] = c.entries.slice(k, k + 3);
      const [repetition, presence, frequency] = c.penalties.slice(3 * row, 3 * row + 3);
      const l = Math.abs(c.logits[row * c.vocab + token]);
      const afterRepetition = l * Math.max(repetition, 1 / repetition);
      bound[row * c.vocab + token] = 2 ** -22 *
        (afterRepetition + Math.abs(frequency) * seen + Math.abs(presence));
    }
    for (let i = 0; i < got.length; i++) {
      const want = c.expected[i];
      if (bound[i] === 0) {
        assert.equal(got[i], c.logits[i], `${c.name}: untouched logit ${i} changed`);
      } else {
        assert.ok(
          Math.abs(got[i] - want) <= bound[i],
          `${c.name}: logit ${i} is ${got[i]}, torch ${want} (bound ${bound[i]})`,
        );
      }
    }
  }
});

Deno.test("applyPenalties rejects entries outside batch × vocab, changing nothing", () => {
  const c = loadFixture().applyPenalties[0];
  const valid = c.entries.slice(0, 3);
  const bad: [number, number][] = [[c.batch, 0], [-1, 0], [0, c.vocab], [0, -1]];
  for (const [row, token] of bad) {
    const logits = upload(Float32Array.from(c.logits));
    rejects(
      () =>
        ops.applyPenalties(
          logits,
          upload(Int32Array.from([...valid, row, token, 1])),
          2,
          upload(Float32Array.from(c.penalties)),
          c.batch,
          c.vocab,
          stream,
        ),
      new RegExp(
        `^applyPenalties: entry 1 \\(row ${row}, token ${token}\\) is outside batch ${c.batch} × vocab ${c.vocab}$`,
      ),
    );
    const after = new Float32Array(c.batch * c.vocab);
    cpu.copyToHost(after, logits);
    assert.deepEqual(after, Float32Array.from(c.logits), "a rejected call changed the logits");
  }
});

Deno.test("applyPenalties rejects bad sizes and buffers, naming the op", () => {
  const big = cpu.alloc(1 << 12), small = cpu.alloc(16);
  rejects(
    () => ops.applyPenalties(big, big, -1, big, 2, 10, stream),
    /^applyPenalties: count must be an integer in 0\.\.2147483647, got -1$/,
  );
  rejects(
    () => ops.applyPenalties(big, big, 1.5, big, 2, 10, stream),
    /^applyPenalties: count must be an integer/,
  );
  rejects(() => ops.applyPenalties(big, big, 0, big, 0, 10, stream), /^applyPenalties: batch/);
  rejects(() => ops.applyPenalties(big, big, 0, big, 2, 0, stream), /^applyPenalties: vocab/);
  rejects(
    () => ops.applyPenalties(small, big, 1, big, 2, 10, stream),
    /^applyPenalties: logits holds 16 bytes but batch × vocab f32 needs 80$/,
  );
  rejects(
    () => ops.applyPenalties(big, small, 2, big, 2, 10, stream),
    /^applyPenalties: entries holds 16 bytes but count × 3 i32 needs 24$/,
  );
  rejects(
    () => ops.applyPenalties(big, big, 1, small, 2, 10, stream),
    /^applyPenalties: penalties holds 16 bytes but batch × 3 f32 needs 24$/,
  );
  rejects(
    () => ops.applyPenalties(big.slice(2, 80), big, 1, big, 2, 10, stream),
    /^applyPenalties: logits must be 4-byte aligned/,
  );
  // count 0 is a no-op, even with an entries buffer of no size.
  const logits = upload(Float32Array.of(1, -2, 3));
  ops.applyPenalties(logits, small.slice(0, 0), 0, upload(Float32Array.of(2, 1, 1)), 1, 3, stream);
  const after = new Float32Array(3);
  cpu.copyToHost(after, logits);
  assert.deepEqual(after, Float32Array.of(1, -2, 3));
});

/** logprobs on the CPU into outputs poisoned with 0xff (NaN, id -1), 4 bytes beyond the end. */
function runLogprobs(
  bits: Uint16Array,
  ids: Int32Array,
  batch: number,
  vocab: number,
  n: number,
): { chosen: Float32Array; topIds: Int32Array; topValues: Float32Array } {
  const poisoned = (bytes: number) => {
    const b = cpu.alloc(bytes + 4);
    b.host!.fill(0xff);
    return b;
  };
  const chosen = poisoned(4 * batch), topIds = poisoned(4 * batch * n);
  const topValues = poisoned(4 * batch * n);
  ops.logprobs(chosen, topIds, topValues, upload(bits), upload(ids), batch, vocab, n, stream);
  // The last 4 bytes must stay poisoned: nothing is written past batch (× n) elements.
  for (const b of [chosen, topIds, topValues]) {
    assert.deepEqual([...b.host!.subarray(b.bytes - 4)], [255, 255, 255, 255], "written past end");
  }
  return {
    chosen: new Float32Array(chosen.host!.buffer, chosen.host!.byteOffset, batch),
    topIds: new Int32Array(topIds.host!.buffer, topIds.host!.byteOffset, batch * n),
    topValues: new Float32Array(topValues.host!.buffer, topValues.host!.byteOffset, batch * n),
  };
}

Deno.test("logprobs matches torch (float64), ties to the lower id", () => {
  const cases = loadFixture().logprobs;
  assert.ok(cases.filter((c) => c.ties > 0).length >= 3, "the fixture holds ties in the top n");
  assert.deepEqual(
    [...new Set(cases.map((c) => c.n))].sort((a, b) => a - b),
    [0, 1, 5, 20],
    "n 0, 1, 5 and 20 are covered",
  );
  const near = (got: number, want: number) =>
    Math.abs(got - want) <= 2 ** -23 * Math.abs(want) + 1e-12;
  for (const c of cases) {
    const { chosen, topIds, topValues } = runLogprobs(
      Uint16Array.from(c.logitsBf16),
      Int32Array.from(c.ids),
      c.batch,
      c.vocab,
      c.n,
    );
    for (let b = 0; b < c.batch; b++) {
      assert.ok(
        near(chosen[b], c.chosen[b]),
        `${c.name}: chosen[${b}] ${chosen[b]} vs ${c.chosen[b]}`,
      );
    }
    assert.deepEqual([...topIds], c.topIds, `${c.name}: top ids`);
    for (let i = 0; i < c.batch * c.n; i++) {
      assert.ok(near(topValues[i], c.topValues[i]), `${c.name}: top value ${i}`);
    }
  }
});

Deno.test("logprobs never ranks NaN; a round with nothing left gives id -1 and NaN", () => {
  const nan = 0x7fc0, one = toBf16Bits(1), two = toBf16Bits(2);
  const { chosen, topIds, topValues } = runLogprobs(
    Uint16Array.of(nan, two, one, nan, two),
    Int32Array.of(1),
    1,
    5,
    5,
  );
  assert.deepEqual([...topIds], [1, 4, 2, -1, -1]);
  assert.ok(Number.isNaN(chosen[0]) && topValues.every(Number.isNaN), "NaN poisons the lse");
});

Deno.test("logprobs rejects ids outside the vocabulary and bad sizes, naming the op", () => {
  const big = cpu.alloc(1 << 12), small = cpu.alloc(16);
  const bits = upload(new Uint16Array(14));
  for (const id of [-1, 7]) {
    rejects(
      () => ops.logprobs(big, big, big, bits, upload(Int32Array.of(0, id)), 2, 7, 1, stream),
      new RegExp(`^logprobs: ids\\[1\\] is ${id}, outside vocab 7$`),
    );
  }
  rejects(
    () => ops.logprobs(big, big, big, big, big, 2, 100, 21, stream),
    /^logprobs: n must be an integer in 0\.\.20, got 21$/,
  );
  rejects(
    () => ops.logprobs(big, big, big, big, big, 2, 5, 6, stream),
    /^logprobs: n must be an integer in 0\.\.5, got 6$/,
  );
  rejects(() => ops.logprobs(big, big, big, big, big, 2, 100, -1, stream), /^logprobs: n must/);
  rejects(() => ops.logprobs(big, big, big, big, big, 2, 100, 0.5, stream), /^logprobs: n must/);
  rejects(() => ops.logprobs(big, big, big, big, big, 0, 100, 1, stream), /^logprobs: batch/);
  rejects(() => ops.logprobs(big, big, big, big, big, 2, 0, 0, stream), /^logprobs: vocab/);
  rejects(
    () => ops.logprobs(small, big, big, big, big, 5, 100, 1, stream),
    /^logprobs: chosen holds 16 bytes but batch f32 needs 20$/,
  );
  rejects(
    () => ops.logprobs(big, small, big, big, big, 2, 100, 3, stream),
    /^logprobs: topIds holds 16 bytes but batch × n i32 needs 24$/,
  );
  rejects(
    () => ops.logprobs(big, big, small, big, big, 2, 100, 3, stream),
    /^logprobs: topValues holds 16 bytes but batch × n f32 needs 24$/,
  );
  rejects(
    () => ops.logprobs(big, big, big, small, big, 2, 100, 3, stream),
    /^logprobs: logits holds 16 bytes but batch × vocab bf16 needs 400$/,
  );
  rejects(
    () => ops.logprobs(big, big, big, big.slice(1, 400), big, 2, 100, 3, stream),
    /^logprobs: logits must be 2-byte aligned/,
  );
  rejects(
    () => ops.logprobs(big, big, big, big, small, 5, 100, 3, stream),
    /^logprobs: ids holds 16 bytes but batch i32 needs 20$/,
  );
  // n 0 needs no top buffers at all.
  const chosen = cpu.alloc(4);
  ops.logprobs(
    chosen,
    small.slice(0, 0),
    small.slice(0, 0),
    bits,
    upload(Int32Array.of(3)),
    1,
    7,
    0,
    stream,
  );
  const got = new Float32Array(1);
  cpu.copyToHost(got, chosen);
  assert.equal(got[0], Math.fround(-Math.log(7))); // seven equal logits
});

Deno.test("applyLogitEdits adds each f32 addend once, -inf bans, and rejects bad entries", () => {
  const batch = 3, vocab = 50;
  const raw = randomArray(batch * vocab, 77, -10, 10);
  const entries = new Int32Array([0, 0, 0, 1, 49, 0, 2, 7, 0, 0, 12, 0]);
  const addends = new Float32Array(entries.buffer);
  addends[2] = 100;
  addends[5] = -Infinity;
  addends[8] = 0.1;
  addends[11] = -3.75;
  const logits = upload(raw);
  ops.applyLogitEdits(logits, upload(entries), 4, batch, vocab, stream);
  const got = new Float32Array(batch * vocab);
  cpu.copyToHost(got, logits);
  const want = Float32Array.from(raw);
  want[0] = Math.fround(raw[0] + 100);
  want[vocab + 49] = -Infinity;
  want[2 * vocab + 7] = Math.fround(raw[2 * vocab + 7] + Math.fround(0.1));
  want[12] = Math.fround(raw[12] - 3.75);
  assert.deepEqual(got, want);

  for (const [row, token] of [[batch, 0], [-1, 0], [0, vocab], [0, -1]]) {
    const before = upload(raw);
    rejects(
      () =>
        ops.applyLogitEdits(
          before,
          upload(Int32Array.of(0, 1, 0, row, token, 0)),
          2,
          batch,
          vocab,
          stream,
        ),
      new RegExp(`^applyLogitEdits: entry 1 \\(row ${row}, token ${token}\\) is outside`),
    );
    const after = new Float32Array(batch * vocab);
    cpu.copyToHost(after, before);
    assert.deepEqual(after, raw, "a rejected call changed the logits");
  }
  const small = cpu.alloc(16);
  rejects(() => ops.applyLogitEdits(logits, small, 2, batch, vocab, stream), /entries/);
  rejects(() => ops.applyLogitEdits(small, small, 0, batch, vocab, stream), /logits/);
  rejects(() => ops.applyLogitEdits(logits, small, -1, batch, vocab, stream), /count must be/);
});

Deno.test("applyTokenBitmask sets -inf outside each masked row's allowed set, other rows untouched", () => {
  const batch = 4, vocab = 70; // 3 words per mask, the last one partial
  const raw = randomArray(batch * vocab, 78, -10, 10);
  const allowedOf: Record<number, number[]> = { 3: [0, 31, 32, 69], 1: [5] };
  const rows = [3, 1];
  const masks = new Int32Array(2 * 3);
  rows.forEach((row, k) => {
    for (const t of allowedOf[row]) masks[3 * k + (t >> 5)] |= 1 << (t & 31);
  });
  const logits = upload(raw);
  ops.applyTokenBitmask(
    logits,
    upload(masks),
    upload(Int32Array.from(rows)),
    2,
    batch,
    vocab,
    stream,
  );
  const got = new Float32Array(batch * vocab);
  cpu.copyToHost(got, logits);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < vocab; t++) {
      const keep = !(b in allowedOf) || allowedOf[b].includes(t);
      assert.equal(
        got[b * vocab + t],
        keep ? raw[b * vocab + t] : -Infinity,
        `row ${b} token ${t}`,
      );
    }
  }
  const m = upload(masks);
  rejects(
    () =>
      ops.applyTokenBitmask(logits, m, upload(Int32Array.of(0, batch)), 2, batch, vocab, stream),
    /rows\[1\] is 4, outside batch 4/,
  );
  rejects(
    () =>
      ops.applyTokenBitmask(
        logits,
        cpu.alloc(8),
        upload(Int32Array.of(0, 1)),
        2,
        batch,
        vocab,
        stream,
      ),
    /masks/,
  );
  rejects(
    () => ops.applyTokenBitmask(logits, m, m, 5, batch, vocab, stream),
    /count must be an integer in 0..4/,
  );
});
