/**
 * The sampling kernels on a real NVIDIA GPU (`deno task test:gpu`) against the CPU reference
 * (ops/cpu/sampling.ts), on the same inputs: vocab 1, 7, 32000 and 128256 at batch 1 and
 * 256, NaN-free random logits scaled ×5 (and ×30, and integer-valued rows full of ties), per-row
 * random temperature / top-k / top-p / min-p / seed / step; 1000 random rows at vocab 32000; the
 * device Philox against backends/philox.ts. applyPenalties and logprobs run at vocab 1000, 32000
 * and 128256, batch 1 and 7: penalties with 1000–8000 distinct entries per row (plus entries off
 * every edge, which the GPU must skip: the logits sit between poisoned guards), logprobs with
 * n 0, 5 and 20 over bf16 logits ×5 or ×30 with forced ties at the 1st, 5th and 20th places.
 * Outputs are poisoned (0xff bytes: NaN as f32, −1 as i32) before each run, so an unwritten
 * element fails; logprobs outputs also get 16 poisoned bytes past their end, which must survive.
 *
 * Tolerances. argmax is exact. logSoftmax is fp32 on both sides (expf and a different summation
 * order on the GPU): 1e-5 norm-wise relative. Sampling is specified in exact arithmetic (see
 * kernels/src/sampling.cu), so the GPU's p (left in its workspace) must equal the CPU's bit for
 * bit and the ids are expected to agree on every row; the test still allows up to 1% of rows to
 * differ, each only where the draw or a filter sits within 1e-5 of the kept mass of a boundary.
 * applyPenalties is one IEEE f32 operation at a time on both sides (correctly rounded division,
 * no FMA), so it must match bit for bit. logprobs picks its top ids from exact bf16 values, so
 * ids match exactly; its values differ by the GPU's f32 log-sum-exp against the CPU's f64 one:
 * the per-thread sums of ≤ 126 terms in [0, 1] and the block tree add ≤ ~1e-6 relative error to
 * the sum in practice (so ≤ ~1e-6 absolute to its log), expf/logf ≤ 2 ulps, and f32 roundings of
 * lse and of l − lse ≤ 2^-24 of their magnitudes; |got − want| ≤ 1e-5 + 2^-22 · |want| covers that
 * with room (a host simulation of the kernel's f32 arithmetic on these inputs, expf perturbed by
 * 2 ulps, reached 0.3 of it) and still catches a wrong max, a dropped term or a wrong element.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import {
  cpuSamplingOps,
  massOf,
  newSampleTrace,
  sampleRow,
  type SampleTrace,
} from "../../ops/cpu/sampling.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { SamplingBuffers, SamplingOps } from "../../ops/ops.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { philox4x32 } from "../../backends/philox.ts";
import { loadKernels } from "../../kernels/modules.ts";
import { loadSamplingOps } from "../../ops/gpu/sampling.ts";
import { assertClose, randomArray, rng } from "../support/numeric.ts";
import {
  BOUNDARY_CASES,
  BOUNDARY_LOGITS,
  BOUNDARY_TEMPERATURE,
  BOUNDARY_VOCAB,
} from "../support/top_p_boundary.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

const VOCABS = [1, 7, 32000, 128256];
const BATCHES = [1, 256];

/** Both devices and both op sets; frees what a case allocated. */
class Rig {
  readonly cpu = new CpuBackend();
  readonly cOps = cpuSamplingOps();
  #allocs: DeviceBuffer[] = [];
  #cpuAllocs: DeviceBuffer[] = [];

  constructor(readonly gpu: Backend, readonly gOps: SamplingOps, readonly stream: Stream) {}

  /** A GPU buffer of `bytes`, `offset` bytes into a fresh allocation, filled with 0xff. */
  gpuBuffer(bytes: number, offset = 0): DeviceBuffer {
    const base = this.gpu.alloc(bytes + offset);
    this.#allocs.push(base);
    const view = base.slice(offset, bytes);
    this.gpu.memset(view, 0xff, this.stream);
    return view;
  }

  /** `data` on the GPU (at `offset` into its allocation) and on the CPU backend. */
  upload(data: ArrayBufferView, offset = 0): { g: DeviceBuffer; c: DeviceBuffer } {
    const g = this.gpuBuffer(data.byteLength, offset);
    this.stream.synchronize();
    this.gpu.copyToDevice(g, data);
    const c = this.cpuBuffer(Math.max(8, data.byteLength));
    this.cpu.copyToDevice(c, data);
    return { g, c };
  }

  /** A CPU-backend buffer of `bytes`, freed with the case. */
  cpuBuffer(bytes: number): DeviceBuffer {
    const c = this.cpu.alloc(bytes);
    this.#cpuAllocs.push(c);
    return c;
  }

