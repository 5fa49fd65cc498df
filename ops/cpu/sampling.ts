/**
 * The sampling family on the CPU backend (argmax, seeded sampling, log-softmax, penalties and
 * logprobs), the reference the GPU ops (ops/gpu/sampling.ts) are tested against; both take
 * their argument checks from ops/checks/sampling.ts.
 *
 * `sample` follows the exact-arithmetic specification at the top of kernels/src/sampling.cu step
 * by step, so for the same inputs it picks the same token as the GPU:
 * - p_i = exp2Det(f32((l_i − l_max) · log2(e)/T)) in f64 then f32, relative to the top token; a
 *   fixed f32 polynomial rounded after every operation, identical on both backends;
 * - masses are integers q_i = floor(p_i · 2^32), summed exactly;
 * - top-k keeps p ≥ the k-th largest p; top-p then keeps p ≥ t, the largest t whose kept mass
 *   reaches max(1, ceil(topP · Zk)); min-p keeps q ≥ ceil(minP · 2^32) (ties kept throughout);
 *   temperature, top-k, top-p, min-p is HF's order;
 * - u24 from Philox4x32-10 (backends/philox.ts), r = floor(u24 · 2^-24 · Zf), and the token is the
 *   first index whose cumulative kept mass exceeds r.
 * The GPU finds the thresholds by radix selection and this code by sorting; both compute the same
 * thresholds (up to tokens of zero mass, which cannot be drawn), so the ids agree exactly.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { fromBf16Bits } from "../../backends/bf16.ts";
import { uniform24 } from "../../backends/philox.ts";
import {
  checkApplyLogitEdits,
  checkApplyPenalties,
  checkApplyTokenBitmask,
  checkArgmax,
  checkLogprobs,
  checkLogSoftmax,
  checkSample,
  checkSampleSizes,
} from "../checks/sampling.ts";
import { bitmaskWords, type SamplingOps } from "../ops.ts";

/** The largest finite f32. */
const FLT_MAX = 3.4028234663852886e38;
/** 2^32, the fixed-point unit of mass: the top token's mass. */
const MASS_ONE = 4294967296;

/** Taylor coefficients (ln 2)^j / j! of 2^f, j = 7 down to 1, as f32 (the kernel's bit patterns). */
const EXP2_COEFFS = new Float32Array(
  new Uint32Array([
    0x377fe5fe,
    0x39218489,
    0x3aaec3ff,
    0x3c1d955b,
    0x3d635847,
    0x3e75fdf0,
    0x3f317218,
  ]).buffer,
);
const [C7, C6, C5, C4, C3, C2, C1] = EXP2_COEFFS;
/** 2^n for n in -32..0, at index n + 32 (exact powers of two). */
const POW2 = Float64Array.from({ length: 33 }, (_, i) => 2 ** (i - 32));

/**
 * 2^y for y in [-32, 0], bit for bit as the kernel's exp2_det: y = n + f with
 * n = floor(f32(y + 0.5)), 2^f by a degree-7 polynomial in f32 (each operation rounded), scaled
 * exactly by 2^n. Within 2 ulps of 2^y.
 */
export function exp2Det(y: number): number {
  const n = Math.floor(Math.fround(y + 0.5));
  const f = Math.fround(y - n);
  const fr = Math.fround;
  let r = C7;
  r = fr(fr(r * f) + C6);
  r = fr(fr(r * f) + C5);
  r = fr(fr(r * f) + C4);
  r = fr(fr(r * f) + C3);
  r = fr(fr(r * f) + C2);
  r = fr(fr(r * f) + C1);
  r = fr(fr(r * f) + 1);
  return fr(r * POW2[n + 32]);
}

/** p of a logit: 2^y relative to the top logit, 0 below 2^-32 (the kernel's prob_of). */
export function probOf(logit: number, lmax: number, scale: number): number {
  const y = Math.fround((logit - lmax) * scale);
  return y >= -32 ? exp2Det(y) : 0;
}

