/**
 * The CPU elementwise ops against tests/fixtures/ops/elementwise.json (float64 references and
 * HF's own bf16 results from tools/fixtures/elementwise.py), ropeInverseFrequencies against
 * transformers, and the argument checks both backends share.
 *
 * Tolerances. A bf16 result carries 8 significant bits, so one rounding is off by at most half
 * an ulp, 2^-9 ≈ 0.2% of the value; rmsNorm and siluMul round twice (like HF), so up to 2^-8.
 * Hence: per element, |out − ref| ≤ 2^-8·|ref| for one rounding and 2^-7·|ref| for two (a full
 * ulp of margin), plus a tiny absolute term for results that cancel to near zero; and the
 * norm-wise relative error ≤ 1e-2, the family-wide bf16 bound. Against HF's bf16 path, which
 * rounds at the same places, at most 1% of elements may differ (fp32 summation order and
 * rsqrt/exp ulps can flip a rounding) and never by more than 2 ulps. Copies, casts and the
 * fused residual sum are exact. invFreq is f32, compared at 1e-6 relative (fp32 vs float64
 * evaluation of the same formula differ by ~1e-7).
 *
 * @module
 */

import assert from "node:assert/strict";
import { DeviceBuffer } from "../../backends/backend.ts";
import { decodeBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuElementwiseOps } from "../../ops/cpu/elementwise.ts";
import type { RopeTable } from "../../ops/ops.ts";
import {
  createRopeTable,
  type Llama3RopeScaling,
  ropeInverseFrequencies,
} from "../../models/rope.ts";
import { encodeBf16 } from "../../backends/bf16.ts";
import { assertClose, randomArray } from "../support/numeric.ts";
import { readInto } from "../support/device.ts";
import { readFixtureText } from "../support/fixtures.ts";

interface RmsNormCase {
  name: string;
  tokens: number;
  hidden: number;
  eps: number;
  x: number[];
  weight: number[];
  residual: number[] | null;
  expectedResidual: number[] | null;
  expected: number[];
  hfBits: number[];
}

interface RopeCase {
  name: string;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  positions: number[];
  invFreq: number[];
  q: number[];
  k: number[];
  expectedQ: number[];
  expectedK: number[];
}

interface Fixture {
  embedding: {
    vocab: number;
    hidden: number;
    tokens: number;
    table: number[];
    ids: number[];
    expected: number[];
  };
  rmsNorm: RmsNormCase[];
  rope: RopeCase[];
  siluMul: {
    tokens: number;
    inter: number;
    gateUp: number[];
    expected: number[];
    hfBits: number[];
  };
  castF32ToBf16: { x: number[]; expected: number[] };
  castBf16ToF32: { x: number[]; expected: number[] };
  /** Added with the Qwen families; absent from fixtures generated before them. */
  qkNorm?: {
    tokens: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    eps: number;
    q: number[];
    k: number[];
    qWeight: number[];
    kWeight: number[];
    expectedQ: number[];
    expectedK: number[];
    hfBitsQ: number[];
    hfBitsK: number[];
  };
  qkvBias?: {
    tokens: number;
    qWidth: number;
    kvWidth: number;
    q: number[];
    k: number[];
    v: number[];
    bias: number[];
    expectedQ: number[];
    expectedK: number[];
    expectedV: number[];
    hfBitsQ: number[];
    hfBitsK: number[];
    hfBitsV: number[];
  };
  ropeInvFreq: {
    name: string;
    headDim: number;
    theta: number;
    scaling: Llama3RopeScaling | null;
    source: string;
    invFreq: number[];
  }[];
}

const FIXTURE_URL = new URL("../fixtures/ops/elementwise.json", import.meta.url);
let fixtureCache: Fixture | null = null;

/** The fixture, read once; a missing file fails with how to make it. */
function fixture(): Fixture {
  if (fixtureCache) return fixtureCache;
  const text = readFixtureText(FIXTURE_URL, "elementwise.py", "torch and transformers");
  fixtureCache = JSON.parse(text) as Fixture;
  return fixtureCache;
}

const cpu = new CpuBackend();
const ops = cpuElementwiseOps();
const stream = cpu.defaultStream;

function upload(data: ArrayBufferView): DeviceBuffer {
  const buffer = cpu.alloc(Math.max(1, data.byteLength));
  cpu.copyToDevice(buffer, data);
  return buffer;
}

