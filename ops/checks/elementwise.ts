/**
 * The elementwise family's argument checks, shared by the CPU reference (ops/cpu/elementwise.ts) and the GPU launchers
 * (ops/gpu/elementwise.ts), so every implementation rejects the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { checkBuffer, checkPositive } from "./common.ts";
import { checkKvWrite } from "./attention.ts";
import type { KvCacheWrite, QkvRopeArgs, RopeTable } from "../ops.ts";

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

/** Throws unless the norm's `eps` is a finite number >= 0. */
export function checkEps(op: string, eps: number): void {
  if (typeof eps !== "number" || !(eps >= 0) || eps === Infinity) {
    throw new RangeError(`${op}: eps must be a finite number >= 0, got ${eps}`);
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
  checkEps("rmsNorm", eps);
  const bytes = 2 * tokens * hidden;
  checkBuffer("rmsNorm", "out", out, bytes, 2, "tokens × hidden bf16");
  checkBuffer("rmsNorm", "x", x, bytes, 2, "tokens × hidden bf16");
  checkBuffer("rmsNorm", "weight", weight, 2 * hidden, 2, "hidden bf16");
  if (residual !== null) {
    checkBuffer("rmsNorm", "residual", residual, bytes, 2, "tokens × hidden bf16");
  }
}

/** The checks of `qkNorm`. */
export function checkQkNorm(
  q: DeviceBuffer,
  k: DeviceBuffer,
  qWeight: DeviceBuffer,
  kWeight: DeviceBuffer,
  tokens: number,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  eps: number,
): void {
  checkCount("qkNorm", "tokens", tokens);
  checkCount("qkNorm", "numHeads", numHeads);
  checkCount("qkNorm", "numKvHeads", numKvHeads);
  checkCount("qkNorm", "headDim", headDim);
  checkTotal("qkNorm", "q (tokens × numHeads × headDim)", tokens * numHeads * headDim);
  checkEps("qkNorm", eps);
  const qBytes = 2 * tokens * numHeads * headDim, kBytes = 2 * tokens * numKvHeads * headDim;
  checkBuffer("qkNorm", "q", q, qBytes, 2, "tokens × numHeads × headDim bf16");
  checkBuffer("qkNorm", "k", k, kBytes, 2, "tokens × numKvHeads × headDim bf16");
  checkBuffer("qkNorm", "qWeight", qWeight, 2 * headDim, 2, "headDim bf16");
  checkBuffer("qkNorm", "kWeight", kWeight, 2 * headDim, 2, "headDim bf16");
}

/** The checks of `qkvBias`. */
export function checkQkvBias(
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  bias: DeviceBuffer,
  tokens: number,
  qWidth: number,
  kvWidth: number,
): void {
  checkCount("qkvBias", "tokens", tokens);
  checkCount("qkvBias", "qWidth", qWidth);
  checkCount("qkvBias", "kvWidth", kvWidth);
  checkTotal("qkvBias", "q (tokens × qWidth)", tokens * qWidth);
  checkBuffer("qkvBias", "q", q, 2 * tokens * qWidth, 2, "tokens × qWidth bf16");
  checkBuffer("qkvBias", "k", k, 2 * tokens * kvWidth, 2, "tokens × kvWidth bf16");
  checkBuffer("qkvBias", "v", v, 2 * tokens * kvWidth, 2, "tokens × kvWidth bf16");
  checkBuffer("qkvBias", "bias", bias, 2 * (qWidth + 2 * kvWidth), 2, "qWidth + 2·kvWidth bf16");
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
  op = "rope",
): void {
  checkCount(op, "tokens", tokens);
  checkCount(op, "numHeads", numHeads);
  checkCount(op, "numKvHeads", numKvHeads);
  const headDim = table.headDim;
  // The GPU keeps a token's cos and sin (headDim floats) in shared memory: 32 KiB at most.
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0 || headDim > 8192) {
    throw new RangeError(`${op}: table.headDim must be an even integer in 2..8192, got ${headDim}`);
  }
  checkTotal(op, "q (tokens × numHeads × headDim)", tokens * numHeads * headDim);
  checkTotal(op, "k (tokens × numKvHeads × headDim)", tokens * numKvHeads * headDim);
  checkBuffer(op, "q", q, 2 * tokens * numHeads * headDim, 2, "tokens × numHeads × headDim");
  checkBuffer(
    op,
    "k",
    k,
    2 * tokens * numKvHeads * headDim,
    2,
    "tokens × numKvHeads × headDim",
  );
  checkBuffer(op, "positions", positions, 4 * tokens, 4, "tokens i32");
  checkBuffer(op, "table.invFreq", table.invFreq, 2 * headDim, 4, "headDim / 2 f32");
}

/** The checks of `qkvRope`; returns the head dimension. */
export function checkQkvRope(a: QkvRopeArgs): number {
  checkRope(a.q, a.k, a.positions, a.table, a.tokens, a.numHeads, a.numKvHeads, "qkvRope");
  const d = a.table.headDim;
  const width = (a.numHeads + 2 * a.numKvHeads) * d;
  checkTotal("qkvRope", "qkv (tokens × (numHeads + 2·numKvHeads) × headDim)", a.tokens * width);
  const kvBytes = 2 * a.tokens * a.numKvHeads * d;
  checkBuffer("qkvRope", "v", a.v, kvBytes, 2, "tokens × numKvHeads × headDim bf16");
  checkBuffer("qkvRope", "qkv", a.qkv, 2 * a.tokens * width, 2, "tokens × (q + 2·kv width) bf16");
  if (a.bias !== null) {
    checkBuffer("qkvRope", "bias", a.bias, 2 * width, 2, "(numHeads + 2·numKvHeads)·headDim bf16");
  }
  if ((a.qNorm === null) !== (a.kNorm === null)) {
    throw new RangeError(
      "qkvRope: qNorm and kNorm go together (Qwen3 norms both q and k); pass both or neither",
    );
  }
  if (a.qNorm !== null && a.kNorm !== null) {
    checkEps("qkvRope", a.eps);
    checkBuffer("qkvRope", "qNorm", a.qNorm, 2 * d, 2, "headDim bf16");
    checkBuffer("qkvRope", "kNorm", a.kNorm, 2 * d, 2, "headDim bf16");
  }
  return d;
}

/**
 * The checks of `qkvRope`'s cache write (a.cache set): kvWrite's, and a shape whose heads are the
 * projection's. Returns the cache's block count.
 */
export function checkQkvRopeCache(a: QkvRopeArgs, cache: KvCacheWrite): number {
  const { shape } = cache;
  if (shape.numKvHeads !== a.numKvHeads || shape.headDim !== a.table.headDim) {
    throw new RangeError(
      `qkvRope: cache.shape has ${shape.numKvHeads} KV heads of ${shape.headDim}, the ` +
        `projection ${a.numKvHeads} of ${a.table.headDim}; pass the layer's own attention shape`,
    );
  }
  return checkKvWrite(
    cache.kCache,
    cache.vCache,
    a.k,
    a.v,
    cache.slots,
    a.tokens,
    shape,
    "qkvRope",
  );
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