/** The fixed-point mass floor(p · 2^32) of a probability p in [0, 1]. */
export function massOf(p: number): number {
  return Math.floor(p * MASS_ONE);
}

/** What `sampleRow` decided for one row; tests read it to explain a disagreement. */
export interface SampleTrace {
  /** Whether the row was greedy (temperature not > 0, or a non-finite top logit). */
  greedy: boolean;
  /** The top-k threshold on p; 0 when top-k kept every token. */
  kThreshold: number;
  /** The threshold on p after top-p; kThreshold when top-p is off. */
  pThreshold: number;
  /** The min-p threshold on q; 0 when off. */
  minQ: number;
  /** The mass (q units) top-k kept. */
  zk: number;
  /** The top-p target mass; 0 when top-p is off. */
  target: number;
  /** Of what top-k kept, the mass at p ≥ pThreshold and at p > pThreshold. */
  massAtThreshold: number;
  /** See massAtThreshold. */
  massAboveThreshold: number;
  /** The mass finally kept. */
  zf: number;
  /** The drawn offset into the kept mass, in [0, zf). */
  r: number;
  /** The sampled token. */
  id: number;
}

/** A fresh, empty trace to pass to `sampleRow`. */
export function newSampleTrace(): SampleTrace {
  return {
    greedy: false,
    kThreshold: 0,
    pThreshold: 0,
    minQ: 0,
    zk: 0,
    target: 0,
    massAtThreshold: 0,
    massAboveThreshold: 0,
    zf: 0,
    r: 0,
    id: 0,
  };
}

/** The lowest index of the largest value of logits[offset, offset + vocab), relative. */
function rowArgmax(logits: Float32Array, offset: number, vocab: number): number {
  let best = -Infinity, top = 0;
  for (let i = 0; i < vocab; i++) {
    const v = logits[offset + i];
    if (v > best) {
      best = v;
      top = i;
    }
  }
  return top;
}

/**
 * Samples one row: logits[offset, offset + vocab) with its parameters, writing p into
 * p[pOffset, pOffset + vocab) (as the kernel leaves it in its workspace) and sorting in `scratch`
 * (at least vocab floats). Fills `trace` when given. Returns the token index.
 */
