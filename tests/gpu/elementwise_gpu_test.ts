/**
 * The elementwise kernels on a real NVIDIA GPU (`deno task test:gpu`) against the CPU reference
 * (ops/cpu/elementwise.ts), on the same inputs, at the edge shapes: 1, 7 and 300 tokens;
 * rows that take the 16-byte path (4096, 1000 = 125 vectors), the scalar path (1001, misaligned
 * views) and the two-pass path of wide rows (20480); rope with 32/8 heads of 128 and 64 at
 * positions up to 32767; embedding over a 32000-row table; casts of 1e6 + 3 elements with NaN,
 * ±Inf, subnormals and exact ties; fillRandom of 1, 1000 and 2^20 + 3 elements, and one fill
 * past 2^32 elements checked around the 2^32 boundary; qkNorm at Qwen3's 32/8 heads of 128 and at
 * 64; qkvBias at Qwen2.5-7B's widths and on one fused q|k|v row; qkvRope at the shipped
 * families' shapes, with and without bias and norms. Outputs are poisoned (0xff bytes: NaN)
 * before each run, so an unwritten element fails.
 *
 * Tolerances. Both sides round to bf16 at the same steps, so most outputs are bit-identical;
 * what differs is fp32 summation order (rmsNorm), fused multiply-adds (rope) and the last ulp of
 * expf/sincosf, each of which can move a result across a bf16 rounding boundary. That happens
 * to few elements (≤ 1% allowed) and by at most one ulp, two for the ops that round twice
 * (rmsNorm, siluMul: a one-ulp step in the inner rounding can become two after the multiply).
 * rope's x1·c − x2·s may cancel, where an fp32 ulp of the terms is many bf16 ulps of the result,
 * so rope also accepts an absolute difference of 1e-5 (terms are O(1)). Norm-wise relative error
 * ≤ 2e-3. Copies, casts, the residual sum and fillRandom (defined to be bit-identical) are exact.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { decodeBf16, encodeBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuElementwiseOps, fillRandomAt } from "../../ops/cpu/elementwise.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { ElementwiseOps, RopeTable } from "../../ops/ops.ts";
import { configPreset } from "../../models/config.ts";
import { createRopeTable, ropeInverseFrequencies } from "../../models/rope.ts";
import { loadElementwiseOps } from "../../ops/gpu/elementwise.ts";
import { assertClose, randomArray, rng } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

/** The same bytes on the GPU (g) and on the CPU backend (c). */
interface Twin {
  readonly g: DeviceBuffer;
  readonly c: DeviceBuffer;
}

/** Both devices, both op sets, and the allocations of the current case. */
class Rig {
  readonly cpu = new CpuBackend();
  readonly cOps = cpuElementwiseOps();
  #gpuAllocs: DeviceBuffer[] = [];
  #cpuAllocs: DeviceBuffer[] = [];

  constructor(
    readonly gpu: Backend,
    readonly gOps: ElementwiseOps,
    readonly stream: Stream,
  ) {}

  /** `bytes` on both devices, `offset` bytes into a fresh allocation (misaligned views). */
  make(bytes: number, offset = 0): Twin {
    const g = this.gpu.alloc(bytes + offset);
    const c = this.cpu.alloc(bytes + offset);
    this.#gpuAllocs.push(g);
    this.#cpuAllocs.push(c);
    return { g: g.slice(offset, bytes), c: c.slice(offset, bytes) };
  }

  upload(data: ArrayBufferView, offset = 0): Twin {
    const t = this.make(data.byteLength, offset);
    this.gpu.copyToDevice(t.g, data);
    this.cpu.copyToDevice(t.c, data);
    return t;
  }

  /** An output filled with 0xff bytes: NaN as bf16 and f32. */
  poisoned(bytes: number, offset = 0): Twin {
    const t = this.make(bytes, offset);
    this.gpu.memset(t.g, 0xff, this.stream);
    this.cpu.memset(t.c, 0xff);
    return t;
  }

