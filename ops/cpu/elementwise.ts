/**
 * The elementwise family on the CPU backend, the reference the GPU ops (ops/gpu/elementwise.ts)
 * are tested against; both take their argument checks from ops/checks/elementwise.ts.
 *
 * The arithmetic is fp32 with bf16 rounding at exactly the places kernels/src/elementwise.cu
 * rounds, which follow HF transformers with bf16 weights:
 * - rmsNorm: inv = 1 / sqrt(sum(h²) / n + eps), each step rounded to f32; out = bf16(w · bf16(h ·
 *   inv)). The fused form first stores residual = bf16(residual + x) and normalises that.
 * - rope: angle = f32(f32(position) · invFreq[i]); cos and sin kept in f32 (HF rounds them to bf16
 *   first); x1' = bf16(x1·c − x2·s), x2' = bf16(x2·c + x1·s).
 * - siluMul: bf16(bf16(silu(g)) · u), the activation rounded before the multiply as HF does.
 * - fillRandom: bf16(f32(scale) · (2u − 1)) from Philox (backends/philox.ts); every step but the
 *   last multiply is exact, so it matches the GPU bit for bit.
 * Apart from fillRandom, the only differences left against the GPU are fp32 summation order, fused multiply-adds and
 * the last ulp of expf/sincosf, each of which moves a bf16 result by at most one ulp, rarely.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { fromBf16Bits, roundBf16, toBf16Bits } from "../../backends/bf16.ts";
import { philox4x32 } from "../../backends/philox.ts";
import {
  checkCast,
  checkEmbedding,
  checkFillRandom,
  checkQkNorm,
  checkQkvBias,
  checkQkvRope,
  checkQkvRopeCache,
  checkRmsNorm,
  checkRope,
  checkSiluMul,
} from "../checks/elementwise.ts";
import type { AttentionOps, ElementwiseOps } from "../ops.ts";

const TWO_POW_32 = 2 ** 32;
const TWO_POW_MINUS_24 = 2 ** -24;
const philoxOut = new Uint32Array(4);

/**
 * Element `index` of `fillRandom(out, count, seed, scale)` as a bf16 bit pattern, for any index
 * below 2^53 (the op's element i is this with index i); `scaleF32` is the scale already
 * rounded to f32 (Math.fround), as the kernel receives it. The steps are the kernel's: u = (word0 >> 8) · 2^-24 and 2u − 1 are exact, and
 * f32(scale) · (2u − 1) is exact in a double (24 × 24 bits), so Math.fround rounds it once as
 * the GPU's f32 multiply does, and the bf16 rounding follows.
 */
export function fillRandomAt(seed: number, scaleF32: number, index: number): number {
  const w0 = philox4x32(
    index >>> 0,
    Math.floor(index / TWO_POW_32) >>> 0,
    0,
    0,
    seed >>> 0,
    Math.floor(seed / TWO_POW_32) >>> 0,
    philoxOut,
  )[0];
  const u = (w0 >>> 8) * TWO_POW_MINUS_24;
  return toBf16Bits(Math.fround(scaleF32 * (2 * u - 1)));
}

function hostOf(op: string, name: string, buffer: DeviceBuffer): Uint8Array {
  if (!buffer.host) throw new TypeError(`${op}: ${name} does not belong to the CPU backend`);
  return buffer.host;
}

function u16(op: string, name: string, buffer: DeviceBuffer, count: number): Uint16Array {
  const host = hostOf(op, name, buffer);
  return new Uint16Array(host.buffer, host.byteOffset, count);
}

function u32(op: string, name: string, buffer: DeviceBuffer, count: number): Uint32Array {
  const host = hostOf(op, name, buffer);
  return new Uint32Array(host.buffer, host.byteOffset, count);
}

function i32(op: string, name: string, buffer: DeviceBuffer, count: number): Int32Array {
  const host = hostOf(op, name, buffer);
  return new Int32Array(host.buffer, host.byteOffset, count);
}

function f32(op: string, name: string, buffer: DeviceBuffer, count: number): Float32Array {
  const host = hostOf(op, name, buffer);
  return new Float32Array(host.buffer, host.byteOffset, count);
}

/**
 * RMSNorm of the row of `hidden` at `at` of `src` into `o` (which may be `src`): the sum of
 * squares in f64 here and in fp32 (another order) on the GPU, either far more precise than the
 * bf16 outputs it feeds; then inv and the outputs rounded where HF rounds.
 */
function normRow(
  o: Uint16Array,
  src: Uint16Array,
  at: number,
  w: Uint16Array,
  hidden: number,
  epsF: number,
): void {
  let ss = 0;
  for (let i = at; i < at + hidden; i++) {
    const v = fromBf16Bits(src[i]);
    ss += v * v;
  }
  const mean = Math.fround(Math.fround(ss) / hidden);
  const inv = Math.fround(1 / Math.fround(Math.sqrt(Math.fround(mean + epsF))));
  for (let i = 0; i < hidden; i++) {
    const h = roundBf16(fromBf16Bits(src[at + i]) * inv);
    o[at + i] = toBf16Bits(fromBf16Bits(w[i]) * h);
  }
}

