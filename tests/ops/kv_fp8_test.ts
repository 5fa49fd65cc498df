/**
 * The FP8 (E4M3) KV cache on the CPU ops: kvWrite's quantization against a closed-form
 * reference over every bf16 value, the round trip through decodeAttention, fp8 attention against
 * bf16 attention on random data, and the argument checks. Which kernels the GPU ops launch for
 * an fp8 cache: tests/attention_fp8_launch_test.ts; their numbers: tests/gpu/kv_fp8_gpu_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fromBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { cpuAttentionOps } from "../../ops/cpu/attention.ts";
import type { AttentionShape, KvCacheDtype } from "../../ops/ops.ts";
import { randomArray, relativeError } from "../support/numeric.ts";
import { readBf16, writeBf16 } from "../support/device.ts";

const cpu = new CpuBackend();
const ops = cpuAttentionOps();
const stream = cpu.defaultStream;

function uploadI32(values: ArrayLike<number>): DeviceBuffer {
  const buffer = cpu.alloc(Math.max(16, values.length * 4));
  cpu.copyToDevice(buffer, Int32Array.from(values));
  return buffer;
}

/**
 * Every finite E4M3 value from the format's definition (bias 7, 3 mantissa bits, subnormals
 * m · 2^-9, S.1111.111 NaN), written out here rather than taken from backends/fp8.ts.
 */
function e4m3Values(): { code: number; value: number }[] {
  const out = [];
  for (let code = 0; code < 256; code++) {
    const e = (code >> 3) & 15, m = code & 7;
    if (e === 15 && m === 7) continue;
    const magnitude = e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
    out.push({ code, value: code & 0x80 ? -magnitude : magnitude });
  }
  return out;
}
const FINITE = e4m3Values();

/**
 * The reference encoding, by search: NaN stays NaN (any NaN code), |x| >= 448 saturates to ±448,
 * else the nearest E4M3 value, a tie going to the even code (even mantissa). The sign of a zero
 * is kept, as the device's conversion keeps it.
 */
function referenceCode(x: number): number | "nan" {
  if (Number.isNaN(x)) return "nan";
  if (x >= 448) return 0x7e;
  if (x <= -448) return 0xfe;
  let best = -1, bestDistance = Infinity;
  for (const { code, value } of FINITE) {
    if ((code & 0x80) !== (x < 0 || Object.is(x, -0) ? 0x80 : 0)) continue;
    const distance = Math.abs(value - x);
    if (distance < bestDistance || (distance === bestDistance && (code & 1) === 0)) {
      best = code;
      bestDistance = distance;
    }
  }
  return best;
}

Deno.test("the reference E4M3 encoding rounds midpoints to even and saturates at ±448", () => {
  // Checked by hand, so the reference the op is compared with is itself right.
  const cases: [number, number][] = [
    [1, 0x38],
    [1 + 1 / 16, 0x38], // midway between 1 (0x38) and 1.125 (0x39): the even code
    [1 + 3 / 16, 0x3a], // midway between 1.125 (0x39) and 1.25 (0x3a): the even code
    [2 ** -10, 0x00], // midway between 0 and the smallest subnormal 2^-9
    [3 * 2 ** -10, 0x02], // midway between 2^-9 (0x01) and 2^-8 (0x02)
    [240, 0x77], // 1.875 · 2^7
    [440, 0x7e], // midway between 416 (0x7d) and 448 (0x7e): the even code, 448
    [448, 0x7e],
    [464, 0x7e], // beyond 448: saturates, no rounding up to NaN
    [1e30, 0x7e],
    [-Infinity, 0xfe],
    [-0.75, 0xb4],
  ];
  for (const [x, code] of cases) assert.equal(referenceCode(x), code, `reference of ${x}`);
});

/** One token per block, one head: token t is block t, so its row is element t · 64. */
function oneHeadShape(kvDtype: KvCacheDtype, kScale = 1, vScale = 1): AttentionShape {
  return {
    numHeads: 1,
    numKvHeads: 1,
    headDim: 64,
    blockSize: 1,
    scale: 0.125,
    kvDtype,
    kScale,
    vScale,
  };
}