  release(): void {
    for (const b of this.#allocs) this.gpu.free(b);
    for (const b of this.#cpuAllocs) this.cpu.free(b);
    this.#allocs = [];
    this.#cpuAllocs = [];
  }
}

function gpuTest(name: string, body: (rig: Rig) => void | Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const rig = new Rig(gpu, await loadSamplingOps(gpu), gpu.createStream());
      await body(rig);
      rig.release();
    } finally {
      gpu.close();
    }
  });
}

/** Random logits ×5 with, in some rows, the maximum repeated at two places (ties). */
function logitsFor(batch: number, vocab: number, seed: number): Float32Array {
  const x = randomArray(batch * vocab, seed, -5, 5);
  const next = rng(seed + 1);
  for (let b = 0; b < batch; b += 3) {
    if (vocab < 2) break;
    const i = Math.floor(next(0, vocab)), j = Math.floor(next(0, vocab));
    x[b * vocab + i] = x[b * vocab + j] = 6;
  }
  return x;
}

interface RowParams {
  temperature: Float32Array;
  topK: Int32Array;
  topP: Float32Array;
  minP: Float32Array;
  seed: BigUint64Array;
  step: Int32Array;
}

/** Seeded random parameters per row, covering greedy rows and every filter combination. */
function randomParams(batch: number, vocab: number, seed: number): RowParams {
  const next = rng(seed);
  const pick = <T>(choices: readonly T[]) => choices[Math.floor(next(0, choices.length))];
  const out: RowParams = {
    temperature: new Float32Array(batch),
    topK: new Int32Array(batch),
    topP: new Float32Array(batch),
    minP: new Float32Array(batch),
    seed: new BigUint64Array(batch),
    step: new Int32Array(batch),
  };
  for (let b = 0; b < batch; b++) {
    out.temperature[b] = pick([0, 0.25, 0.7, 1, 1, 1.5]);
    out.topK[b] = pick([0, 0, 1, 10, 50, 1000, vocab, -1]);
    out.topP[b] = pick([1, 1, 0.95, 0.9, 0.5]);
    out.minP[b] = pick([0, 0, 0.02, 0.1]);
    const hi = BigInt(Math.floor(next(0, 2 ** 32))), lo = BigInt(Math.floor(next(0, 2 ** 32)));
    out.seed[b] = (hi << 32n) | lo;
    out.step[b] = Math.floor(next(-(2 ** 31), 2 ** 31));
  }
  return out;
}

/** Whether a GPU id that differs from the CPU's lies within 1e-5 of the kept mass of a boundary. */
function atBoundary(
  trace: SampleTrace,
  p: Float32Array,
  offset: number,
  vocab: number,
  gpuId: number,
): boolean {
  if (trace.greedy || gpuId < 0 || gpuId >= vocab) return false;
  const tol = 1e-5;
  const kept = (i: number) => {
    const pv = p[offset + i], q = massOf(pv);
    return pv >= trace.pThreshold && q >= trace.minQ ? q : 0;
  };
  // The draw r falls near the edge of the GPU token's interval of cumulative kept mass.
  let before = 0;
  for (let i = 0; i < gpuId; i++) before += kept(i);
  const after = before + kept(gpuId);
  const distance = trace.r < before ? before - trace.r : trace.r >= after ? trace.r - after + 1 : 0;
  if (distance <= tol * trace.zf) return true;
  // The GPU token sits at a filter's threshold.
  const pg = p[offset + gpuId];
  for (const threshold of [trace.kThreshold, trace.pThreshold]) {
    if (threshold > 0 && Math.abs(pg - threshold) <= tol * threshold) return true;
  }
  if (trace.minQ > 0 && Math.abs(massOf(pg) - trace.minQ) <= tol * trace.minQ) return true;
  // The top-p cut itself was within tol of the target mass.
  return trace.target > 0 &&
    (trace.massAtThreshold - trace.target <= tol * trace.zk ||
      trace.target - trace.massAboveThreshold <= tol * trace.zk);
}

/**
 * Samples `logits` with `params` on both backends; asserts the GPU's p equals the CPU's bit for
 * bit and that ids agree on ≥ 99% of rows, every disagreement at a boundary. Returns the GPU ids.
 */
