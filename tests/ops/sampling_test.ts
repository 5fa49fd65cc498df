/**
 * The CPU sampling ops against tests/fixtures/ops/sampling.json (float64 torch references from
 * tools/fixtures/sampling.py), Philox4x32-10 against Random123's known answers, the
 * deterministic exp2, seeded reproducibility, and the argument checks both backends share.
 *
 * Tolerances. logSoftmax is computed in float64 and stored as f32, so it is within an f32
 * rounding (6e-8 relative) of torch's float64; 1e-6 norm-wise leaves room and still catches any
 * real error. argmax is exact. Sampling is checked as a distribution: 20000 draws per setting
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
import { cpuSamplingOps, exp2Det, newSampleTrace, sampleRow } from "../../backends/cpu/sampling.ts";
import type { SamplingBuffers } from "../../backends/ops.ts";
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

interface Fixture {
  logSoftmax: { batch: number; vocab: number; logits: number[]; expected: number[] }[];
  argmax: { batch: number; vocab: number; logits: number[]; expected: number[] };
  sample: { vocab: number; cases: SampleCase[] };
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
  const rejects = (fn: () => void, pattern: RegExp) =>
    assert.throws(fn, (e: Error) => {
      assert.ok(e instanceof RangeError, `${e.name}: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    });
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