  /** Runs `call` on the GPU ops, then on the CPU ops, and waits for the GPU. */
  run(call: (ops: ElementwiseOps, side: (t: Twin) => DeviceBuffer, stream: Stream) => void) {
    call(this.gOps, (t) => t.g, this.stream);
    call(this.cOps, (t) => t.c, this.cpu.defaultStream);
    this.stream.synchronize();
  }

  read16(t: Twin, count: number): [Uint16Array, Uint16Array] {
    const g = new Uint16Array(count), c = new Uint16Array(count);
    this.gpu.copyToHost(g, t.g);
    this.cpu.copyToHost(c, t.c);
    return [g, c];
  }

  read32(t: Twin, count: number): [Uint32Array, Uint32Array] {
    const g = new Uint32Array(count), c = new Uint32Array(count);
    this.gpu.copyToHost(g, t.g);
    this.cpu.copyToHost(c, t.c);
    return [g, c];
  }

  /** Frees the current case's buffers. */
  release(): void {
    for (const b of this.#gpuAllocs) this.gpu.free(b);
    for (const b of this.#cpuAllocs) this.cpu.free(b);
    this.#gpuAllocs = [];
    this.#cpuAllocs = [];
  }
}

function gpuTest(name: string, body: (rig: Rig) => void | Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const rig = new Rig(gpu, await loadElementwiseOps(gpu), gpu.createStream());
      await body(rig);
      rig.release();
    } finally {
      gpu.close();
    }
  });
}

/** bf16 patterns on one integer line: adjacent values differ by 1, ±0 coincide. */
function ordinal(bits: number): number {
  return bits & 0x8000 ? -(bits & 0x7fff) : bits;
}

function isNanBf16(bits: number): boolean {
  return (bits & 0x7fff) > 0x7f80;
}

/** GPU bf16 results against the CPU's; see the module comment for the bounds. */
function compareBf16(
  g: Uint16Array,
  c: Uint16Array,
  what: string,
  ulps: number,
  abs = 0,
): void {
  let differing = 0;
  for (let i = 0; i < c.length; i++) {
    assert.ok(!isNanBf16(g[i]), `${what}[${i}]: GPU wrote NaN or nothing (0x${g[i].toString(16)})`);
    assert.ok(!isNanBf16(c[i]), `${what}[${i}]: CPU wrote NaN or nothing`);
    if (g[i] === c[i]) continue;
    differing++;
    const distance = Math.abs(ordinal(g[i]) - ordinal(c[i]));
    const gap = Math.abs(decodeBf16(g.subarray(i, i + 1))[0] - decodeBf16(c.subarray(i, i + 1))[0]);
    assert.ok(
      distance <= ulps || gap <= abs,
      `${what}[${i}]: GPU 0x${g[i].toString(16)} vs CPU 0x${c[i].toString(16)} (${distance} ulps)`,
    );
  }
  assert.ok(differing <= 0.01 * c.length, `${what}: ${differing}/${c.length} elements differ`);
  assertClose(decodeBf16(g), decodeBf16(c), 2e-3, what);
}

function assertBitsEqual(g: ArrayLike<number>, c: ArrayLike<number>, what: string): void {
  assert.equal(g.length, c.length);
  for (let i = 0; i < c.length; i++) {
    if (g[i] !== c[i]) {
      assert.fail(`${what}[${i}]: GPU 0x${g[i].toString(16)} vs CPU 0x${c[i].toString(16)}`);
    }
  }
}

/** Random bf16 patterns of values in [lo, hi). */
function randomBf16(n: number, seed: number, lo = -1, hi = 1): Uint16Array {
  return encodeBf16(randomArray(n, seed, lo, hi));
}

const TOKENS = [1, 7, 300];