function compareSample(
  rig: Rig,
  logits: Float32Array,
  params: RowParams,
  batch: number,
  vocab: number,
  what: string,
): Int32Array {
  const { gpu, gOps, cOps, stream } = rig;
  const x = rig.upload(logits);
  const up = (a: ArrayBufferView) => rig.upload(a);
  const t = up(params.temperature), k = up(params.topK), tp = up(params.topP);
  const mp = up(params.minP), seed = up(params.seed), step = up(params.step);
  const side = (s: "g" | "c"): SamplingBuffers => ({
    temperature: t[s],
    topK: k[s],
    topP: tp[s],
    minP: mp[s],
    seed: seed[s],
    step: step[s],
  });
  const gIds = rig.gpuBuffer(4 * batch);
  const gWork = rig.gpuBuffer(gOps.sampleWorkspaceBytes(batch, vocab));
  gOps.sample(gIds, x.g, side("g"), batch, vocab, gWork, stream);
  const cIds = rig.cpuBuffer(4 * batch);
  const cWork = rig.cpuBuffer(cOps.sampleWorkspaceBytes(batch, vocab));
  cOps.sample(cIds, x.c, side("c"), batch, vocab, cWork, rig.cpu.defaultStream);
  stream.synchronize();

  const got = new Int32Array(batch), want = new Int32Array(batch);
  gpu.copyToHost(got, gIds);
  rig.cpu.copyToHost(want, cIds);
  const gp = new Float32Array(batch * vocab), cp = new Float32Array(batch * vocab);
  gpu.copyToHost(gp, gWork);
  rig.cpu.copyToHost(cp, cWork);
  const gBits = new Uint32Array(gp.buffer), cBits = new Uint32Array(cp.buffer);

  let pMismatches = 0, firstMismatch = "";
  let disagree = 0, unexplained = "";
  const trace = newSampleTrace();
  const scratch = new Float32Array(vocab), pRow = new Float32Array(vocab);
  for (let b = 0; b < batch; b++) {
    const o = b * vocab;
    const greedy = !(params.temperature[b] > 0);
    for (let i = 0; !greedy && i < vocab; i++) {
      if (gBits[o + i] !== cBits[o + i]) {
        if (pMismatches++ === 0) {
          firstMismatch = `row ${b} token ${i}: gpu ${gp[o + i]} cpu ${cp[o + i]} (logit ${
            logits[o + i]
          }, T ${params.temperature[b]})`;
        }
      }
    }
    if (got[b] === want[b]) continue;
    disagree++;
    sampleRow(
      logits,
      o,
      vocab,
      params.temperature[b],
      params.topK[b],
      params.topP[b],
      params.minP[b],
      Number(params.seed[b] & 0xffffffffn),
      Number(params.seed[b] >> 32n),
      params.step[b],
      pRow,
      0,
      scratch,
      trace,
    );
    if (!atBoundary(trace, pRow, 0, vocab, got[b]) && !unexplained) {
      unexplained = `row ${b}: gpu ${got[b]} cpu ${want[b]} (T ${params.temperature[b]}, k ${
        params.topK[b]
      }, p ${params.topP[b]}, min-p ${params.minP[b]})`;
    }
  }
  if (disagree) console.log(`${what}: ids differ on ${disagree} of ${batch} rows`);
  assert.ok(disagree <= 0.01 * batch, `${what}: ids differ on ${disagree} of ${batch} rows`);
  assert.equal(unexplained, "", `${what}: a disagreement away from any boundary: ${unexplained}`);
  // The design makes p identical on both backends; a difference means the two specs diverged.
  assert.equal(pMismatches, 0, `${what}: ${pMismatches} p values differ; first ${firstMismatch}`);
  return got;
}

gpuTest("gpu: Philox4x32-10 matches backends/philox.ts and Random123's answers", async (rig) => {
  const { gpu, stream } = rig;
  const { launchers } = await loadKernels(gpu, "sampling");
  const n = 4099;
  const next = rng(77);
  const counters = new Uint32Array(4 * n), keys = new Uint32Array(2 * n);
  for (let i = 0; i < 4 * n; i++) counters[i] = Math.floor(next(0, 2 ** 32));
  for (let i = 0; i < 2 * n; i++) keys[i] = Math.floor(next(0, 2 ** 32));
  // Random123's known answers in the first three slots.
  counters.set([0, 0, 0, 0, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], 0);
  counters.set([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], 8);
  keys.set([0, 0, 0xffffffff, 0xffffffff, 0xa4093822, 0x299f31d0], 0);
  const c = rig.upload(counters), k = rig.upload(keys);
  const out = rig.gpuBuffer(16 * n);
  launchers.philox4x32_10_test.launch(
    Math.ceil(n / 256),
    1,
    1,
    256,
    1,
    1,
    0,
    stream,
    out,
    c.g,
    k.g,
    n,
  );
  stream.synchronize();
  const got = new Uint32Array(4 * n);
  gpu.copyToHost(got, out);
  assert.deepEqual([...got.subarray(0, 12)], [
    0x6627e8d5,
    0xe169c58d,
    0xbc57ac4c,
    0x9b00dbd8,
    0x408f276d,
    0x41c83b0e,
    0xa20bc7c6,
    0x6d5451fd,
    0xd16cfe09,
    0x94fdcceb,
    0x5001e420,
    0x24126ea1,
  ]);
  const want = new Uint32Array(4);
  for (let i = 0; i < n; i++) {
    const [c0, c1, c2, c3] = counters.subarray(4 * i, 4 * i + 4);
    philox4x32(c0, c1, c2, c3, keys[2 * i], keys[2 * i + 1], want);
    assert.deepEqual([...got.subarray(4 * i, 4 * i + 4)], [...want], `block ${i}`);
  }
});

