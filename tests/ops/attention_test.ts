/**
 * The CPU attention ops against the torch float64 fixture (tools/fixtures/attention.py): kvWrite
 * scatters into a paged cache with shuffled block tables and skips a padding slot; decode and
 * prefill (with a cached prefix) read that cache. Also the argument checks.
 *
 * Tolerance: the inputs are exact bf16 values and the CPU computes in fp32 or wider, so its only
 * real error is rounding each output to bf16 once: at most 2^-9 ≈ 1.95e-3 relative per element,
 * hence at most that in the ‖out − ref‖ / ‖ref‖ norm. 4e-3 leaves room for fp32 summation noise
 * (~1e-6) and nothing else: a wrong mask, head or block shows as errors of order 1e-1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuAttentionOps } from "../../ops/cpu/attention.ts";
import type { AttentionShape, DecodeAttentionArgs, PrefillAttentionArgs } from "../../ops/ops.ts";
import { assertClose } from "../support/numeric.ts";
import { readBf16 } from "../support/device.ts";

const TOLERANCE = 4e-3;
const FIXTURE = new URL("../fixtures/ops/attention.json", import.meta.url);

interface Fixture {
  shape: AttentionShape;
  numBlocks: number;
  maxBlocks: number;
  blockTables: number[];
  kvWrite: {
    tokens: number;
    k: number[];
    v: number[];
    slots: number[];
    kCache: number[];
    vCache: number[];
  };
  decode: {
    batch: number;
    maxContext: number;
    contextLens: number[];
    q: number[];
    out: number[];
  };
  prefill: {
    seqs: number;
    tokens: number;
    queryStarts: number[];
    contextLens: number[];
    q: number[];
    out: number[];
  };
}

function loadFixture(): Fixture {
  let text: string;
  try {
    text = Deno.readTextFileSync(FIXTURE);
  } catch (error) {
    throw new Error(
      `missing ${FIXTURE.pathname}: generate it with \`python3 tools/fixtures/attention.py\` ` +
        `(needs torch) — ${(error as Error).message}`,
    );
  }
  return JSON.parse(text) as Fixture;
}

const cpu = new CpuBackend();
const ops = cpuAttentionOps();
const stream = cpu.defaultStream;

function upload16(values: readonly number[]) {
  const buffer = cpu.alloc(Math.max(16, values.length * 2));
  cpu.copyToDevice(buffer, Uint16Array.from(values));
  return buffer;
}

function uploadI32(values: readonly number[]) {
  const buffer = cpu.alloc(Math.max(16, values.length * 4));
  cpu.copyToDevice(buffer, Int32Array.from(values));
  return buffer;
}

Deno.test("cpu kvWrite matches the fixture's scatter and skips the padding slot", () => {
  const fx = loadFixture();
  const { shape, kvWrite: w } = fx;
  const cacheElems = fx.numBlocks * shape.numKvHeads * shape.blockSize * shape.headDim;
  const kCache = cpu.alloc(cacheElems * 2), vCache = cpu.alloc(cacheElems * 2);
  ops.kvWrite(
    kCache,
    vCache,
    upload16(w.k),
    upload16(w.v),
    uploadI32(w.slots),
    w.tokens,
    shape,
    stream,
  );
  const got = new Uint16Array(cacheElems);
  cpu.copyToHost(got, kCache);
  assert.deepEqual(Array.from(got), w.kCache, "kCache");
  cpu.copyToHost(got, vCache);
  assert.deepEqual(Array.from(got), w.vCache, "vCache");
});

Deno.test("cpu decodeAttention matches the float64 reference", () => {
  const fx = loadFixture();
  const { shape, decode: d } = fx;
  const out = cpu.alloc(d.q.length * 2);
  cpu.memset(out, 0xff);
  ops.decodeAttention({
    out,
    q: upload16(d.q),
    kCache: upload16(fx.kvWrite.kCache),
    vCache: upload16(fx.kvWrite.vCache),
    blockTables: uploadI32(fx.blockTables),
    contextLens: uploadI32(d.contextLens),
    batch: d.batch,
    maxBlocks: fx.maxBlocks,
    maxContext: d.maxContext,
    shape,
    workspace: cpu.alloc(ops.decodeWorkspaceBytes(d.batch, d.maxContext, shape)),
  }, stream);
  assertClose(readBf16(cpu, out, d.out.length), d.out, TOLERANCE, "decode");
});

Deno.test("cpu prefillAttention (one sequence with a cached prefix) matches the reference", () => {
  const fx = loadFixture();
  const { shape, prefill: p } = fx;
  const out = cpu.alloc(p.q.length * 2);
  cpu.memset(out, 0xff);
  ops.prefillAttention({
    out,
    q: upload16(p.q),
    kCache: upload16(fx.kvWrite.kCache),
    vCache: upload16(fx.kvWrite.vCache),
    queryStarts: uploadI32(p.queryStarts),
    contextLens: uploadI32(p.contextLens),
    blockTables: uploadI32(fx.blockTables),
    seqs: p.seqs,
    tokens: p.tokens,
    maxBlocks: fx.maxBlocks,
    shape,
  }, stream);
  const got = readBf16(cpu, out, p.out.length);
  assertClose(got, p.out, TOLERANCE, "prefill");
  // Each sequence on its own, so an error confined to the prefixed one cannot hide.
  const split = p.queryStarts[1] * shape.numHeads * shape.headDim;
  assertClose(got.subarray(0, split), p.out.slice(0, split), TOLERANCE, "prefill seq 0");
  assertClose(got.subarray(split), p.out.slice(split), TOLERANCE, "prefill seq 1 (prefix)");
});

Deno.test("cpu decode of a one-token context returns that token's value row", () => {
  const shape: AttentionShape = { numHeads: 4, numKvHeads: 2, headDim: 8, blockSize: 4, scale: 1 };
  const v = Array.from({ length: 2 * 4 * 2 * 8 }, (_, i) => 0x3f80 + (i % 64)); // exact bf16s
  const kCache = upload16(v.map(() => 0x4000)), vCache = upload16(v);
  const out = cpu.alloc(4 * 8 * 2);
  // Block table points at block 1: the value row of KV head h is vCache[1, h, 0, :].
  ops.decodeAttention({
    out,
    q: upload16(new Array(32).fill(0x3f80)),
    kCache,
    vCache,
    blockTables: uploadI32([1]),
    contextLens: uploadI32([1]),
    batch: 1,
    maxBlocks: 1,
    maxContext: 1,
    shape,
    workspace: cpu.alloc(16),
  }, stream);
  const got = new Uint16Array(32);
  cpu.copyToHost(got, out);
  for (let h = 0; h < 4; h++) {
    const src = ((1 * 2 + (h >> 1)) * 4 + 0) * 8;
    assert.deepEqual(
      Array.from(got.subarray(h * 8, h * 8 + 8)),
      v.slice(src, src + 8),
      `head ${h}`,
    );
  }
});

Deno.test("cpu attention ops reject bad sizes with a RangeError naming the op", () => {
  const shape: AttentionShape = {
    numHeads: 8,
    numKvHeads: 2,
    headDim: 16,
    blockSize: 16,
    scale: 0.25,
  };
  const small = cpu.alloc(64), cache = cpu.alloc(2 * 16 * 16 * 2 * 4);
  // Each case changes one argument of an otherwise valid-sized call (q stays too small).
  const decode = (changed: Partial<DecodeAttentionArgs>) => () =>
    ops.decodeAttention({
      out: small,
      q: small,
      kCache: cache,
      vCache: cache,
      blockTables: small,
      contextLens: small,
      batch: 1,
      maxBlocks: 1,
      maxContext: 16,
      shape,
      workspace: small,
      ...changed,
    }, stream);
  const prefill = (changed: Partial<PrefillAttentionArgs>) => () =>
    ops.prefillAttention({
      out: cache,
      q: cache,
      kCache: cache,
      vCache: cache,
      queryStarts: small,
      contextLens: small,
      blockTables: small,
      seqs: 1,
      tokens: 1,
      maxBlocks: 1,
      shape,
      ...changed,
    }, stream);
  const cases: [string, () => void, RegExp][] = [
    [
      "kvWrite tokens 0",
      () => ops.kvWrite(cache, cache, small, small, small, 0, shape, stream),
      /^kvWrite: tokens must be a positive integer/,
    ],
    [
      "kvWrite k too small",
      () => ops.kvWrite(cache, cache, small, small, small, 4, shape, stream),
      /^kvWrite: k has 64 bytes, needs 256/,
    ],
    [
      "kvWrite cache smaller than a block",
      () => ops.kvWrite(small, small, small, small, small, 1, shape, stream),
      /^kvWrite: kCache has 64 bytes, needs 1024/,
    ],
    [
      "decode heads not a multiple",
      decode({ maxContext: 1, shape: { ...shape, numKvHeads: 3 } }),
      /^decodeAttention: shape.numHeads \(8\) must be a multiple of shape.numKvHeads \(3\)/,
    ],
    [
      "decode maxContext past the table",
      decode({ maxContext: 17 }),
      /^decodeAttention: maxContext 17 exceeds maxBlocks × blockSize/,
    ],
    [
      "decode q too small",
      decode({}),
      /^decodeAttention: q has 64 bytes, needs 256/,
    ],
    [
      "decode batch fractional",
      decode({ batch: 1.5 }),
      /^decodeAttention: batch must be a positive integer/,
    ],
    [
      "prefill queryStarts too small",
      prefill({ seqs: 16 }),
      /^prefillAttention: queryStarts has 64 bytes, needs 68/,
    ],
    [
      "prefill seqs 0",
      prefill({ seqs: 0 }),
      /^prefillAttention: seqs must be a positive integer/,
    ],
    [
      "workspace bytes with a NaN scale",
      () => ops.decodeWorkspaceBytes(1, 16, { ...shape, scale: NaN }),
      /^decodeWorkspaceBytes: shape.scale must be a finite number/,
    ],
  ];
  for (const [what, call, message] of cases) {
    assert.throws(call, (e: Error) => e instanceof RangeError && message.test(e.message), what);
  }
});