gpuTest("gpu elementwise: embedding gathers rows, zero rows outside the table", (rig) => {
  const vocab = 32000;
  for (const hidden of [4096, 1001]) {
    // Any 16-bit pattern will do for a copy; a multiplicative hash fills 131M quickly.
    const table = new Uint16Array(vocab * hidden);
    for (let i = 0; i < table.length; i++) table[i] = Math.imul(i + 1, 0x9e3779b1) >>> 16;
    const tableBuf = rig.upload(table);
    for (const tokens of TOKENS) {
      const next = rng(tokens * 7919 + hidden);
      const ids = new Int32Array(tokens).map(() => Math.floor(next(0, vocab)));
      ids[0] = tokens === 1 ? vocab - 1 : 0;
      if (tokens > 1) ids[tokens - 1] = vocab - 1;
      if (tokens > 2) [ids[1], ids[2]] = [-5, vocab];
      const idsBuf = rig.upload(ids);
      const out = rig.poisoned(2 * tokens * hidden);
      rig.run((ops, d, s) => ops.embedding(d(out), d(tableBuf), d(idsBuf), tokens, hidden, s));
      const [g, c] = rig.read16(out, tokens * hidden);
      assertBitsEqual(g, c, `embedding tokens=${tokens} hidden=${hidden}`);
      if (tokens > 2) assert.equal(g[hidden], 0, "an id of -5 gives a zero row");
    }
    rig.release();
  }
});

gpuTest("gpu elementwise: rmsNorm, plain and fused, on every row path", (rig) => {
  const shapes: [tokens: number, hidden: number, offset: number][] = [];
  for (const tokens of TOKENS) {
    for (const hidden of [4096, 1000, 1001]) shapes.push([tokens, hidden, 0]);
  }
  shapes.push([3, 20480, 0]); // wider than the register cache: two passes over memory
  shapes.push([7, 4096, 2]); // misaligned views: the scalar path
  for (const [tokens, hidden, offset] of shapes) {
    for (const fused of [false, true]) {
      const what = `rmsNorm tokens=${tokens} hidden=${hidden} offset=${offset} fused=${fused}`;
      const n = tokens * hidden;
      const xs = randomArray(n, n + hidden, -2, 2);
      for (let i = 0; i < hidden; i++) xs[i] *= 1e-3; // a near-silent row, where eps matters
      const x = rig.upload(encodeBf16(xs), offset);
      const weight = rig.upload(randomBf16(hidden, hidden, 0.5, 1.5), offset);
      const residual = fused ? rig.upload(randomBf16(n, 3 * n, -4, 4), offset) : null;
      const out = rig.poisoned(2 * n, offset);
      rig.run((ops, d, s) => {
        ops.rmsNorm(d(out), d(x), d(weight), residual && d(residual), tokens, hidden, 1e-5, s);
      });
      const [g, c] = rig.read16(out, n);
      compareBf16(g, c, what, 2);
      if (residual) {
        const [gr, cr] = rig.read16(residual, n);
        assertBitsEqual(gr, cr, `${what} residual`);
      }
      rig.release();
    }
  }
});

gpuTest("gpu elementwise: rmsNorm writes over x and over the residual", (rig) => {
  const tokens = 7, hidden = 4096, n = tokens * hidden;
  const xBits = randomBf16(n, 11, -2, 2);
  const rBits = randomBf16(n, 12, -2, 2);
  const weight = rig.upload(randomBf16(hidden, 13, 0.5, 1.5));
  const x = rig.upload(xBits);
  const residual = rig.upload(rBits);
  rig.run((ops, d, s) => ops.rmsNorm(d(x), d(x), d(weight), d(residual), tokens, hidden, 1e-6, s));
  const [g, c] = rig.read16(x, n);
  compareBf16(g, c, "rmsNorm out = x, fused", 2);
  const x2 = rig.upload(xBits);
  const residual2 = rig.upload(rBits);
  rig.run((ops, d, s) => {
    ops.rmsNorm(d(residual2), d(x2), d(weight), d(residual2), tokens, hidden, 1e-6, s);
  });
  const [g2, c2] = rig.read16(residual2, n);
  compareBf16(g2, c2, "rmsNorm out = residual, fused", 2);
  // Both placements must agree with each other too.
  assertBitsEqual(g2, g, "out = x vs out = residual on the GPU");
  rig.release();
});