gpuTest("gpu: argmax matches the CPU exactly, first index on ties", (rig) => {
  const { gpu, gOps, cOps, stream } = rig;
  for (const vocab of VOCABS) {
    for (const batch of BATCHES) {
      // offset 4 misaligns the rows, so vocab 32000 and 128256 also take the scalar path.
      for (const offset of vocab % 16 === 0 ? [0, 4] : [0]) {
        const logits = logitsFor(batch, vocab, vocab + batch + offset);
        if (batch > 1 && vocab > 1) logits.fill(1, 0, vocab); // an all-equal row: id 0
        const x = rig.upload(logits, offset);
        const ids = rig.gpuBuffer(4 * batch);
        gOps.argmax(ids, x.g, batch, vocab, stream);
        const cIds = rig.cpuBuffer(4 * batch);
        cOps.argmax(cIds, x.c, batch, vocab, rig.cpu.defaultStream);
        stream.synchronize();
        const got = new Int32Array(batch), want = new Int32Array(batch);
        gpu.copyToHost(got, ids);
        rig.cpu.copyToHost(want, cIds);
        assert.deepEqual(got, want, `argmax ${batch}x${vocab} offset ${offset}`);
      }
      rig.release();
    }
  }
});

gpuTest("gpu: logSoftmax matches the CPU (1e-5 relative)", (rig) => {
  const { gpu, gOps, cOps, stream } = rig;
  for (const vocab of VOCABS) {
    for (const batch of BATCHES) {
      for (const offset of vocab % 16 === 0 ? [0, 4] : [0]) {
        for (const scale of [1, 6]) {
          const logits = logitsFor(batch, vocab, 3 * vocab + batch + offset);
          for (let i = 0; i < logits.length; i++) logits[i] *= scale;
          const x = rig.upload(logits, offset);
          const out = rig.gpuBuffer(4 * batch * vocab, offset);
          gOps.logSoftmax(out, x.g, batch, vocab, stream);
          const cOut = rig.cpuBuffer(4 * batch * vocab);
          cOps.logSoftmax(cOut, x.c, batch, vocab, rig.cpu.defaultStream);
          stream.synchronize();
          const got = new Float32Array(batch * vocab), want = new Float32Array(batch * vocab);
          gpu.copyToHost(got, out);
          rig.cpu.copyToHost(want, cOut);
          assertClose(got, want, 1e-5, `logSoftmax ${batch}x${vocab} offset ${offset} ×${scale}`);
        }
      }
      rig.release();
    }
  }
});

gpuTest("gpu: sample agrees with the CPU at every edge shape", (rig) => {
  for (const vocab of VOCABS) {
    for (const batch of BATCHES) {
      const logits = logitsFor(batch, vocab, 7 * vocab + batch);
      const params = randomParams(batch, vocab, vocab + 13 * batch);
      compareSample(rig, logits, params, batch, vocab, `sample ${batch}x${vocab}`);
      rig.release();
    }
  }
});

gpuTest("gpu: sample agrees with the CPU on 1000 random rows", (rig) => {
  const batch = 1000, vocab = 32000;
  const logits = logitsFor(batch, vocab, 1234);
  // Some rows ×30 (peaked), some integer-valued (ties everywhere, also at the thresholds).
  for (let b = 0; b < batch; b++) {
    const row = logits.subarray(b * vocab, (b + 1) * vocab);
    if (b % 5 === 1) { for (let i = 0; i < vocab; i++) row[i] *= 6; }
    if (b % 5 === 2) { for (let i = 0; i < vocab; i++) row[i] = Math.round(row[i]); }
  }
  compareSample(rig, logits, randomParams(batch, vocab, 4321), batch, vocab, "1000 rows");
});