function bits16(buffer: DeviceBuffer, count: number): Uint16Array {
  return readInto(cpu, buffer, new Uint16Array(count));
}

function values(buffer: DeviceBuffer, count: number): Float32Array {
  return decodeBf16(bits16(buffer, count));
}

/** bf16 patterns on one integer line, so adjacent values differ by 1 and ±0 coincide. */
function ordinal(bits: number): number {
  return bits & 0x8000 ? -(bits & 0x7fff) : bits;
}

function isNanBf16(bits: number): boolean {
  return (bits & 0x7fff) > 0x7f80;
}

/** Every |out − ref| ≤ rel·|ref| + abs. */
function assertElementwise(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  rel: number,
  abs: number,
  what: string,
): void {
  assert.equal(out.length, ref.length, `${what}: length`);
  for (let i = 0; i < ref.length; i++) {
    const bound = rel * Math.abs(ref[i]) + abs;
    assert.ok(
      Math.abs(out[i] - ref[i]) <= bound,
      `${what}[${i}]: ${out[i]} vs reference ${ref[i]} (bound ${bound})`,
    );
  }
}

/** At most 1% of patterns differ from HF's, none by more than 2 ulps. */
function assertNearHf(out: Uint16Array, hf: readonly number[], what: string): void {
  assert.equal(out.length, hf.length, `${what}: length`);
  let differing = 0;
  for (let i = 0; i < hf.length; i++) {
    const distance = Math.abs(ordinal(out[i]) - ordinal(hf[i]));
    assert.ok(
      distance <= 2,
      `${what}[${i}]: 0x${out[i].toString(16)} vs HF 0x${hf[i].toString(16)}`,
    );
    if (distance) differing++;
  }
  assert.ok(differing <= 0.01 * hf.length, `${what}: ${differing}/${hf.length} differ from HF`);
}

Deno.test("elementwise fixture: embedding gathers rows, zero rows for ids outside the table", () => {
  const { vocab, hidden, tokens, table, ids, expected } = fixture().embedding;
  const out = cpu.alloc(2 * tokens * hidden);
  cpu.memset(out, 0xff);
  const tableBuf = upload(Uint16Array.from(table));
  assert.equal(tableBuf.bytes, 2 * vocab * hidden);
  ops.embedding(out, tableBuf, upload(Int32Array.from(ids)), tokens, hidden, stream);
  assert.deepEqual([...bits16(out, tokens * hidden)], expected);
});

Deno.test("elementwise fixture: rmsNorm, plain and fused with the residual add", () => {
  for (const c of fixture().rmsNorm) {
    const n = c.tokens * c.hidden;
    const out = cpu.alloc(2 * n);
    cpu.memset(out, 0xff);
    const residual = c.residual ? upload(Uint16Array.from(c.residual)) : null;
    const x = upload(Uint16Array.from(c.x));
    ops.rmsNorm(
      out,
      x,
      upload(Uint16Array.from(c.weight)),
      residual,
      c.tokens,
      c.hidden,
      c.eps,
      stream,
    );
    if (residual) {
      assert.deepEqual([...bits16(residual, n)], c.expectedResidual, `${c.name}: residual`);
    }
    const got = values(out, n);
    assertClose(got, c.expected, 1e-2, `rmsNorm ${c.name}`);
    assertElementwise(got, c.expected, 2 ** -7, 1e-6, `rmsNorm ${c.name}`);
    assertNearHf(bits16(out, n), c.hfBits, `rmsNorm ${c.name}`);
  }
});

Deno.test("elementwise fixture: rope rotates q and k in place (rotate_half)", () => {
  for (const c of fixture().rope) {
    const q = upload(Uint16Array.from(c.q));
    const k = upload(Uint16Array.from(c.k));
    const table: RopeTable = createRopeTable(cpu, Float32Array.from(c.invFreq));
    assert.equal(table.headDim, c.headDim);
    ops.rope(
      q,
      k,
      upload(Int32Array.from(c.positions)),
      table,
      c.tokens,
      c.numHeads,
      c.numKvHeads,
      stream,
    );
    const gotQ = values(q, c.q.length);
    const gotK = values(k, c.k.length);
    assertClose(gotQ, c.expectedQ, 1e-2, `rope ${c.name} q`);
    assertClose(gotK, c.expectedK, 1e-2, `rope ${c.name} k`);
    // One rounding; the absolute term covers x1·c − x2·s cancelling in fp32.
    assertElementwise(gotQ, c.expectedQ, 2 ** -8, 1e-6, `rope ${c.name} q`);
    assertElementwise(gotK, c.expectedK, 2 ** -8, 1e-6, `rope ${c.name} k`);
  }
});