gpuTest("gpu elementwise: qkNorm normalises every q and k head in place", (rig) => {
  // Qwen3-8B's heads (32/8 of 128), a 64-wide case, and a misaligned view.
  const shapes: [tokens: number, heads: number, kvHeads: number, headDim: number, off: number][] =
    [];
  for (const tokens of TOKENS) shapes.push([tokens, 32, 8, 128, 0], [tokens, 16, 8, 64, 0]);
  shapes.push([7, 32, 8, 128, 2]);
  for (const [tokens, heads, kvHeads, headDim, offset] of shapes) {
    const what = `qkNorm tokens=${tokens} heads=${heads}/${kvHeads} headDim=${headDim} +${offset}`;
    const nq = tokens * heads * headDim, nk = tokens * kvHeads * headDim;
    const qs = randomArray(nq, nq, -3, 3);
    for (let i = 0; i < headDim; i++) qs[i] *= 1e-3; // a near-silent head, where eps matters
    const q = rig.upload(encodeBf16(qs), offset);
    const k = rig.upload(randomBf16(nk, nk + 1, -3, 3), offset);
    const qw = rig.upload(randomBf16(headDim, 5, 0.5, 1.5), offset);
    const kw = rig.upload(randomBf16(headDim, 6, 0.5, 1.5), offset);
    rig.run((ops, d, st) => {
      ops.qkNorm(d(q), d(k), d(qw), d(kw), tokens, heads, kvHeads, headDim, 1e-6, st);
    });
    const [gq, cq] = rig.read16(q, nq);
    compareBf16(gq, cq, `${what} q`, 2);
    const [gk, ck] = rig.read16(k, nk);
    compareBf16(gk, ck, `${what} k`, 2);
    rig.release();
  }
});

gpuTest("gpu elementwise: qkvBias adds the fused bias to q, k and v bit for bit", (rig) => {
  // Qwen2.5-7B's widths (28 heads and 4 KV heads of 128), and one token of a fused q|k|v row.
  for (const tokens of TOKENS) {
    const qWidth = 28 * 128, kvWidth = 4 * 128;
    const what = `qkvBias tokens=${tokens}`;
    const q = rig.upload(randomBf16(tokens * qWidth, tokens, -3, 3));
    const k = rig.upload(randomBf16(tokens * kvWidth, tokens + 1, -3, 3));
    const v = rig.upload(randomBf16(tokens * kvWidth, tokens + 2, -3, 3));
    const bias = rig.upload(randomBf16(qWidth + 2 * kvWidth, 9, -1, 1));
    rig.run((ops, d, st) => ops.qkvBias(d(q), d(k), d(v), d(bias), tokens, qWidth, kvWidth, st));
    for (const [name, t, n] of [["q", q, qWidth], ["k", k, kvWidth], ["v", v, kvWidth]] as const) {
      const [g, c] = rig.read16(t, tokens * n);
      assertBitsEqual(g, c, `${what} ${name}`);
    }
    rig.release();
  }
  const fused = rig.upload(randomBf16(3584 + 1024, 21, -3, 3));
  const bias = rig.upload(randomBf16(3584 + 1024, 22, -1, 1));
  rig.run((ops, d, st) => {
    const row = d(fused);
    ops.qkvBias(row, row.slice(3584 * 2), row.slice(4096 * 2), d(bias), 1, 3584, 512, st);
  });
  const [g, c] = rig.read16(fused, 3584 + 1024);
  assertBitsEqual(g, c, "qkvBias on one fused q|k|v row");
  rig.release();
});

/** The same RoPE table on the GPU and the CPU: Llama-3.1's scaled frequencies at head 128. */
function ropeTables(rig: Rig, headDim: number): [RopeTable, RopeTable] {
  const llama31 = configPreset("llama3.1-8b");
  const inv = headDim === 128
    ? ropeInverseFrequencies(headDim, llama31.ropeTheta, llama31.ropeScaling!)
    : ropeInverseFrequencies(headDim, 10000);
  return [createRopeTable(rig.gpu, inv), createRopeTable(rig.cpu, inv)];
}