gpuTest(
  "gpu: top-p at, and one f32 step past, each boundary draws the closed-form nucleus",
  (rig) => {
    // Rows of one case each, 512 steps per case: every nucleus token is drawn, none outside it.
    const perCase = 512, vocab = BOUNDARY_VOCAB, batch = perCase * BOUNDARY_CASES.length;
    const logits = new Float32Array(batch * vocab);
    const params = randomParams(batch, vocab, 17);
    for (let b = 0; b < batch; b++) {
      logits.set(BOUNDARY_LOGITS, b * vocab);
      params.temperature[b] = BOUNDARY_TEMPERATURE;
      params.topK[b] = 0;
      params.topP[b] = BOUNDARY_CASES[Math.floor(b / perCase)][0];
      params.minP[b] = 0;
      params.step[b] = b;
    }
    const ids = compareSample(rig, logits, params, batch, vocab, "top-p boundary");
    BOUNDARY_CASES.forEach(([topP, nucleus], c) => {
      const drawn = new Set(ids.subarray(c * perCase, (c + 1) * perCase));
      assert.deepEqual([...drawn].sort(), [...nucleus], `tokens drawn at topP ${topP}`);
    });
  },
);

gpuTest("gpu: sample is reproducible, and the step changes the draw", (rig) => {
  const batch = 256, vocab = 128256;
  const logits = randomArray(batch * vocab, 99, -1, 1); // flat: many tokens are likely
  const params = randomParams(batch, vocab, 5);
  params.temperature.fill(1);
  params.topK.fill(0);
  params.topP.fill(1);
  params.minP.fill(0);
  const first = compareSample(rig, logits, params, batch, vocab, "steps, first");
  rig.release();
  const again = compareSample(rig, logits, params, batch, vocab, "steps, again");
  rig.release();
  assert.deepEqual(first, again);
  for (let b = 0; b < batch; b++) params.step[b] += 1;
  const next = compareSample(rig, logits, params, batch, vocab, "steps, next");
  let changed = 0;
  for (let b = 0; b < batch; b++) if (next[b] !== first[b]) changed++;
  assert.ok(changed > 0.9 * batch, `only ${changed} of ${batch} rows changed with the step`);
});

/** Distinct (row, token) entries, about `perRow` per row, rows interleaved; outputCount 0 often. */
function penaltyEntries(batch: number, vocab: number, perRow: number, seed: number): Int32Array {
  const next = rng(seed);
  const triples: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const tokens = new Set<number>([0, vocab - 1]); // both ends of the row
    while (tokens.size < Math.min(perRow, vocab)) tokens.add(Math.floor(next(0, vocab)));
    for (const t of tokens) {
      const seen = next() < 0 ? 0 : Math.floor(next(1, 50)); // about half prompt-only
      triples.push([b, t, seen]);
    }
  }
  for (let i = triples.length - 1; i > 0; i--) {
    const j = Math.floor(next(0, i + 1));
    [triples[i], triples[j]] = [triples[j], triples[i]];
  }
  return Int32Array.from(triples.flat());
}