export function sampleRow(
  logits: Float32Array,
  offset: number,
  vocab: number,
  temperature: number,
  topK: number,
  topP: number,
  minP: number,
  seedLo: number,
  seedHi: number,
  step: number,
  p: Float32Array,
  pOffset: number,
  scratch: Float32Array,
  trace?: SampleTrace,
): number {
  const top = rowArgmax(logits, offset, vocab);
  const lmax = logits[offset + top];
  if (!(temperature > 0) || !(Math.abs(lmax) <= FLT_MAX)) {
    if (trace) {
      Object.assign(trace, newSampleTrace());
      trace.greedy = true;
      trace.id = top;
    }
    return top;
  }
  const scale = Math.LOG2E / temperature;
  let positive = 0, total = 0;
  for (let i = 0; i < vocab; i++) {
    const pv = probOf(logits[offset + i], lmax, scale);
    p[pOffset + i] = pv;
    if (pv > 0) {
      positive++;
      total += massOf(pv);
    }
  }

  // Sorted p (ascending, in scratch) serves top-k and top-p; only sorted when one is on.
  const useK = topK > 0 && topK < vocab && topK < positive;
  const useP = topP < 1;
  if (useK || useP) {
    for (let i = 0; i < vocab; i++) scratch[i] = p[pOffset + i];
    (scratch.length === vocab ? scratch : scratch.subarray(0, vocab)).sort();
  }
  let kThreshold = 0, zk = total;
  if (useK) {
    kThreshold = scratch[vocab - topK];
    zk = 0;
    for (let i = 0; i < vocab; i++) {
      const pv = p[pOffset + i];
      if (pv >= kThreshold) zk += massOf(pv);
    }
  }
  let threshold = kThreshold, target = 0;
  if (useP) {
    target = Math.max(1, Math.ceil(topP * zk));
    let cumulative = 0;
    for (let j = vocab - 1; j >= 0; j--) {
      const pv = scratch[j];
      if (!(pv > 0) || pv < kThreshold) break;
      cumulative += massOf(pv);
      if (cumulative >= target) {
        threshold = pv;
        break;
      }
    }
  }
  const minQ = minP > 0 ? Math.min(MASS_ONE, Math.ceil(minP * MASS_ONE)) : 0;

  let zf = 0;
  for (let i = 0; i < vocab; i++) {
    const pv = p[pOffset + i];
    const q = massOf(pv);
    if (pv >= threshold && q >= minQ) zf += q;
  }
  const r = Math.floor((uniform24(seedLo, seedHi, step) / 16777216) * zf);
  let id = top, cumulative = 0;
  for (let i = 0; i < vocab; i++) {
    const pv = p[pOffset + i];
    const q = massOf(pv);
    if (pv >= threshold && q >= minQ) {
      cumulative += q;
      if (cumulative > r) {
        id = i;
        break;
      }
    }
  }
  if (trace) {
    let at = 0, above = 0;
    for (let i = 0; i < vocab; i++) {
      const pv = p[pOffset + i];
      if (pv < kThreshold) continue;
      if (pv >= threshold) at += massOf(pv);
      if (pv > threshold) above += massOf(pv);
    }
    Object.assign(trace, {
      greedy: false,
      kThreshold,
      pThreshold: threshold,
      minQ,
      zk,
      target,
      massAtThreshold: at,
      massAboveThreshold: above,
      zf,
      r,
      id,
    });
  }
  return id;
}

/** Bytes of workspace the CPU `sample` needs: p per row, then one row of sort scratch. */
export function cpuSampleWorkspaceBytes(batch: number, vocab: number): number {
  checkSampleSizes(batch, vocab);
  return 4 * (batch + 1) * vocab;
}

function f32(buffer: DeviceBuffer, count: number): Float32Array {
  const host = buffer.host!;
  return new Float32Array(host.buffer, host.byteOffset, count);
}

function i32(buffer: DeviceBuffer, count: number): Int32Array {
  const host = buffer.host!;
  return new Int32Array(host.buffer, host.byteOffset, count);
}

function u16(buffer: DeviceBuffer, count: number): Uint16Array {
  const host = buffer.host!;
  return new Uint16Array(host.buffer, host.byteOffset, count);
}

/**
 * Applies one penalty entry to l, rounding to f32 after every operation as the kernel does (the
 * f64 quotient of two f32 values rounds to the correctly rounded f32 quotient), so both backends
 * agree bit for bit.
 */
function penalised(
  l: number,
  repetition: number,
  presence: number,
  frequency: number,
  seen: number,
): number {
  const f = Math.fround;
  l = l > 0 ? f(l / repetition) : f(l * repetition);
  l = f(l - f(frequency * f(seen)));
  return seen > 0 ? f(l - presence) : l;
}

/**
 * logprobs for one row of bf16 logits x[o, o + vocab): returns chosen and writes the n best
 * (l descending, id ascending) into ids[t, t + n) and values[t, t + n). The log-sum-exp is f64
 * (Math.exp / Math.log over the f32 values), so this is within an f32 rounding of the exact
 * answer; the kernel's f32 sum is what the GPU test's tolerance allows for.
 */