Deno.test("fp8 kvWrite encodes every bf16 value as the reference does, and decode reads it back", () => {
  // K and V hold all 65536 bf16 patterns, K quantized with scale 1 and V with scale 2 (x / 2 is
  // exact in f32 for every bf16 x, so the reference of V is that of x / 2).
  const shape = oneHeadShape("fp8", 1, 2);
  const count = 65536, tokens = count / shape.headDim;
  const bits = new Uint16Array(count);
  for (let i = 0; i < count; i++) bits[i] = i;
  const k = cpu.alloc(count * 2), v = cpu.alloc(count * 2);
  cpu.copyToDevice(k, bits);
  cpu.copyToDevice(v, bits);
  const kCache = cpu.alloc(count), vCache = cpu.alloc(count);
  const slots = uploadI32(Array.from({ length: tokens }, (_, t) => t));
  ops.kvWrite(kCache, vCache, k, v, slots, tokens, shape, stream);
  const kCodes = new Uint8Array(count), vCodes = new Uint8Array(count);
  cpu.copyToHost(kCodes, kCache);
  cpu.copyToHost(vCodes, vCache);
  const mismatches: string[] = [];
  const expect = (got: number, x: number, what: string) => {
    const want = referenceCode(x);
    const ok = want === "nan" ? (got & 0x7f) === 0x7f : got === want;
    if (!ok && mismatches.length < 5) mismatches.push(`${what}(${x}) = ${got}, want ${want}`);
  };
  for (let i = 0; i < count; i++) {
    const x = fromBf16Bits(i);
    expect(kCodes[i], x, "k");
    expect(vCodes[i], x / 2, "v");
  }
  assert.deepEqual(mismatches, []);

  // Decode with one key per sequence, zeroed (a NaN key would make the whole row NaN): softmax
  // over one key is 1, so the output is that key's V row as read back, 2 · e4m3(x / 2), a value
  // bf16 holds exactly.
  cpu.memset(kCache, 0);
  const out = cpu.alloc(count * 2);
  ops.decodeAttention({
    out,
    q: writeBf16(cpu, new Float32Array(count)),
    kCache,
    vCache,
    blockTables: slots,
    contextLens: uploadI32(new Int32Array(tokens).fill(1)),
    batch: tokens,
    maxBlocks: 1,
    maxContext: 1,
    shape,
    workspace: cpu.alloc(16),
  }, stream);
  const got = readBf16(cpu, out, count);
  for (let i = 0; i < count; i++) {
    const want = referenceCode(fromBf16Bits(i) / 2);
    const value = want === "nan" ? NaN : 2 * FINITE.find((e) => e.code === want)!.value;
    // === on purpose: the sum 0 + 1 · (-0) is +0, so a zero's sign does not survive attention.
    if (got[i] !== value && !(Number.isNaN(value) && Number.isNaN(got[i]))) {
      assert.fail(`read back ${got[i]} for bf16 ${fromBf16Bits(i)}, want ${value}`);
    }
  }
});

/** A paged layout: `seqs` sequences of `ctx` tokens, their blocks shuffled through the cache. */
interface Case {
  readonly shape: AttentionShape;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly q: Float32Array;
  readonly seqs: number;
  readonly ctx: number;
  readonly tables: DeviceBuffer;
  readonly slots: DeviceBuffer;
  readonly maxBlocks: number;
  readonly numBlocks: number;
}

function randomCase(magnitude: number, seed: number): Case {
  const shape = {
    numHeads: 8,
    numKvHeads: 2,
    headDim: 64,
    blockSize: 16,
    // Scores of the same spread at every magnitude (q · k grows with its square).
    scale: 1 / Math.sqrt(64) / magnitude ** 2,
  };
  const seqs = 3, ctx = 100, maxBlocks = Math.ceil(ctx / shape.blockSize);
  const numBlocks = seqs * maxBlocks;
  // Block b of sequence s is cache block (7 · (s · maxBlocks + b)) mod numBlocks (7 is coprime).
  const table = Array.from({ length: numBlocks }, (_, i) => (7 * i) % numBlocks);
  const slots: number[] = [];
  for (let s = 0; s < seqs; s++) {
    for (let t = 0; t < ctx; t++) {
      const block = table[s * maxBlocks + Math.floor(t / shape.blockSize)];
      slots.push(block * shape.blockSize + (t % shape.blockSize));
    }
  }
  const kv = seqs * ctx * shape.numKvHeads * shape.headDim;
  return {
    shape,
    k: randomArray(kv, seed, -magnitude, magnitude),
    v: randomArray(kv, seed + 1, -magnitude, magnitude),
    q: randomArray(seqs * ctx * shape.numHeads * shape.headDim, seed + 2, -magnitude, magnitude),
    seqs,
    ctx,
    tables: uploadI32(table),
    slots: uploadI32(slots),
    maxBlocks,
    numBlocks,
  };
}