Deno.test("elementwise fixture: siluMul, with HF's bf16 rounding of the activation", () => {
  const { tokens, inter, gateUp, expected, hfBits } = fixture().siluMul;
  const out = cpu.alloc(2 * tokens * inter);
  cpu.memset(out, 0xff);
  ops.siluMul(out, upload(Uint16Array.from(gateUp)), tokens, inter, stream);
  const got = values(out, tokens * inter);
  assertClose(got, expected, 1e-2, "siluMul");
  assertElementwise(got, expected, 2 ** -7, 1e-6, "siluMul");
  assertNearHf(bits16(out, tokens * inter), hfBits, "siluMul");
});

Deno.test("elementwise fixture: castF32ToBf16 rounds to nearest even, NaN stays NaN", () => {
  const { x, expected } = fixture().castF32ToBf16;
  const out = cpu.alloc(2 * x.length);
  ops.castF32ToBf16(out, upload(Uint32Array.from(x)), x.length, stream);
  const got = bits16(out, x.length);
  for (let i = 0; i < x.length; i++) {
    const what = `f32 0x${x[i].toString(16)} -> 0x${got[i].toString(16)}`;
    if (isNanBf16(expected[i])) assert.ok(isNanBf16(got[i]), `${what}: not NaN`);
    else assert.equal(got[i], expected[i], `${what}, expected 0x${expected[i].toString(16)}`);
  }
});

Deno.test("elementwise fixture: castBf16ToF32 is exact", () => {
  const { x, expected } = fixture().castBf16ToF32;
  const out = cpu.alloc(4 * x.length);
  ops.castBf16ToF32(out, upload(Uint16Array.from(x)), x.length, stream);
  const got = new Uint32Array(x.length);
  cpu.copyToHost(got, out);
  assert.deepEqual([...got], expected);
});

Deno.test("elementwise fixture: ropeInverseFrequencies matches transformers", () => {
  for (const c of fixture().ropeInvFreq) {
    const got = ropeInverseFrequencies(c.headDim, c.theta, c.scaling ?? undefined);
    assert.equal(got.length, c.invFreq.length, c.name);
    for (let i = 0; i < got.length; i++) {
      const rel = Math.abs(got[i] - c.invFreq[i]) / Math.abs(c.invFreq[i]);
      assert.ok(rel <= 1e-6, `${c.name} (${c.source}) [${i}]: ${got[i]} vs ${c.invFreq[i]}`);
    }
  }
});

Deno.test("elementwise: rmsNorm may write over x or the residual", () => {
  const tokens = 3, hidden = 40;
  const n = tokens * hidden;
  const x = new Uint16Array(n).map((_, i) => 0x3f80 + ((i * 37) % 200) - 100);
  const r = new Uint16Array(n).map((_, i) => 0xbf00 + ((i * 11) % 90));
  const w = new Uint16Array(hidden).map((_, i) => 0x3f80 + i);
  const wBuf = upload(w);
  // Reference: distinct buffers.
  const refOut = cpu.alloc(2 * n);
  const refRes = upload(r);
  ops.rmsNorm(refOut, upload(x), wBuf, refRes, tokens, hidden, 1e-5, stream);
  // out over x, then out over the residual.
  const xBuf = upload(x);
  ops.rmsNorm(xBuf, xBuf, wBuf, upload(r), tokens, hidden, 1e-5, stream);
  assert.deepEqual(bits16(xBuf, n), bits16(refOut, n));
  const resBuf = upload(r);
  ops.rmsNorm(resBuf, upload(x), wBuf, resBuf, tokens, hidden, 1e-5, stream);
  assert.deepEqual(bits16(resBuf, n), bits16(refOut, n));
  // Plain norm in place.
  const plainRef = cpu.alloc(2 * n);
  ops.rmsNorm(plainRef, upload(x), wBuf, null, tokens, hidden, 1e-5, stream);
  const inPlace = upload(x);
  ops.rmsNorm(inPlace, inPlace, wBuf, null, tokens, hidden, 1e-5, stream);
  assert.deepEqual(bits16(inPlace, n), bits16(plainRef, n));
});

