/**
 * The elementwise family on the CPU backend, and the argument checks it shares with the GPU
 * ops (kernels/ops/elementwise.ts), so both reject the same calls with the same messages.
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

import type { DeviceBuffer } from "../backend.ts";
import { fromBf16Bits, roundBf16, toBf16Bits } from "../bf16.ts";
import { checkBuffer, checkPositive } from "../op_checks.ts";
import { philox4x32 } from "../philox.ts";
import type { ElementwiseOps, RopeTable } from "../ops.ts";

/** Largest size argument: every count must fit the kernels' 32-bit parameters and indices. */
const MAX_COUNT = 0x7fffffff;

/** Throws unless `value` is an integer in 1..2^31-1. */
export function checkCount(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > MAX_COUNT) {
    throw new RangeError(`${op}: ${name} must be an integer in 1..2^31-1, got ${value}`);
  }
}

/** Throws unless the total element count `count` fits the kernels' 32-bit indices. */
function checkTotal(op: string, what: string, count: number): void {
  if (count > MAX_COUNT) {
    throw new RangeError(`${op}: ${what} is ${count} elements, more than 2^31-1`);
  }
}

/** The checks of `embedding`; returns the vocabulary size the table holds. */
export function checkEmbedding(
  out: DeviceBuffer,
  table: DeviceBuffer,
  ids: DeviceBuffer,
  tokens: number,
  hidden: number,
): number {
  checkCount("embedding", "tokens", tokens);
  checkCount("embedding", "hidden", hidden);
  checkTotal("embedding", "out (tokens × hidden)", tokens * hidden);
  checkBuffer("embedding", "out", out, 2 * tokens * hidden, 2, "tokens × hidden bf16");
  checkBuffer("embedding", "table", table, 2 * hidden, 2, "one hidden-wide bf16 row");
  checkBuffer("embedding", "ids", ids, 4 * tokens, 4, "tokens i32");
  return Math.min(Math.floor(table.bytes / (2 * hidden)), MAX_COUNT);
}

/** The checks of `rmsNorm`. */
export function checkRmsNorm(
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: DeviceBuffer,
  residual: DeviceBuffer | null,
  tokens: number,
  hidden: number,
  eps: number,
): void {
  checkCount("rmsNorm", "tokens", tokens);
  checkCount("rmsNorm", "hidden", hidden);
  checkTotal("rmsNorm", "x (tokens × hidden)", tokens * hidden);
  if (typeof eps !== "number" || !(eps >= 0) || eps === Infinity) {
    throw new RangeError(`rmsNorm: eps must be a finite number >= 0, got ${eps}`);
  }
  const bytes = 2 * tokens * hidden;
  checkBuffer("rmsNorm", "out", out, bytes, 2, "tokens × hidden bf16");
  checkBuffer("rmsNorm", "x", x, bytes, 2, "tokens × hidden bf16");
  checkBuffer("rmsNorm", "weight", weight, 2 * hidden, 2, "hidden bf16");
  if (residual !== null) {
    checkBuffer("rmsNorm", "residual", residual, bytes, 2, "tokens × hidden bf16");
  }
}

/** The checks of `rope`. */
export function checkRope(
  q: DeviceBuffer,
  k: DeviceBuffer,
  positions: DeviceBuffer,
  table: RopeTable,
  tokens: number,
  numHeads: number,
  numKvHeads: number,
): void {
  checkCount("rope", "tokens", tokens);
  checkCount("rope", "numHeads", numHeads);
  checkCount("rope", "numKvHeads", numKvHeads);
  const headDim = table.headDim;
  // The GPU keeps a token's cos and sin (headDim floats) in shared memory: 32 KiB at most.
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0 || headDim > 8192) {
    throw new RangeError(`rope: table.headDim must be an even integer in 2..8192, got ${headDim}`);
  }
  checkTotal("rope", "q (tokens × numHeads × headDim)", tokens * numHeads * headDim);
  checkTotal("rope", "k (tokens × numKvHeads × headDim)", tokens * numKvHeads * headDim);
  checkBuffer("rope", "q", q, 2 * tokens * numHeads * headDim, 2, "tokens × numHeads × headDim");
  checkBuffer(
    "rope",
    "k",
    k,
    2 * tokens * numKvHeads * headDim,
    2,
    "tokens × numKvHeads × headDim",
  );
  checkBuffer("rope", "positions", positions, 4 * tokens, 4, "tokens i32");
  checkBuffer("rope", "table.invFreq", table.invFreq, 2 * headDim, 4, "headDim / 2 f32");
}