/**
 * The elementwise ops on the CPU backend (buffers from CpuBackend). `kvWrite` (the attention
 * family's) lets qkvRope write a cache (QkvRopeArgs.cache); without it such a call is refused.
 */
export function cpuElementwiseOps(kvWrite?: AttentionOps["kvWrite"]): ElementwiseOps {
  // Per-token cos/sin, grown on demand and reused across calls.
  let trig = new Float32Array(0);

  const ops: ElementwiseOps = {
    embedding(out, table, ids, tokens, hidden) {
      const vocab = checkEmbedding(out, table, ids, tokens, hidden);
      const o = u16("embedding", "out", out, tokens * hidden);
      const t = u16("embedding", "table", table, vocab * hidden);
      const id = i32("embedding", "ids", ids, tokens);
      for (let row = 0; row < tokens; row++) {
        const at = row * hidden;
        const v = id[row];
        // An id outside the table gives a zero row, as on the GPU (which cannot throw).
        if (v >= 0 && v < vocab) o.set(t.subarray(v * hidden, v * hidden + hidden), at);
        else o.fill(0, at, at + hidden);
      }
    },

    rmsNorm(out, x, weight, residual, tokens, hidden, eps) {
      checkRmsNorm(out, x, weight, residual, tokens, hidden, eps);
      const n = tokens * hidden;
      const o = u16("rmsNorm", "out", out, n);
      const xs = u16("rmsNorm", "x", x, n);
      const w = u16("rmsNorm", "weight", weight, hidden);
      const r = residual ? u16("rmsNorm", "residual", residual, n) : null;
      const epsF = Math.fround(eps);
      for (let row = 0; row < tokens; row++) {
        const at = row * hidden;
        if (r) {
          for (let i = at; i < at + hidden; i++) {
            r[i] = toBf16Bits(fromBf16Bits(xs[i]) + fromBf16Bits(r[i]));
          }
        }
        normRow(o, r ?? xs, at, w, hidden, epsF);
      }
    },

    qkNorm(q, k, qWeight, kWeight, tokens, numHeads, numKvHeads, headDim, eps) {
      checkQkNorm(q, k, qWeight, kWeight, tokens, numHeads, numKvHeads, headDim, eps);
      const qs = u16("qkNorm", "q", q, tokens * numHeads * headDim);
      const ks = u16("qkNorm", "k", k, tokens * numKvHeads * headDim);
      const qw = u16("qkNorm", "qWeight", qWeight, headDim);
      const kw = u16("qkNorm", "kWeight", kWeight, headDim);
      const epsF = Math.fround(eps);
      for (let row = 0; row < tokens * numHeads; row++) {
        normRow(qs, qs, row * headDim, qw, headDim, epsF);
      }
      for (let row = 0; row < tokens * numKvHeads; row++) {
        normRow(ks, ks, row * headDim, kw, headDim, epsF);
      }
    },

    qkvBias(q, k, v, bias, tokens, qWidth, kvWidth) {
      checkQkvBias(q, k, v, bias, tokens, qWidth, kvWidth);
      const b = u16("qkvBias", "bias", bias, qWidth + 2 * kvWidth);
      const parts = [
        [u16("qkvBias", "q", q, tokens * qWidth), qWidth, 0],
        [u16("qkvBias", "k", k, tokens * kvWidth), kvWidth, qWidth],
        [u16("qkvBias", "v", v, tokens * kvWidth), kvWidth, qWidth + kvWidth],
      ] as const;
      for (const [x, width, from] of parts) {
        for (let t = 0; t < tokens; t++) {
          for (let i = 0; i < width; i++) {
            const at = t * width + i;
            x[at] = toBf16Bits(fromBf16Bits(x[at]) + fromBf16Bits(b[from + i]));
          }
        }
      }
    },

    rope(q, k, positions, table, tokens, numHeads, numKvHeads) {
      checkRope(q, k, positions, table, tokens, numHeads, numKvHeads);
      const headDim = table.headDim;
      const half = headDim / 2;
      const qs = u16("rope", "q", q, tokens * numHeads * headDim);
      const ks = u16("rope", "k", k, tokens * numKvHeads * headDim);
      const pos = i32("rope", "positions", positions, tokens);
      const inv = f32("rope", "table.invFreq", table.invFreq, half);
      if (trig.length < headDim) trig = new Float32Array(headDim);
      for (let t = 0; t < tokens; t++) {
        const p = Math.fround(pos[t]);
        for (let i = 0; i < half; i++) {
          const angle = Math.fround(p * inv[i]);
          trig[i] = Math.cos(angle);
          trig[half + i] = Math.sin(angle);
        }
        rotateHeads(qs, t * numHeads * headDim, numHeads, headDim, trig);
        rotateHeads(ks, t * numKvHeads * headDim, numKvHeads, headDim, trig);
      }
    },

    qkvRope(a, stream) {
      // The unfused steps themselves, so this reference is the definition of the fused op.
      const d = checkQkvRope(a);
      const cache = a.cache ?? null;
      if (cache !== null) {
        if (kvWrite === undefined) {
          throw new Error(
            "qkvRope: the CPU elementwise family alone cannot write the KV cache (a.cache); " +
              "use cpuOps(), which follows the op with kvWrite",
          );
        }
        checkQkvRopeCache(a, cache);
      }
      const qWidth = a.numHeads * d, kvWidth = a.numKvHeads * d, width = qWidth + 2 * kvWidth;
      const src = u16("qkvRope", "qkv", a.qkv, a.tokens * width);
      const parts = [
        [u16("qkvRope", "q", a.q, a.tokens * qWidth), qWidth, 0],
        [u16("qkvRope", "k", a.k, a.tokens * kvWidth), kvWidth, qWidth],
        [u16("qkvRope", "v", a.v, a.tokens * kvWidth), kvWidth, qWidth + kvWidth],
      ] as const;
      for (const [x, w, from] of parts) {
        for (let t = 0; t < a.tokens; t++) {
          x.set(src.subarray(t * width + from, t * width + from + w), t * w);
        }
      }
      if (a.bias) ops.qkvBias(a.q, a.k, a.v, a.bias, a.tokens, qWidth, kvWidth, stream);
      if (a.qNorm && a.kNorm) {
        ops.qkNorm(
          a.q,
          a.k,
          a.qNorm,
          a.kNorm,
          a.tokens,
          a.numHeads,
          a.numKvHeads,
          d,
          a.eps,
          stream,
        );
      }
      ops.rope(a.q, a.k, a.positions, a.table, a.tokens, a.numHeads, a.numKvHeads, stream);
      // The fused cache write is, by definition, kvWrite after the unfused op.
      if (cache !== null) {
        kvWrite!(cache.kCache, cache.vCache, a.k, a.v, cache.slots, a.tokens, cache.shape, stream);
      }
    },

    siluMul(out, gateUp, tokens, inter) {
      checkSiluMul(out, gateUp, tokens, inter);
      const o = u16("siluMul", "out", out, tokens * inter);
      const gu = u16("siluMul", "gateUp", gateUp, 2 * tokens * inter);
      for (let t = 0; t < tokens; t++) {
        const g0 = 2 * t * inter;
        const o0 = t * inter;
        for (let i = 0; i < inter; i++) {
          const g = fromBf16Bits(gu[g0 + i]);
          const u = fromBf16Bits(gu[g0 + inter + i]);
          // fp32 steps as the GPU takes them: exp(-g) overflows to Infinity for g < -88.7,
          // giving -0 rather than a subnormal.
          const e = Math.fround(Math.exp(-g));
          const silu = roundBf16(g / Math.fround(1 + e));
          o[o0 + i] = toBf16Bits(silu * u);
        }
      }
    },

    fillRandom(out, count, seed, scale) {
      checkFillRandom(out, count, seed, scale);
      const o = u16("fillRandom", "out", out, count);
      const s = Math.fround(scale);
      for (let i = 0; i < count; i++) o[i] = fillRandomAt(seed, s, i);
    },

    castF32ToBf16(out, x, count) {
      checkCast("castF32ToBf16", out, x, count, 2, 4);
      const o = u16("castF32ToBf16", "out", out, count);
      const xs = u32("castF32ToBf16", "x", x, count);
      // On the bit patterns, as the kernel does, so NaN payloads survive exactly (a NaN read
      // into a JS number may be canonicalised).
      for (let i = 0; i < count; i++) {
        const bits = xs[i];
        o[i] = (bits & 0x7fffffff) > 0x7f800000
          ? (bits >>> 16) | 0x40
          : ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
      }
    },

    castBf16ToF32(out, x, count) {
      checkCast("castBf16ToF32", out, x, count, 4, 2);
      const o = u32("castBf16ToF32", "out", out, count);
      const xs = u16("castBf16ToF32", "x", x, count);
      for (let i = 0; i < count; i++) o[i] = xs[i] << 16;
    },
  };
  return ops;
}

/** Rotates `heads` consecutive heads starting at element `at`; trig holds cos then sin (f32). */
function rotateHeads(
  x: Uint16Array,
  at: number,
  heads: number,
  headDim: number,
  trig: Float32Array,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = at + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = trig[i];
      const s = trig[half + i];
      const a = fromBf16Bits(x[base + i]);
      const b = fromBf16Bits(x[base + half + i]);
      x[base + i] = toBf16Bits(a * c - b * s);
      x[base + half + i] = toBf16Bits(b * c + a * s);
    }
  }
}