gpuTest("gpu: applyPenalties equals the CPU bit for bit and skips out-of-range entries", (rig) => {
  const { gpu, gOps, cOps, stream } = rig;
  const guard = 4096; // bytes of poison on each side of the logits, to catch stray writes
  for (const vocab of [1000, 32000, 128256]) {
    for (const batch of [1, 7]) {
      const perRow = vocab === 128256 && batch === 7 ? 8000 : 3000;
      const logits = randomArray(batch * vocab, vocab + batch, -10, 10);
      for (let i = 0; i < logits.length; i += 97) logits[i] = 0;
      const entries = penaltyEntries(batch, vocab, perRow, 5 * vocab + batch);
      const next = rng(vocab * batch);
      const penalties = new Float32Array(3 * batch);
      for (let b = 0; b < batch; b++) {
        penalties[3 * b] = b === 1 ? 1 : next(0.5, 2);
        penalties[3 * b + 1] = b === 1 ? 0 : next(-2, 2);
        penalties[3 * b + 2] = b === 1 ? 0 : next(-1, 1);
      }
      // The GPU also gets entries off every edge, interleaved with the valid ones; it must skip
      // them. (row batch, token 0) and (row 0, token -1) would land just past and just before
      // the logits, in the guards.
      const bad = [
        batch,
        0,
        1,
        0,
        -1,
        1,
        -1,
        0,
        1,
        0,
        vocab,
        1,
        batch - 1,
        vocab,
        2,
        1 << 30,
        0,
        1,
      ];
      const gEntries = new Int32Array(entries.length + bad.length);
      gEntries.set(entries.subarray(0, 30));
      gEntries.set(bad, 30);
      gEntries.set(entries.subarray(30), 30 + bad.length);
      const count = entries.length / 3, gCount = gEntries.length / 3;

      const bytes = 4 * batch * vocab;
      const whole = rig.gpuBuffer(bytes + 2 * guard);
      const gLogits = whole.slice(guard, bytes);
      stream.synchronize();
      gpu.copyToDevice(gLogits, logits);
      const ge = rig.upload(gEntries), ce = rig.upload(entries), p = rig.upload(penalties);
      gOps.applyPenalties(gLogits, ge.g, gCount, p.g, batch, vocab, stream);
      const cLogits = rig.cpuBuffer(bytes);
      rig.cpu.copyToDevice(cLogits, logits);
      cOps.applyPenalties(cLogits, ce.c, count, p.c, batch, vocab, rig.cpu.defaultStream);
      stream.synchronize();

      const got = new Uint8Array(bytes + 2 * guard);
      gpu.copyToHost(got, whole);
      const what = `applyPenalties ${batch}x${vocab}, ${count} entries`;
      for (let i = 0; i < guard; i++) {
        if (got[i] !== 0xff) assert.fail(`${what}: byte ${guard - i} before the logits written`);
        if (got[guard + bytes + i] !== 0xff) assert.fail(`${what}: byte ${i} past the end written`);
      }
      const g = new Uint32Array(got.buffer, guard, batch * vocab);
      const want = new Float32Array(batch * vocab);
      rig.cpu.copyToHost(want, cLogits);
      const w = new Uint32Array(want.buffer);
      let changed = 0;
      for (let i = 0; i < g.length; i++) {
        if (g[i] !== w[i]) {
          const gv = new Float32Array(Uint32Array.of(g[i]).buffer)[0];
          assert.fail(`${what}: logit ${i} gpu ${gv} cpu ${want[i]} (was ${logits[i]})`);
        }
        if (want[i] !== logits[i]) changed++;
      }
      assert.ok(changed > count / 3, `${what}: only ${changed} logits changed`);

      // count 0 launches nothing: the logits stay as they are, whatever entries holds.
      gOps.applyPenalties(gLogits, rig.gpuBuffer(12), 0, p.g, batch, vocab, stream);
      stream.synchronize();
      const again = new Uint32Array(batch * vocab);
      gpu.copyToHost(again, gLogits);
      assert.deepEqual(again, g.slice(), `${what}: count 0 changed the logits`);
      rig.release();
    }
  }
});

/** Random logits ×scale as bf16 bits, with ties at the top and around the 5th and 20th places. */
function bf16LogitsFor(batch: number, vocab: number, scale: number, seed: number): Uint16Array {
  const x = randomArray(batch * vocab, seed, -scale, scale);
  const next = rng(seed + 1);
  for (let b = 0; b < batch; b++) {
    const row = x.subarray(b * vocab, (b + 1) * vocab);
    const sorted = Float32Array.from(row).sort().reverse();
    // Ties: the maximum at two more places, and the 5th and 20th values (bf16-rounded) copied.
    for (const value of [sorted[0], sorted[4], sorted[19]]) {
      for (let k = 0; k < 2; k++) row[Math.floor(next(0, vocab))] = value;
    }
  }
  return Uint16Array.from(x, toBf16Bits);
}

/**
 * logprobs on both backends into outputs poisoned with `poison` bytes and 16 bytes of room past
 * their end; asserts the room stays poisoned and returns both sides' results.
 */
function compareLogprobs(
  rig: Rig,
  bits: Uint16Array,
  ids: Int32Array,
  batch: number,
  vocab: number,
  n: number,
  poison: number,
  what: string,
  cpuIds = ids,
) {
  const { gpu, gOps, cOps, stream } = rig;
  const x = rig.upload(bits, 2); // rows start 2 bytes off 4-byte alignment: the kernel reads u16
  const gi = rig.upload(ids);
  const outs = [4 * batch, 4 * batch * n, 4 * batch * n].map((bytes) => {
    const b = rig.gpuBuffer(bytes + 16);
    gpu.memset(b, poison, stream);
    return b;
  });
  const [gChosen, gTopIds, gTopValues] = outs;
  gOps.logprobs(gChosen, gTopIds, gTopValues, x.g, gi.g, batch, vocab, n, stream);
  const c = [4 * batch, 4 * batch * n, 4 * batch * n].map((bytes) => rig.cpuBuffer(bytes + 16));
  const ci = rig.upload(cpuIds);
  cOps.logprobs(c[0], c[1], c[2], x.c, ci.c, batch, vocab, n, rig.cpu.defaultStream);
  stream.synchronize();
  const host = outs.map((b) => {
    const h = new Uint8Array(b.bytes);
    gpu.copyToHost(h, b);
    const tail = h.subarray(b.bytes - 16);
    assert.ok(tail.every((v) => v === poison), `${what}: written past the end of an output`);
    return h.buffer;
  });
  return {
    gpu: {
      chosen: new Float32Array(host[0], 0, batch),
      topIds: new Int32Array(host[1], 0, batch * n),
      topValues: new Float32Array(host[2], 0, batch * n),
    },
    cpu: {
      chosen: new Float32Array(c[0].host!.buffer, c[0].host!.byteOffset, batch),
      topIds: new Int32Array(c[1].host!.buffer, c[1].host!.byteOffset, batch * n),
      topValues: new Float32Array(c[2].host!.buffer, c[2].host!.byteOffset, batch * n),
    },
  };
}