/** Prefill of every sequence's whole context, then decode of its last token, with `shape`. */
function attend(c: Case, shape: AttentionShape): { prefill: Float32Array; decode: Float32Array } {
  const elementBytes = shape.kvDtype === "fp8" ? 1 : 2;
  const cacheBytes = c.numBlocks * shape.numKvHeads * shape.blockSize * shape.headDim *
    elementBytes;
  const kCache = cpu.alloc(cacheBytes), vCache = cpu.alloc(cacheBytes);
  const tokens = c.seqs * c.ctx;
  ops.kvWrite(
    kCache,
    vCache,
    writeBf16(cpu, c.k),
    writeBf16(cpu, c.v),
    c.slots,
    tokens,
    shape,
    stream,
  );
  const rows = tokens * shape.numHeads * shape.headDim;
  const out = cpu.alloc(rows * 2);
  const q = writeBf16(cpu, c.q);
  const contextLens = uploadI32(new Int32Array(c.seqs).fill(c.ctx));
  ops.prefillAttention({
    out,
    q,
    kCache,
    vCache,
    queryStarts: uploadI32(Array.from({ length: c.seqs + 1 }, (_, s) => s * c.ctx)),
    contextLens,
    blockTables: c.tables,
    seqs: c.seqs,
    tokens,
    maxBlocks: c.maxBlocks,
    shape,
  }, stream);
  const prefill = readBf16(cpu, out, rows);
  // Decode's queries: each sequence's last query row, gathered.
  const width = shape.numHeads * shape.headDim;
  const last = new Float32Array(c.seqs * width);
  for (let s = 0; s < c.seqs; s++) {
    last.set(c.q.subarray(((s + 1) * c.ctx - 1) * width, (s + 1) * c.ctx * width), s * width);
  }
  const decodeOut = cpu.alloc(c.seqs * width * 2);
  ops.decodeAttention({
    out: decodeOut,
    q: writeBf16(cpu, last),
    kCache,
    vCache,
    blockTables: c.tables,
    contextLens,
    batch: c.seqs,
    maxBlocks: c.maxBlocks,
    maxContext: c.maxBlocks * shape.blockSize,
    shape,
    workspace: cpu.alloc(16),
  }, stream);
  return { prefill, decode: readBf16(cpu, decodeOut, c.seqs * width) };
}

/**
 * fp8 attention against bf16 attention over the same paged K/V, relative L2 error of the outputs.
 *
 * The bound: E4M3 keeps 3 mantissa bits, so each stored element is x(1 + δ) with |δ| <= 2^-4 in
 * the normal range (values under 2^-6 get an absolute error <= 2^-10, negligible against these
 * vectors' norms). The output Σ p_t v_t then moves by Σ p_t δv_t, at most 2^-4 relative per
 * element, and since the δ are independent it averages to about 2^-4 / √3 ≈ 0.036 in the L2
 * norm. K's errors move each score by scale · q · δk, about 2^-4 / √3 · |q||k| / √headDim in
 * scale units, a ~1% change of the softmax weights that adds ~1/3 of V's term in quadrature.
 * So the error sits near 0.03 to 0.04 (measured: 0.026 to 0.030), and 2^-4, the per-element
 * worst case, bounds it. A read that
 * skips the scale, a wrong code table or a mis-indexed block gives errors of order 1.
 *
 * The second case stores values up to 100 with scales 0.5 (K) and 0.25 (V): the quotients stay
 * under 448 (no saturation), and the result holds only if both scales are applied on both sides.
 */
Deno.test("fp8 KV attention matches bf16 KV attention within 2^-4 relative L2", () => {
  const TOLERANCE = 2 ** -4;
  for (
    const [magnitude, kScale, vScale, seed] of [
      [1, 1, 1, 11],
      [100, 0.5, 0.25, 23],
    ]
  ) {
    const c = randomCase(magnitude, seed);
    const bf16 = attend(c, c.shape);
    const fp8 = attend(c, { ...c.shape, kvDtype: "fp8", kScale, vScale });
    for (const what of ["prefill", "decode"] as const) {
      const error = relativeError(fp8[what], bf16[what]);
      assert.ok(
        error <= TOLERANCE,
        `${what} at magnitude ${magnitude}: relative L2 error ${error} > ${TOLERANCE}`,
      );
      // Not vacuous: quantization shows, at about the argued size.
      assert.ok(error > 2 ** -9, `${what}: error ${error} too small to be fp8 rounding`);
    }
  }
});

Deno.test("the attention checks size an fp8 cache by the byte and reject bad dtypes and scales", () => {
  const shape = oneHeadShape("fp8");
  const block = shape.numKvHeads * shape.blockSize * shape.headDim;
  const k = writeBf16(cpu, new Float32Array(64)), slots = uploadI32([0]);
  // One fp8 block is 64 bytes; the same bytes hold no bf16 block.
  ops.kvWrite(cpu.alloc(block), cpu.alloc(block), k, k, slots, 1, shape, stream);
  assert.throws(
    () =>
      ops.kvWrite(cpu.alloc(block), cpu.alloc(block), k, k, slots, 1, oneHeadShape("bf16"), stream),
    /kvWrite: kCache has 64 bytes, needs 128 \(one cache block\)/,
  );
  const cache = cpu.alloc(2 * block);
  const bad: [Partial<AttentionShape>, RegExp][] = [
    [{ kvDtype: "fp16" as KvCacheDtype }, /shape\.kvDtype must be "bf16" or "fp8", got fp16/],
    [{ kScale: 0 }, /shape\.kScale must be a positive finite number, got 0/],
    [{ vScale: Infinity }, /shape\.vScale must be a positive finite number, got Infinity/],
    [{ vScale: NaN }, /shape\.vScale must be a positive finite number, got NaN/],
  ];
  for (const [change, message] of bad) {
    assert.throws(
      () => ops.kvWrite(cache, cache, k, k, slots, 1, { ...shape, ...change }, stream),
      message,
    );
  }
});