function rowLogprobs(
  x: Uint16Array,
  o: number,
  vocab: number,
  id: number,
  n: number,
  ids: Int32Array,
  values: Float32Array,
  t: number,
): number {
  let m = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const v = fromBf16Bits(x[o + i]);
    if (v > m) m = v;
  }
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(fromBf16Bits(x[o + i]) - m);
  const lse = m + Math.log(sum);
  // Insertion into the n best so far, raw logits in `values` until the end. Indices rise, so an
  // equal value stays behind the ones already kept: ties go to the lower id. NaN never ranks.
  let kept = 0;
  for (let i = 0; n > 0 && i < vocab; i++) {
    const v = fromBf16Bits(x[o + i]);
    if (Number.isNaN(v) || (kept === n && !(v > values[t + n - 1]))) continue;
    let j = kept < n ? kept++ : n - 1;
    while (j > 0 && values[t + j - 1] < v) {
      values[t + j] = values[t + j - 1];
      ids[t + j] = ids[t + j - 1];
      j--;
    }
    values[t + j] = v;
    ids[t + j] = i;
  }
  for (let j = 0; j < n; j++) {
    if (j < kept) values[t + j] = values[t + j] - lse;
    else {
      ids[t + j] = -1; // only reachable with NaN logits, as in the kernel
      values[t + j] = NaN;
    }
  }
  return fromBf16Bits(x[o + id]) - lse;
}

/**
 * Throws unless every (row, token) of i32 [count, 3] entries lies inside batch × vocab; checked
 * before any entry is applied, so a rejected call changes nothing.
 */
function checkEntries(op: string, e: Int32Array, count: number, batch: number, vocab: number) {
  for (let k = 0; k < count; k++) {
    const row = e[3 * k], token = e[3 * k + 1];
    if (row < 0 || row >= batch || token < 0 || token >= vocab) {
      throw new RangeError(
        `${op}: entry ${k} (row ${row}, token ${token}) is outside batch ${batch} × vocab ${vocab}`,
      );
    }
  }
}

/** Throws unless every buffer is CPU memory (DeviceBuffer.host set). */
function checkHost(op: string, buffers: readonly DeviceBuffer[]): void {
  for (const buffer of buffers) {
    if (!buffer.host) throw new TypeError(`${op}: a buffer does not belong to the CPU backend`);
  }
}