function freeRopeTables(rig: Rig, tables: [RopeTable, RopeTable]): void {
  rig.gpu.free(tables[0].invFreq);
  rig.cpu.free(tables[1].invFreq);
}

gpuTest("gpu elementwise: rope with 32/8 heads at positions up to 32767", (rig) => {
  const cases: [tokens: number, heads: number, kvHeads: number, headDim: number, offset: number][] =
    [];
  for (const tokens of TOKENS) {
    for (const headDim of [128, 64]) cases.push([tokens, 32, 8, headDim, 0]);
  }
  cases.push([7, 4, 2, 72, 0]); // headDim / 2 = 36 is not a multiple of 8: the scalar path
  cases.push([7, 32, 8, 128, 2]); // misaligned q and k: the scalar path
  for (const [tokens, heads, kvHeads, headDim, offset] of cases) {
    const what =
      `rope tokens=${tokens} heads=${heads}/${kvHeads} headDim=${headDim} offset=${offset}`;
    const tables = ropeTables(rig, headDim);
    const next = rng(tokens * headDim + offset);
    const positions = new Int32Array(tokens).map(() => Math.floor(next(0, 32768)));
    positions[0] = 32767;
    if (tokens > 1) positions[1] = 0;
    const pos = rig.upload(positions);
    const qn = tokens * heads * headDim, kn = tokens * kvHeads * headDim;
    const q = rig.upload(randomBf16(qn, qn + 1, -2, 2), offset);
    const k = rig.upload(randomBf16(kn, kn + 2, -2, 2), offset);
    rig.run((ops, d, s) => {
      const table = ops === rig.gOps ? tables[0] : tables[1];
      ops.rope(d(q), d(k), d(pos), table, tokens, heads, kvHeads, s);
    });
    const [gq, cq] = rig.read16(q, qn);
    const [gk, ck] = rig.read16(k, kn);
    compareBf16(gq, cq, `${what} q`, 1, 1e-5);
    compareBf16(gk, ck, `${what} k`, 1, 1e-5);
    freeRopeTables(rig, tables);
    rig.release();
  }
});

gpuTest("gpu elementwise: qkvRope splits, biases, norms and rotates as the CPU does", (rig) => {
  // [heads, kvHeads, headDim, bias, norm]: Llama-3 (none), Qwen2.5-7B (bias), Qwen3-8B (norms),
  // head 64 with both.
  const shapes: [number, number, number, boolean, boolean][] = [
    [32, 8, 128, false, false],
    [28, 4, 128, true, false],
    [32, 8, 128, false, true],
    [16, 4, 64, true, true],
  ];
  for (const tokens of TOKENS) {
    for (const [heads, kvHeads, headDim, withBias, withNorm] of shapes) {
      const what =
        `qkvRope tokens=${tokens} heads=${heads}/${kvHeads}x${headDim} bias=${withBias} norm=${withNorm}`;
      const tables = ropeTables(rig, headDim);
      const width = (heads + 2 * kvHeads) * headDim;
      const next = rng(tokens * width);
      const positions = new Int32Array(tokens).map(() => Math.floor(next(0, 32768)));
      const pos = rig.upload(positions);
      const qkv = rig.upload(randomBf16(tokens * width, width + tokens, -3, 3));
      const bias = rig.upload(randomBf16(width, 31, -1, 1));
      const qNorm = rig.upload(randomBf16(headDim, 32, 0.5, 1.5));
      const kNorm = rig.upload(randomBf16(headDim, 33, 0.5, 1.5));
      const qn = tokens * heads * headDim, kn = tokens * kvHeads * headDim;
      const q = rig.poisoned(2 * qn), k = rig.poisoned(2 * kn), v = rig.poisoned(2 * kn);
      rig.run((ops, d, s) =>
        ops.qkvRope({
          q: d(q),
          k: d(k),
          v: d(v),
          qkv: d(qkv),
          positions: d(pos),
          table: ops === rig.gOps ? tables[0] : tables[1],
          bias: withBias ? d(bias) : null,
          qNorm: withNorm ? d(qNorm) : null,
          kNorm: withNorm ? d(kNorm) : null,
          eps: 1e-6,
          tokens,
          numHeads: heads,
          numKvHeads: kvHeads,
        }, s)
      );
      // The norm's sum runs in another order on each side, which can move a normed value by one
      // ulp; RoPE then carries that ulp of its input (|x| < 4 here: 2^-6) into x1·c − x2·s, where
      // cancellation can make it many ulps of a small output (an H100 run saw 14 at |out| =
      // 0.03). So with norms the bound is that input ulp, absolute; the share of differing
      // elements and the relative L2 below it still catch a wrong rotation or weight.
      const [gq, cq] = rig.read16(q, qn);
      compareBf16(gq, cq, `${what} q`, withNorm ? 2 : 1, withNorm ? 2 ** -6 : 1e-5);
      const [gk, ck] = rig.read16(k, kn);
      compareBf16(gk, ck, `${what} k`, withNorm ? 2 : 1, withNorm ? 2 ** -6 : 1e-5);
      const [gv, cv] = rig.read16(v, kn);
      assertBitsEqual(gv, cv, `${what} v`);
      freeRopeTables(rig, tables);
      rig.release();
    }
  }
});