/** Asserts |got − want| ≤ 1e-5 + 2^-22 · |want| everywhere (see the header). */
function assertLogprobsClose(got: Float32Array, want: Float32Array, what: string): void {
  for (let i = 0; i < want.length; i++) {
    const tol = 1e-5 + 2 ** -22 * Math.abs(want[i]);
    if (!(Math.abs(got[i] - want[i]) <= tol)) {
      assert.fail(`${what}: element ${i} gpu ${got[i]} cpu ${want[i]} (tolerance ${tol})`);
    }
  }
}

gpuTest("gpu: logprobs matches the CPU: chosen and top values 1e-5, top ids exact", (rig) => {
  for (const vocab of [1000, 32000, 128256]) {
    for (const batch of [1, 7]) {
      for (const n of [0, 5, 20]) {
        const scale = n === 5 ? 30 : 5; // ×30: peaked rows, log-probabilities down to ~-60
        const bits = bf16LogitsFor(batch, vocab, scale, vocab + 10 * batch + n);
        const next = rng(vocab + n);
        const ids = Int32Array.from({ length: batch }, () => Math.floor(next(0, vocab)));
        ids[0] = vocab - 1;
        const what = `logprobs ${batch}x${vocab} n ${n}`;
        const r = compareLogprobs(rig, bits, ids, batch, vocab, n, 0xff, what);
        assertLogprobsClose(r.gpu.chosen, r.cpu.chosen, `${what} chosen`);
        assert.deepEqual(r.gpu.topIds, r.cpu.topIds, `${what}: top ids`);
        assertLogprobsClose(r.gpu.topValues, r.cpu.topValues, `${what} top values`);
        rig.release();
      }
    }
  }
});

gpuTest("gpu: logprobs writes NaN for ids out of range and never ranks NaN logits", (rig) => {
  const vocab = 1000, batch = 3, n = 5;
  const bits = bf16LogitsFor(batch, vocab, 5, 31);
  // 0x7f poison is a finite f32 (3.4e38), so a NaN read back was written by the kernel.
  const what = "logprobs, ids out of range";
  const r = compareLogprobs(
    rig,
    bits,
    Int32Array.of(-1, vocab, 7),
    batch,
    vocab,
    n,
    0x7f,
    what,
    Int32Array.of(0, 0, 7), // the CPU rejects such ids; rows 0 and 1 are compared on top-n
  );
  assert.ok(Number.isNaN(r.gpu.chosen[0]) && Number.isNaN(r.gpu.chosen[1]), `${what}: not NaN`);
  assertLogprobsClose(r.gpu.chosen.subarray(2), r.cpu.chosen.subarray(2), `${what} chosen`);
  assert.deepEqual(r.gpu.topIds, r.cpu.topIds, `${what}: top ids`);
  assertLogprobsClose(r.gpu.topValues, r.cpu.topValues, `${what} top values`);
  rig.release();

  // Three NaN logits of seven, n 5: four ranked ids, then -1 and NaN; NaN lse everywhere.
  const nan = 0x7fc0;
  const row = Uint16Array.of(nan, toBf16Bits(2), toBf16Bits(1), nan, toBf16Bits(2), nan, 0);
  const q = compareLogprobs(rig, row, Int32Array.of(1), 1, 7, 5, 0x7f, "logprobs, NaN logits");
  assert.deepEqual([...q.gpu.topIds], [1, 4, 2, 6, -1]);
  assert.deepEqual(q.gpu.topIds, q.cpu.topIds);
  assert.ok(Number.isNaN(q.gpu.chosen[0]) && q.gpu.topValues.every(Number.isNaN));
});