Deno.test("elementwise: ropeInverseFrequencies rejects bad configurations", () => {
  const llama3: Llama3RopeScaling = {
    ropeType: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  assert.equal(ropeInverseFrequencies(128, 500000, llama3).length, 64);
  assert.equal(ropeInverseFrequencies(64, 10000)[0], 1);
  const bad: [string, () => unknown][] = [
    ["headDim", () => ropeInverseFrequencies(63, 10000)],
    ["headDim", () => ropeInverseFrequencies(0, 10000)],
    ["theta", () => ropeInverseFrequencies(64, 0)],
    ["theta", () => ropeInverseFrequencies(64, NaN)],
    ["factor", () => ropeInverseFrequencies(64, 10000, { ...llama3, factor: -1 })],
    ["highFreqFactor", () => ropeInverseFrequencies(64, 10000, { ...llama3, highFreqFactor: 1 })],
  ];
  for (const [name, call] of bad) {
    assert.throws(call, (e: Error) => e instanceof RangeError && e.message.includes(name), name);
  }
});

Deno.test("elementwise: bad sizes throw RangeError naming the op and the argument", () => {
  const b = (bytes: number) => cpu.alloc(bytes);
  const table: RopeTable = { invFreq: b(4 * 32), headDim: 64 };
  const cases: [RegExp, () => void][] = [
    [/^embedding: tokens/, () => ops.embedding(b(64), b(64), b(64), 0, 8, stream)],
    [/^embedding: hidden/, () => ops.embedding(b(64), b(64), b(64), 1, 1.5, stream)],
    [/^embedding: out holds 64 bytes/, () => ops.embedding(b(64), b(4096), b(64), 4, 16, stream)],
    [/^embedding: table/, () => ops.embedding(b(128), b(16), b(64), 4, 16, stream)],
    [/^embedding: ids/, () => ops.embedding(b(128), b(64), b(8), 4, 16, stream)],
    [/^rmsNorm: tokens/, () => ops.rmsNorm(b(64), b(64), b(64), null, -1, 8, 1e-5, stream)],
    [/^rmsNorm: hidden/, () => ops.rmsNorm(b(64), b(64), b(64), null, 1, NaN, 1e-5, stream)],
    [/^rmsNorm: eps/, () => ops.rmsNorm(b(64), b(64), b(64), null, 1, 8, -1, stream)],
    [
      /^rmsNorm: x holds 16 bytes/,
      () => ops.rmsNorm(b(64), b(16), b(64), null, 2, 8, 1e-5, stream),
    ],
    [/^rmsNorm: weight/, () => ops.rmsNorm(b(64), b(64), b(8), null, 2, 8, 1e-5, stream)],
    [/^rmsNorm: residual/, () => ops.rmsNorm(b(64), b(64), b(64), b(8), 2, 8, 1e-5, stream)],
    [/^rmsNorm: x must be 2-byte aligned/, () => {
      ops.rmsNorm(b(64), b(64).slice(1, 32), b(64), null, 2, 8, 1e-5, stream);
    }],
    [/^rope: tokens/, () => ops.rope(b(4096), b(4096), b(64), table, 0, 2, 1, stream)],
    [/^rope: numKvHeads/, () => ops.rope(b(4096), b(4096), b(64), table, 1, 2, 0, stream)],
    [/^rope: table.headDim/, () => {
      ops.rope(b(4096), b(4096), b(64), { ...table, headDim: 63 }, 1, 2, 1, stream);
    }],
    [/^rope: q holds 128 bytes/, () => ops.rope(b(128), b(4096), b(64), table, 1, 2, 1, stream)],
    [/^rope: k/, () => ops.rope(b(4096), b(64), b(64), table, 1, 2, 2, stream)],
    [/^rope: positions/, () => ops.rope(b(4096), b(4096), b(2), table, 1, 2, 1, stream)],
    [/^rope: table.invFreq/, () => {
      ops.rope(b(4096), b(4096), b(64), { invFreq: b(64), headDim: 64 }, 1, 2, 1, stream);
    }],
    [/^siluMul: inter/, () => ops.siluMul(b(64), b(64), 1, 0, stream)],
    [/^siluMul: gateUp/, () => ops.siluMul(b(64), b(64), 2, 16, stream)],
    [/^siluMul: out \(tokens × inter\) is/, () => ops.siluMul(b(64), b(64), 65536, 65536, stream)],
    [/^castF32ToBf16: count/, () => ops.castF32ToBf16(b(64), b(64), 2 ** 31, stream)],
    [/^castF32ToBf16: x holds 64 bytes/, () => ops.castF32ToBf16(b(64), b(64), 32, stream)],
    [/^castBf16ToF32: out holds 64 bytes/, () => ops.castBf16ToF32(b(64), b(64), 32, stream)],
  ];
  for (const [pattern, call] of cases) {
    assert.throws(call, (e: Error) => {
      assert.ok(e instanceof RangeError, `${pattern}: got ${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("elementwise: the CPU ops refuse buffers of another backend", () => {
  const foreign = new DeviceBuffer(0x10000, 64);
  assert.throws(
    () => ops.castBf16ToF32(foreign, cpu.alloc(64), 8, stream),
    (e: Error) => e instanceof TypeError && /castBf16ToF32: out/.test(e.message),
  );
});

/** Whether the fixture has the Qwen ops' cases (generated after tools/fixtures/elementwise.py grew them). */
const QWEN_CASES = "qkNorm" in fixture() && "qkvBias" in fixture();
if (!QWEN_CASES) {
  console.log(
    "elementwise fixture: qkNorm and qkvBias SKIPPED: tests/fixtures/ops/elementwise.json predates " +
      "them; regenerate it with `python3 tools/fixtures/elementwise.py` (torch and transformers)",
  );
}

Deno.test({
  name: "elementwise fixture: qkNorm normalises each head as HF's Qwen3RMSNorm",
  ignore: !QWEN_CASES,
  fn() {
    const c = fixture().qkNorm!;
    const nq = c.tokens * c.numHeads * c.headDim, nk = c.tokens * c.numKvHeads * c.headDim;
    const q = upload(Uint16Array.from(c.q)), k = upload(Uint16Array.from(c.k));
    ops.qkNorm(
      q,
      k,
      upload(Uint16Array.from(c.qWeight)),
      upload(Uint16Array.from(c.kWeight)),
      c.tokens,
      c.numHeads,
      c.numKvHeads,
      c.headDim,
      c.eps,
      stream,
    );
    for (
      const [name, buf, n, want, hf] of [
        ["q", q, nq, c.expectedQ, c.hfBitsQ],
        ["k", k, nk, c.expectedK, c.hfBitsK],
      ] as const
    ) {
      const got = values(buf, n);
      assertElementwise(got, want, 2 ** -7, 1e-6, `qkNorm ${name}`);
      assertNearHf(bits16(buf, n), hf, `qkNorm ${name}`);
    }
  },
});

Deno.test({
  name: "elementwise fixture: qkvBias equals torch's bf16 add",
  ignore: !QWEN_CASES,
  fn() {
    const c = fixture().qkvBias!;
    const q = upload(Uint16Array.from(c.q)), k = upload(Uint16Array.from(c.k));
    const v = upload(Uint16Array.from(c.v));
    ops.qkvBias(q, k, v, upload(Uint16Array.from(c.bias)), c.tokens, c.qWidth, c.kvWidth, stream);
    assert.deepEqual([...bits16(q, c.tokens * c.qWidth)], c.hfBitsQ, "q");
    assert.deepEqual([...bits16(k, c.tokens * c.kvWidth)], c.hfBitsK, "k");
    assert.deepEqual([...bits16(v, c.tokens * c.kvWidth)], c.hfBitsV, "v");
    assertElementwise(values(q, c.tokens * c.qWidth), c.expectedQ, 2 ** -8, 0, "q vs float64");
  },
});

Deno.test("elementwise: qkNorm equals rmsNorm over each head's row, in place", () => {
  // The closed form is rmsNorm's (checked against HF above): q as tokens·heads rows of headDim.
  const tokens = 3, heads = 4, kvHeads = 2, headDim = 64, eps = 1e-6;
  const qBits = encodeBf16(randomArray(tokens * heads * headDim, 1, -3, 3));
  const kBits = encodeBf16(randomArray(tokens * kvHeads * headDim, 2, -3, 3));
  const qw = upload(encodeBf16(randomArray(headDim, 3, 0.5, 1.5)));
  const kw = upload(encodeBf16(randomArray(headDim, 4, 0.5, 1.5)));
  const q = upload(qBits), k = upload(kBits);
  ops.qkNorm(q, k, qw, kw, tokens, heads, kvHeads, headDim, eps, stream);
  const wantQ = cpu.alloc(qBits.byteLength), wantK = cpu.alloc(kBits.byteLength);
  ops.rmsNorm(wantQ, upload(qBits), qw, null, tokens * heads, headDim, eps, stream);
  ops.rmsNorm(wantK, upload(kBits), kw, null, tokens * kvHeads, headDim, eps, stream);
  assert.deepEqual(bits16(q, qBits.length), bits16(wantQ, qBits.length), "q");
  assert.deepEqual(bits16(k, kBits.length), bits16(wantK, kBits.length), "k");
  // Unit RMS per head after the norm (weights aside): the norm did run.
  const normed = values(q, headDim), w = values(qw, headDim);
  let ss = 0;
  for (let i = 0; i < headDim; i++) ss += (normed[i] / w[i]) ** 2;
  assert.ok(Math.abs(Math.sqrt(ss / headDim) - 1) < 2e-2, `rms ${Math.sqrt(ss / headDim)}`);
});

Deno.test("elementwise: qkvBias adds each slice of the bias to its own tensor", () => {
  const tokens = 2, qWidth = 8, kvWidth = 4;
  const q = upload(encodeBf16(new Float32Array(tokens * qWidth).fill(1)));
  const k = upload(encodeBf16(new Float32Array(tokens * kvWidth).fill(2)));
  const v = upload(encodeBf16(new Float32Array(tokens * kvWidth).fill(3)));
  const bias = Float32Array.from({ length: qWidth + 2 * kvWidth }, (_, i) => i / 4);
  ops.qkvBias(q, k, v, upload(encodeBf16(bias)), tokens, qWidth, kvWidth, stream);
  const row = (n: number, base: number, from: number) =>
    Array.from({ length: tokens * n }, (_, i) => base + bias[from + (i % n)]);
  assert.deepEqual([...values(q, tokens * qWidth)], row(qWidth, 1, 0));
  assert.deepEqual([...values(k, tokens * kvWidth)], row(kvWidth, 2, qWidth));
  assert.deepEqual([...values(v, tokens * kvWidth)], row(kvWidth, 3, qWidth + kvWidth));
});

Deno.test("elementwise: qkNorm and qkvBias reject bad sizes, naming the op and argument", () => {
  const small = cpu.alloc(16);
  assert.throws(
    () => ops.qkNorm(small, small, small, small, 1, 4, 2, 64, 1e-6, stream),
    /qkNorm: q holds 16 bytes/,
  );
  assert.throws(
    () => ops.qkNorm(small, small, small, small, 1, 1, 1, 4, -1, stream),
    /qkNorm: eps must be/,
  );
  assert.throws(() => ops.qkNorm(small, small, small, small, 0, 1, 1, 4, 0, stream), /tokens/);
  assert.throws(
    () => ops.qkvBias(small, small, small, small, 1, 8, 0, stream),
    /qkvBias: kvWidth must be/,
  );
  assert.throws(
    () => ops.qkvBias(small, small, small, small, 1, 8, 2, stream),
    /qkvBias: bias holds 16 bytes but qWidth \+ 2·kvWidth bf16 needs 24/,
  );
});

/** qkvRope's reference in float64: bias, per-head RMSNorm, rotate_half, no roundings. */
function qkvRopeFloat64(
  row: Float32Array,
  bias: Float32Array | null,
  norms: [Float32Array, Float32Array] | null,
  heads: number,
  kvHeads: number,
  d: number,
  angles: number[],
): number[] {
  const out: number[] = [];
  for (let r = 0; r < heads + 2 * kvHeads; r++) {
    let x = Array.from({ length: d }, (_, i) => row[r * d + i] + (bias ? bias[r * d + i] : 0));
    const isV = r >= heads + kvHeads;
    if (!isV && norms) {
      const w = r < heads ? norms[0] : norms[1];
      const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / d + 1e-6);
      x = x.map((v, i) => w[i] * v / rms);
    }
    if (!isV) {
      const half = d / 2;
      x = x.map((v, i) => {
        const a = angles[i % half], c = Math.cos(a), s = Math.sin(a);
        return i < half ? v * c - x[i + half] * s : v * c + x[i - half] * s;
      });
    }
    out.push(...x);
  }
  return out;
}

Deno.test("elementwise: qkvRope splits the fused row and applies bias, q/k norms and RoPE", () => {
  const tokens = 3, heads = 4, kvHeads = 2, d = 16, width = (heads + 2 * kvHeads) * d;
  const invFreq = ropeInverseFrequencies(d, 10000);
  const positions = [5, 0, 1234];
  // bf16-exact inputs, so the float64 reference starts from the op's own values.
  const exact = (x: Float32Array) => decodeBf16(encodeBf16(x));
  const qkvValues = exact(randomArray(tokens * width, 11, -2, 2));
  const biasValues = exact(randomArray(width, 12, -0.5, 0.5));
  const qn = exact(randomArray(d, 13, 0.5, 1.5)), kn = exact(randomArray(d, 14, 0.5, 1.5));
  for (const [withBias, withNorm] of [[false, false], [true, false], [false, true], [true, true]]) {
    const what = `bias=${withBias} norm=${withNorm}`;
    const table = createRopeTable(cpu, invFreq);
    const q = cpu.alloc(2 * tokens * heads * d), k = cpu.alloc(2 * tokens * kvHeads * d);
    const v = cpu.alloc(2 * tokens * kvHeads * d);
    ops.qkvRope({
      q,
      k,
      v,
      qkv: upload(encodeBf16(qkvValues)),
      positions: upload(Int32Array.from(positions)),
      table,
      bias: withBias ? upload(encodeBf16(biasValues)) : null,
      qNorm: withNorm ? upload(encodeBf16(qn)) : null,
      kNorm: withNorm ? upload(encodeBf16(kn)) : null,
      eps: 1e-6,
      tokens,
      numHeads: heads,
      numKvHeads: kvHeads,
    }, stream);
    const gq = values(q, tokens * heads * d), gk = values(k, tokens * kvHeads * d);
    const gv = values(v, tokens * kvHeads * d);
    for (let t = 0; t < tokens; t++) {
      const angles = [...invFreq].map((f) => Math.fround(positions[t] * f));
      const ref = qkvRopeFloat64(
        qkvValues.subarray(t * width, (t + 1) * width),
        withBias ? biasValues : null,
        withNorm ? [qn, kn] : null,
        heads,
        kvHeads,
        d,
        angles,
      );
      const qd = heads * d, kd = kvHeads * d;
      const got = [
        ...gq.subarray(t * qd, (t + 1) * qd),
        ...gk.subarray(t * kd, (t + 1) * kd),
        ...gv.subarray(t * kd, (t + 1) * kd),
      ];
      // Up to three bf16 roundings on the way (bias, norm twice, rotation).
      assertClose(got, ref, 1e-2, `qkvRope ${what} token ${t}`);
      assertElementwise(got, ref, 2 ** -6, 2e-2, `qkvRope ${what} token ${t}`);
    }
  }
});

Deno.test("elementwise: qkvRope rejects bad arguments, naming the op and the remedy", () => {
  const table = createRopeTable(cpu, ropeInverseFrequencies(8, 10000));
  const big = cpu.alloc(4096), small = cpu.alloc(16);
  const args = {
    q: big,
    k: big,
    v: big,
    qkv: big,
    positions: big,
    table,
    bias: null,
    qNorm: null,
    kNorm: null,
    eps: 1e-6,
    tokens: 2,
    numHeads: 2,
    numKvHeads: 1,
  };
  ops.qkvRope(args, stream); // the sizes above suffice
  assert.throws(() => ops.qkvRope({ ...args, qkv: small }, stream), /qkvRope: qkv holds 16 bytes/);
  assert.throws(() => ops.qkvRope({ ...args, v: small }, stream), /qkvRope: v holds 16 bytes/);
  assert.throws(() => ops.qkvRope({ ...args, q: small }, stream), /qkvRope: q holds 16 bytes/);
  assert.throws(
    () => ops.qkvRope({ ...args, bias: small }, stream),
    /qkvRope: bias holds 16 bytes but \(numHeads \+ 2·numKvHeads\)·headDim bf16 needs 64/,
  );
  assert.throws(
    () => ops.qkvRope({ ...args, qNorm: big }, stream),
    /qkvRope: qNorm and kNorm go together .* pass both or neither/,
  );
  assert.throws(
    () => ops.qkvRope({ ...args, qNorm: big, kNorm: big, eps: -1 }, stream),
    /qkvRope: eps must be/,
  );
  assert.throws(() => ops.qkvRope({ ...args, tokens: 0 }, stream), /qkvRope: tokens must be/);
});