gpuTest("gpu elementwise: siluMul on 16-byte and scalar rows", (rig) => {
  for (const tokens of TOKENS) {
    for (const inter of [14336, 1000, 1001]) {
      const what = `siluMul tokens=${tokens} inter=${inter}`;
      const values = new Float32Array(2 * tokens * inter);
      const next = rng(tokens * inter);
      for (let t = 0; t < tokens; t++) {
        for (let i = 0; i < inter; i++) {
          values[2 * t * inter + i] = next(-8, 8);
          values[2 * t * inter + inter + i] = next(-2, 2);
        }
      }
      // Saturated gates: exp(-g) overflows (g = -100) or vanishes (g = 100).
      values[0] = -100;
      values[1] = 100;
      const gateUp = rig.upload(encodeBf16(values));
      const out = rig.poisoned(2 * tokens * inter);
      rig.run((ops, d, s) => ops.siluMul(d(out), d(gateUp), tokens, inter, s));
      const [g, c] = rig.read16(out, tokens * inter);
      compareBf16(g, c, what, 2);
      rig.release();
    }
  }
});

/** 1e6 + 3 f32 patterns: specials first and last, then random values, raw bits, ties, subnormals. */
function castInputs(count: number): Uint32Array {
  const bits = new Uint32Array(count);
  const f = new Float32Array(bits.buffer);
  const next = rng(99);
  const word = () => (next(0, 65536) << 16 | next(0, 65536)) >>> 0;
  for (let i = 0; i < count; i++) {
    switch (i % 4) {
      case 0:
        f[i] = next(-1e4, 1e4);
        break;
      case 1:
        bits[i] = word(); // includes NaNs, infinities and subnormals
        break;
      case 2:
        bits[i] = (word() & 0xffff0000) | 0x8000; // an exact tie
        break;
      default:
        bits[i] = word() & 0x807fffff; // a subnormal
    }
  }
  const specials = [
    0x00000000,
    0x80000000,
    0x7f800000,
    0xff800000,
    0x7fc00000,
    0xffc00001,
    0x7f800001,
    0x7fa12345,
    0x00000001,
    0x007fffff,
    0x00008000,
    0x00018000,
    0x3f808000,
    0x3f818000,
    0x7f7fffff,
    0x7f7f8000,
    0xff7fffff,
  ];
  specials.forEach((s, i) => {
    bits[i] = s;
    bits[count - 1 - i] = s;
  });
  return bits;
}