/** Runs `gpuOp` and `cpuOp` on the same logits (GPU copy between poisoned guards); compares bits. */
function compareInPlace(
  rig: Rig,
  logits: Float32Array,
  what: string,
  gpuOp: (gLogits: DeviceBuffer) => void,
  cpuOp: (cLogits: DeviceBuffer) => void,
): Float32Array {
  const { gpu, stream } = rig;
  const guard = 4096, bytes = logits.byteLength;
  const whole = rig.gpuBuffer(bytes + 2 * guard);
  const gLogits = whole.slice(guard, bytes);
  stream.synchronize();
  gpu.copyToDevice(gLogits, logits);
  gpuOp(gLogits);
  const cLogits = rig.cpuBuffer(bytes);
  rig.cpu.copyToDevice(cLogits, logits);
  cpuOp(cLogits);
  stream.synchronize();
  const got = new Uint8Array(bytes + 2 * guard);
  gpu.copyToHost(got, whole);
  for (let i = 0; i < guard; i++) {
    if (got[i] !== 0xff) assert.fail(`${what}: byte ${guard - i} before the logits written`);
    if (got[guard + bytes + i] !== 0xff) assert.fail(`${what}: byte ${i} past the end written`);
  }
  const g = new Uint32Array(got.buffer, guard, logits.length);
  const want = new Float32Array(logits.length);
  rig.cpu.copyToHost(want, cLogits);
  const w = new Uint32Array(want.buffer);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) {
      const gv = new Float32Array(Uint32Array.of(g[i]).buffer)[0];
      assert.fail(`${what}: logit ${i} gpu ${gv} cpu ${want[i]} (was ${logits[i]})`);
    }
  }
  return want;
}

gpuTest("gpu: applyLogitEdits (logit_bias, bans) equals the CPU bit for bit", (rig) => {
  const { gOps, cOps, stream } = rig;
  for (const vocab of [7, 32000, 128256]) {
    for (const batch of [1, 64]) {
      const logits = randomArray(batch * vocab, vocab + batch, -10, 10);
      const next = rng(vocab * 3 + batch);
      const words: number[] = [];
      for (let b = 0; b < batch; b++) {
        const tokens = new Set<number>([0, vocab - 1]);
        while (tokens.size < Math.min(300, vocab)) tokens.add(Math.floor(next(0, vocab)));
        for (const t of tokens) {
          const bias = next() < -0.6 ? -Infinity : Math.fround(next(-100, 100));
          words.push(b, t, new Int32Array(Float32Array.of(bias).buffer)[0]);
        }
      }
      const entries = Int32Array.from(words), count = entries.length / 3;
      const e = rig.upload(entries);
      const what = `applyLogitEdits ${batch}x${vocab}, ${count} entries`;
      const want = compareInPlace(
        rig,
        logits,
        what,
        (g) => gOps.applyLogitEdits(g, e.g, count, batch, vocab, stream),
        (c) => cOps.applyLogitEdits(c, e.c, count, batch, vocab, rig.cpu.defaultStream),
      );
      // The CPU op against OpenAI's definition: the bias added to the logit.
      const addend = new Float32Array(entries.buffer);
      for (let k = 0; k < count; k++) {
        const at = entries[3 * k] * vocab + entries[3 * k + 1];
        assert.equal(want[at], Math.fround(logits[at] + addend[3 * k + 2]), `${what}: entry ${k}`);
      }
      rig.release();
    }
  }
});

gpuTest(
  "gpu: applyTokenBitmask equals the CPU bit for bit; unmasked rows stay as they are",
  (rig) => {
    const { gOps, cOps, stream } = rig;
    for (const vocab of [7, 32000, 128256]) {
      for (const batch of [1, 64]) {
        const logits = randomArray(batch * vocab, vocab + batch + 1, -10, 10);
        const next = rng(vocab * 5 + batch);
        // Every other row is constrained, in a shuffled order; each mask allows about 1 in 4.
        const rows: number[] = [];
        for (let b = 0; b < batch; b += 2) rows.push(b);
        rows.reverse();
        const words = Math.ceil(vocab / 32);
        const masks = new Int32Array(rows.length * words);
        for (let i = 0; i < masks.length; i++) {
          masks[i] = (next(0, 2 ** 32) >>> 0) & (next(0, 2 ** 32) >>> 0);
        }
        const m = rig.upload(masks), r = rig.upload(Int32Array.from(rows));
        const what = `applyTokenBitmask ${batch}x${vocab}, ${rows.length} rows`;
        const want = compareInPlace(
          rig,
          logits,
          what,
          (g) => gOps.applyTokenBitmask(g, m.g, r.g, rows.length, batch, vocab, stream),
          (c) =>
            cOps.applyTokenBitmask(c, m.c, r.c, rows.length, batch, vocab, rig.cpu.defaultStream),
        );
        for (let b = 0; b < batch; b++) {
          const k = rows.indexOf(b);
          for (let t = 0; t < vocab; t++) {
            const allowed = k < 0 || ((masks[k * words + (t >> 5)] >>> (t & 31)) & 1) === 1;
            const at = b * vocab + t;
            assert.equal(
              want[at],
              allowed ? logits[at] : -Infinity,
              `${what}: row ${b} token ${t}`,
            );
          }
        }
        rig.release();
      }
    }
  },
);