/** The checks of `siluMul`. */
export function checkSiluMul(
  out: DeviceBuffer,
  gateUp: DeviceBuffer,
  tokens: number,
  inter: number,
): void {
  checkCount("siluMul", "tokens", tokens);
  checkCount("siluMul", "inter", inter);
  // gateUp has twice as many elements; the kernels index it from the row, so out's count is the
  // limit, and 2 · (2^31 - 1) still fits their unsigned 32-bit arithmetic.
  checkTotal("siluMul", "out (tokens × inter)", tokens * inter);
  checkBuffer("siluMul", "out", out, 2 * tokens * inter, 2, "tokens × inter bf16");
  checkBuffer("siluMul", "gateUp", gateUp, 4 * tokens * inter, 2, "tokens × 2·inter bf16");
}

/** The checks of the two casts; `outBytes`/`inBytes` are the element sizes. */
export function checkCast(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  count: number,
  outBytes: number,
  inBytes: number,
): void {
  checkCount(op, "count", count);
  const outType = outBytes === 2 ? "bf16" : "f32";
  const inType = inBytes === 2 ? "bf16" : "f32";
  checkBuffer(op, "out", out, outBytes * count, outBytes, `count ${outType}`);
  checkBuffer(op, "x", x, inBytes * count, inBytes, `count ${inType}`);
}

/** The checks of `fillRandom`. */
export function checkFillRandom(
  out: DeviceBuffer,
  count: number,
  seed: number,
  scale: number,
): void {
  checkPositive("fillRandom", "count", count);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`fillRandom: seed must be an integer in 0..2^53-1, got ${seed}`);
  }
  // The kernel takes scale as an f32, so it must stay finite there too.
  if (typeof scale !== "number" || !(scale >= 0) || !Number.isFinite(Math.fround(scale))) {
    throw new RangeError(`fillRandom: scale must be a finite f32 >= 0, got ${scale}`);
  }
  checkBuffer("fillRandom", "out", out, 2 * count, 2, "count bf16");
}

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

/** The elementwise ops on the CPU backend (buffers from CpuBackend). */
export function cpuElementwiseOps(): ElementwiseOps {
  // Per-token cos/sin, grown on demand and reused across calls.
  let trig = new Float32Array(0);

  return {
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
        // The sum of squares runs in f64 here and in fp32 (another order) on the GPU; either
        // is far more precise than the bf16 outputs it feeds.
        let ss = 0;
        if (r) {
          for (let i = at; i < at + hidden; i++) {
            const bits = toBf16Bits(fromBf16Bits(xs[i]) + fromBf16Bits(r[i]));
            r[i] = bits;
            const v = fromBf16Bits(bits);
            ss += v * v;
          }
        } else {
          for (let i = at; i < at + hidden; i++) {
            const v = fromBf16Bits(xs[i]);
            ss += v * v;
          }
        }
        const mean = Math.fround(Math.fround(ss) / hidden);
        const inv = Math.fround(1 / Math.fround(Math.sqrt(Math.fround(mean + epsF))));
        const src = r ?? xs;
        for (let i = 0; i < hidden; i++) {
          const h = roundBf16(fromBf16Bits(src[at + i]) * inv);
          o[at + i] = toBf16Bits(fromBf16Bits(w[i]) * h);
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