gpuTest("gpu elementwise: castF32ToBf16 matches the CPU bit for bit", (rig) => {
  const count = 1_000_003;
  const input = castInputs(count);
  for (const [xOffset, outOffset] of [[0, 0], [4, 2]]) {
    const x = rig.upload(input, xOffset);
    const out = rig.poisoned(2 * count, outOffset);
    rig.run((ops, d, s) => ops.castF32ToBf16(d(out), d(x), count, s));
    const [g, c] = rig.read16(out, count);
    assertBitsEqual(g, c, `castF32ToBf16 offsets ${xOffset}/${outOffset}`);
    rig.release();
  }
});

gpuTest("gpu elementwise: castBf16ToF32 matches the CPU bit for bit", (rig) => {
  const count = 1_000_003;
  const input = new Uint16Array(count);
  const next = rng(5);
  for (let i = 0; i < count; i++) input[i] = i < 65536 ? i : next(0, 65536);
  for (const [xOffset, outOffset] of [[0, 0], [2, 4]]) {
    const x = rig.upload(input, xOffset);
    const out = rig.poisoned(4 * count, outOffset);
    rig.run((ops, d, s) => ops.castBf16ToF32(d(out), d(x), count, s));
    const [g, c] = rig.read32(out, count);
    assertBitsEqual(g, c, `castBf16ToF32 offsets ${xOffset}/${outOffset}`);
    for (let i = 0; i < 65536; i++) assert.equal(g[i], i << 16 >>> 0, `bf16 0x${i.toString(16)}`);
    rig.release();
  }
});

gpuTest("gpu elementwise: fillRandom matches the CPU bit for bit", (rig) => {
  const cases: [count: number, seed: number, scale: number, offset: number][] = [
    [1, 0, 1, 0],
    [1000, 42, 0.02 * Math.sqrt(3), 0],
    [1000, 2 ** 32 + 7, 3, 2], // a seed with a high word; a view 2 bytes in
    [(1 << 20) + 3, 2 ** 53 - 1, 0.02 * Math.sqrt(3), 0],
    [(1 << 20) + 3, 12345, 0.5, 2],
  ];
  for (const [count, seed, scale, offset] of cases) {
    const what = `fillRandom count=${count} seed=${seed} scale=${scale} offset=${offset}`;
    const out = rig.poisoned(2 * count, offset);
    rig.run((ops, d, s) => ops.fillRandom(d(out), count, seed, scale, s));
    const [g, c] = rig.read16(out, count);
    assertBitsEqual(g, c, what);
    assert.ok(!c.some(isNanBf16), `${what}: NaN in the CPU result`);
    rig.release();
  }
});

gpuTest("gpu elementwise: fillRandom past 2^32 elements uses the counter's high word", (rig) => {
  // 2^32 + 2048 bf16 elements: 8 GiB, a lm head's order of magnitude on a large model. Too
  // large for the CPU backend, so elements on both sides of the 2^32 boundary (where a 32-bit
  // index would wrap to element 0) and at the very end are checked against fillRandomAt.
  const count = 2 ** 32 + 2048, seed = 77, scale = 0.02 * Math.sqrt(3);
  if (rig.gpu.memoryInfo().free < 2 * count + (1 << 30)) {
    console.log("fillRandom past 2^32: skipped, less than 9 GiB of device memory free");
    return;
  }
  const out = rig.gpu.alloc(2 * count);
  try {
    const from = 2 ** 32 - 2048;
    rig.gpu.memset(out.slice(2 * from), 0xff, rig.stream);
    rig.gOps.fillRandom(out, count, seed, scale, rig.stream);
    rig.stream.synchronize();
    const got = new Uint16Array(count - from);
    rig.gpu.copyToHost(got, out.slice(2 * from));
    const expected = got.map((_, i) => fillRandomAt(seed, Math.fround(scale), from + i));
    assertBitsEqual(got, expected, `fillRandom from element ${from}`);
    const head = new Uint16Array(2048);
    rig.gpu.copyToHost(head, out);
    assert.notDeepEqual(got.subarray(2048, 4096), head, "element 2^32 + i is not element i");
  } finally {
    rig.gpu.free(out);
  }
});