/** The sampling ops on the CPU backend. */
export function cpuSamplingOps(): SamplingOps {
  return {
    argmax(ids, logits, batch, vocab) {
      checkArgmax(ids, logits, batch, vocab);
      checkHost("argmax", [ids, logits]);
      const x = f32(logits, batch * vocab);
      const out = i32(ids, batch);
      for (let b = 0; b < batch; b++) out[b] = rowArgmax(x, b * vocab, vocab);
    },

    sample(ids, logits, params, batch, vocab, workspace) {
      checkSample(
        ids,
        logits,
        params,
        batch,
        vocab,
        workspace,
        cpuSampleWorkspaceBytes(batch, vocab),
      );
      const { temperature, topK, topP, minP, seed, step } = params;
      checkHost("sample", [ids, logits, temperature, topK, topP, minP, seed, step, workspace]);
      const x = f32(logits, batch * vocab);
      const out = i32(ids, batch);
      const t = f32(temperature, batch), k = i32(topK, batch);
      const tp = f32(topP, batch), mp = f32(minP, batch);
      const seeds = new Uint32Array(seed.host!.buffer, seed.host!.byteOffset, 2 * batch);
      const steps = i32(step, batch);
      const ws = workspace.host!;
      const p = new Float32Array(ws.buffer, ws.byteOffset, batch * vocab);
      const scratch = new Float32Array(ws.buffer, ws.byteOffset + 4 * batch * vocab, vocab);
      for (let b = 0; b < batch; b++) {
        out[b] = sampleRow(
          x,
          b * vocab,
          vocab,
          t[b],
          k[b],
          tp[b],
          mp[b],
          seeds[2 * b],
          seeds[2 * b + 1],
          steps[b],
          p,
          b * vocab,
          scratch,
        );
      }
    },

    sampleWorkspaceBytes: cpuSampleWorkspaceBytes,

    logSoftmax(out, logits, batch, vocab) {
      checkLogSoftmax(out, logits, batch, vocab);
      checkHost("logSoftmax", [out, logits]);
      const x = f32(logits, batch * vocab);
      const y = f32(out, batch * vocab);
      for (let b = 0; b < batch; b++) {
        const o = b * vocab;
        let m = -Infinity;
        for (let i = 0; i < vocab; i++) if (x[o + i] > m) m = x[o + i];
        let sum = 0;
        for (let i = 0; i < vocab; i++) sum += Math.exp(x[o + i] - m);
        const logSum = Math.log(sum);
        for (let i = 0; i < vocab; i++) y[o + i] = (x[o + i] - m) - logSum;
      }
    },

    applyPenalties(logits, entries, count, penalties, batch, vocab) {
      checkApplyPenalties(logits, entries, count, penalties, batch, vocab);
      if (count === 0) return;
      checkHost("applyPenalties", [logits, entries, penalties]);
      const x = f32(logits, batch * vocab);
      const e = i32(entries, 3 * count);
      const p = f32(penalties, 3 * batch);
      checkEntries("applyPenalties", e, count, batch, vocab);
      for (let k = 0; k < count; k++) {
        const row = e[3 * k], at = row * vocab + e[3 * k + 1];
        x[at] = penalised(x[at], p[3 * row], p[3 * row + 1], p[3 * row + 2], e[3 * k + 2]);
      }
    },

    applyLogitEdits(logits, entries, count, batch, vocab) {
      checkApplyLogitEdits(logits, entries, count, batch, vocab);
      if (count === 0) return;
      checkHost("applyLogitEdits", [logits, entries]);
      const x = f32(logits, batch * vocab);
      const e = i32(entries, 3 * count);
      const addends = f32(entries, 3 * count);
      checkEntries("applyLogitEdits", e, count, batch, vocab);
      for (let k = 0; k < count; k++) {
        const at = e[3 * k] * vocab + e[3 * k + 1];
        x[at] = Math.fround(x[at] + addends[3 * k + 2]);
      }
    },

    applyTokenBitmask(logits, masks, rows, count, batch, vocab) {
      checkApplyTokenBitmask(logits, masks, rows, count, batch, vocab);
      if (count === 0) return;
      checkHost("applyTokenBitmask", [logits, masks, rows]);
      const words = bitmaskWords(vocab);
      const x = f32(logits, batch * vocab);
      const m = i32(masks, count * words);
      const r = i32(rows, count);
      for (let k = 0; k < count; k++) {
        if (!(r[k] >= 0 && r[k] < batch)) {
          throw new RangeError(`applyTokenBitmask: rows[${k}] is ${r[k]}, outside batch ${batch}`);
        }
      }
      for (let k = 0; k < count; k++) {
        const o = r[k] * vocab, w = k * words;
        for (let t = 0; t < vocab; t++) {
          if (((m[w + (t >> 5)] >>> (t & 31)) & 1) === 0) x[o + t] = -Infinity;
        }
      }
    },

    logprobs(chosen, topIds, topValues, logits, ids, batch, vocab, n) {
      checkLogprobs(chosen, topIds, topValues, logits, ids, batch, vocab, n);
      checkHost(
        "logprobs",
        n > 0 ? [chosen, topIds, topValues, logits, ids] : [chosen, logits, ids],
      );
      const id = i32(ids, batch);
      for (let b = 0; b < batch; b++) {
        if (!(id[b] >= 0 && id[b] < vocab)) {
          throw new RangeError(`logprobs: ids[${b}] is ${id[b]}, outside vocab ${vocab}`);
        }
      }
      const x = u16(logits, batch * vocab);
      const out = f32(chosen, batch);
      const tIds = n > 0 ? i32(topIds, batch * n) : new Int32Array(0);
      const tValues = n > 0 ? f32(topValues, batch * n) : new Float32Array(0);
      for (let b = 0; b < batch; b++) {
        out[b] = rowLogprobs(x, b * vocab, vocab, id[b], n, tIds, tValues, b * n);
      }
    },
  };
}
