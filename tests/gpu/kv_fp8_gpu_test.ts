/**
 * The FP8 (E4M3) KV cache kernels on a real GPU against the CPU backend (`deno task test:gpu`):
 * kv_write_fp8 bit for bit (every finite bf16 value, several scales), decode and prefill
 * attention over an fp8 cache, and the tiny engine with `kvCacheDtype: "fp8"`. GPU outputs and
 * workspaces are poisoned with 0xff (NaN) first, so an element the kernels forget to write
 * cannot pass.
 *
 * kvWrite: the kernel divides in IEEE f32 and rounds to E4M3 as backends/fp8.ts does, so the
 * cache bytes must be equal, written slots and untouched ones alike.
 *
 * Attention, tolerance 1e-2 (‖gpu − cpu‖ / ‖cpu‖, bf16 outputs), the bf16 attention test's bound
 * (tests/gpu/attention_gpu_test.ts): both sides read each code as the same f32 (code · scale, an
 * exact f32 product when the scale is an f32; the CPU rounds the double product of two f32s to
 * f32, the same number), so decode differs from the CPU only in summation order and the final
 * bf16 rounding, as bf16 decode does. Prefill widens K and V to bf16 on their way into shared
 * memory: code · scale has at most 4 + 24 significant bits, so that rounding is exact for a
 * power-of-two scale and within 2^-9 relative per element otherwise (the cases use 3, to see
 * it), which moves each score by at most 2^-9 · Σ|q · k| and each output by 2^-9 of its norm,
 * on top of the P rounding the bf16 tensor-core prefill already has. A code read as bf16 bits,
 * a lost or swapped scale, or a wrong block gives errors of order 1.
 *
 * Engine: logits of the tiny checkpoint with an fp8 cache on CUDA against the CPU engine with an
 * fp8 cache, relative L2 ≤ 2e-2, the bf16 engine's GPU-vs-CPU bound (tests/gpu/fp8_gpu_test.ts):
 * both quantize the same K/V values, except where the GPU's bf16 K/V (from its own GEMMs) differ
 * by a bf16 ulp and round to a neighbouring code, an error of the same order as those ulps.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { encodeBf16 } from "../../backends/bf16.ts";
import { openCuda } from "../../backends/cuda.ts";
import { quantizeE4m3 } from "../../backends/fp8.ts";
import { Engine, type EngineOptions } from "../../engine/engine.ts";
import { cpuAttentionOps } from "../../ops/cpu/attention.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { loadElementwiseOps } from "../../ops/gpu/elementwise.ts";
import { createRopeTable, ropeInverseFrequencies } from "../../models/rope.ts";
import { type AttentionKernelOptions, loadAttentionOps } from "../../ops/gpu/attention.ts";
import type { AttentionOps, AttentionShape } from "../../ops/ops.ts";
import {
  COMPRESSED_TENSORS,
  KV_SCHEME,
  withKvScales,
  writeFp8Checkpoint,
} from "../support/fp8_checkpoint.ts";
import {
  assertDecodeRowsClose,
  assertSequencesClose,
  randomArray,
  relativeError,
} from "../support/numeric.ts";
import { pagedTables, shuffled } from "../support/paged_tables.ts";
import { PairedBuffers, sideOf } from "../support/paired_buffers.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");
const TOLERANCE = 1e-2;
const ENGINE_TOLERANCE = 2e-2;
const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;

/** The GPU's launch variants: default, plain decode launches, portable and one-stage prefill. */
const VARIANTS: [string, AttentionKernelOptions][] = [
  ["default", {}],
  ["plain launch", { programmatic: false }],
  ["portable prefill", { prefill: "simt" }],
  ["one-stage prefill", { prefill: "one-stage" }],
];

/** Both backends, with one buffer list each, freed by `release`. */
class Env extends PairedBuffers {
  readonly cpuOps = cpuAttentionOps();
}

function gpuTest(name: string, body: (env: Env) => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false }, async () => {
    const gpu = openCuda();
    try {
      const env = new Env(gpu);
      try {
        await body(env);
      } finally {
        env.release();
      }
    } finally {
      gpu.close();
    }
  });
}

function fp8Shape(
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  blockSize: number,
  kScale: number,
  vScale: number,
): AttentionShape {
  const scale = 1 / Math.sqrt(headDim);
  return { numHeads, numKvHeads, headDim, blockSize, scale, kvDtype: "fp8", kScale, vScale };
}

/** E4M3 codes of random values in [-2, 2] quantized with `scale`: what kvWrite would store. */
function randomCodes(n: number, seed: number, scale: number): Uint8Array {
  const values = randomArray(n, seed, -2, 2);
  return Uint8Array.from(values, (x) => quantizeE4m3(x, scale));
}

type Pair = { g: DeviceBuffer; c: DeviceBuffer };

/**
 * An fp8 cache pair for `tokens` new rows: slots scattered over its blocks, one padding (-1) and
 * one past the cache (those write nothing), and the same random bytes on both sides, so untouched
 * slots compare too.
 */
function scatteredCache(env: Env, shape: AttentionShape, tokens: number, seed: number) {
  const row = shape.numKvHeads * shape.headDim;
  const numBlocks = Math.ceil(tokens / shape.blockSize) + 2;
  const slotsArr = Int32Array.from(shuffled(numBlocks * shape.blockSize, seed).slice(0, tokens));
  slotsArr[1] = -1;
  slotsArr[2] = numBlocks * shape.blockSize;
  const cacheBytes = numBlocks * row * shape.blockSize;
  const init = Uint8Array.from(randomArray(cacheBytes, seed + 4, 0, 255), (x) => x & 0xff);
  return { kCache: env.pair(init), vCache: env.pair(init), slots: env.pair(slotsArr), cacheBytes };
}

/** Asserts both caches hold the same bytes on the GPU as on the CPU, naming the first that differs. */
function assertSameCaches(env: Env, kCache: Pair, vCache: Pair, bytes: number, what: string) {
  for (const [name, cache] of [["K", kCache], ["V", vCache]] as const) {
    const { g, c } = env.bytesOf(cache, bytes);
    const first = g.findIndex((x, i) => x !== c[i]);
    assert.equal(
      first,
      -1,
      `${what}: ${name} cache byte ${first} is 0x${g[first]?.toString(16)}, not 0x${
        c[first]?.toString(16)
      }`,
    );
  }
}

/** Every bf16 bit pattern but the NaNs (exponent all ones, mantissa non-zero). */
function everyFiniteBf16(): Uint16Array {
  const out: number[] = [];
  for (let bits = 0; bits < 65536; bits++) {
    if ((bits & 0x7f80) !== 0x7f80 || (bits & 0x7f) === 0) out.push(bits);
  }
  return Uint16Array.from(out);
}

gpuTest(
  "kv_write_fp8 matches the CPU's kvWrite bit for bit on every finite bf16 value",
  async (env) => {
    const gpuOps = await loadAttentionOps(env.gpu);
    const values = everyFiniteBf16(); // ±448 and beyond, infinities, subnormals, ±0
    // Powers of two, and f32 scales whose division rounds (a reciprocal multiply would differ).
    const scales: [number, number][] = [[1, 1], [0.5, 4], [Math.fround(0.1), Math.fround(1.7)]];
    for (const headDim of [64, 128]) {
      for (const [kScale, vScale] of scales) {
        const shape = fp8Shape(16, 8, headDim, 16, kScale, vScale);
        const row = shape.numKvHeads * headDim;
        const tokens = Math.ceil(values.length / row);
        const k = new Uint16Array(tokens * row), v = new Uint16Array(tokens * row);
        for (let i = 0; i < k.length; i++) {
          k[i] = values[i % values.length];
          v[i] = values[(i * 7919 + 13) % values.length];
        }
        const { kCache, vCache, slots, cacheBytes } = scatteredCache(env, shape, tokens, 7);
        const kb = env.pair(k), vb = env.pair(v);
        gpuOps.kvWrite(kCache.g, vCache.g, kb.g, vb.g, slots.g, tokens, shape, env.stream);
        env.cpuOps.kvWrite(
          kCache.c,
          vCache.c,
          kb.c,
          vb.c,
          slots.c,
          tokens,
          shape,
          env.cpu.defaultStream,
        );
        assertSameCaches(env, kCache, vCache, cacheBytes, `d${headDim} scales ${kScale}/${vScale}`);
        env.release();
      }
    }
  },
);

gpuTest(
  "qkvRope writing an fp8 cache stores kv_write_fp8's codes, bit for bit, and skips bad slots",
  async (env) => {
    const elementwise = await loadElementwiseOps(env.gpu);
    const cpuModel = cpuOps();
    // v passes through qkvRope untouched: every finite bf16 value, infinities included. k is
    // rotated, by the identity at position 0 (cos 1, sin 0 on both sides), so it gets the finite
    // values only (inf · 0 would make NaN).
    const values = everyFiniteBf16();
    const finite = values.filter((b) => (b & 0x7f80) !== 0x7f80);
    for (const headDim of [64, 128]) {
      const [kScale, vScale] = [Math.fround(0.1), Math.fround(1.7)];
      const shape = fp8Shape(16, 8, headDim, 16, kScale, vScale);
      const row = shape.numKvHeads * headDim, qRow = shape.numHeads * headDim;
      const width = qRow + 2 * row;
      const tokens = Math.ceil(values.length / row);
      const qkv = new Uint16Array(tokens * width);
      for (let t = 0; t < tokens; t++) {
        for (let i = 0; i < qRow; i++) qkv[t * width + i] = finite[(t * qRow + i) % finite.length];
        for (let i = 0; i < row; i++) {
          qkv[t * width + qRow + i] = finite[(t * row + i) % finite.length];
          qkv[t * width + qRow + row + i] = values[((t * row + i) * 7919 + 13) % values.length];
        }
      }
      const { kCache, vCache, slots, cacheBytes } = scatteredCache(env, shape, tokens, 9);
      const src = env.pair(qkv), positions = env.pair(new Int32Array(tokens));
      const q = env.output(2 * tokens * qRow), k = env.output(2 * tokens * row);
      const v = env.output(2 * tokens * row);
      const inv = ropeInverseFrequencies(headDim, 10000);
      const tables = { g: createRopeTable(env.gpu, inv), c: createRopeTable(env.cpu, inv) };
      for (const side of ["g", "c"] as const) {
        const ops = side === "g" ? elementwise : cpuModel;
        ops.qkvRope({
          q: q[side],
          k: k[side],
          v: v[side],
          qkv: src[side],
          positions: positions[side],
          table: tables[side],
          bias: null,
          qNorm: null,
          kNorm: null,
          eps: 1e-6,
          tokens,
          numHeads: shape.numHeads,
          numKvHeads: shape.numKvHeads,
          cache: { kCache: kCache[side], vCache: vCache[side], slots: slots[side], shape },
        }, side === "g" ? env.stream : env.cpu.defaultStream);
      }
      assertSameCaches(env, kCache, vCache, cacheBytes, `qkvRope d${headDim}`);
      env.gpu.free(tables.g.invFreq);
      env.cpu.free(tables.c.invFreq);
      env.release();
    }
  },
);

interface DecodeCase {
  shape: AttentionShape;
  contexts: number[];
}

/** Head dims, group sizes (1, 2, 4, 8, a padded 3, two chunks of 8) and contexts over partitions. */
const DECODE_CASES: DecodeCase[] = [
  { shape: fp8Shape(32, 8, 128, 16, 0.5, 3), contexts: [1, 37, 700, 2100] },
  { shape: fp8Shape(32, 8, 128, 16, 1, 1), contexts: [5000] },
  { shape: fp8Shape(8, 8, 64, 16, 0.25, 2), contexts: [15, 16, 17, 1500] },
  { shape: fp8Shape(16, 8, 64, 32, 2, 0.5), contexts: [3, 900, 64] },
  { shape: fp8Shape(16, 2, 64, 16, 1, 3), contexts: [333, 4097] },
  { shape: fp8Shape(12, 4, 128, 16, 0.5, 1), contexts: [129, 2] },
  { shape: fp8Shape(32, 2, 128, 16, 3, 0.5), contexts: [640, 1] },
  // Head dim 128 with one and two query heads a block (every d128 kernel instance runs).
  { shape: fp8Shape(8, 8, 128, 16, 1, 2), contexts: [300, 33] },
  { shape: fp8Shape(16, 8, 128, 16, 2, 0.5), contexts: [77, 1030] },
];

/**
 * Random fp8 K and V caches holding `contexts` behind shuffled block tables, and a random q of
 * `rows` tokens, each on both devices.
 */
function pagedInputs(
  env: Env,
  shape: AttentionShape,
  contexts: readonly number[],
  maxBlocks: number,
  rows: number,
  seed: number,
) {
  const { numHeads, numKvHeads, headDim, blockSize } = shape;
  const { table, numBlocks } = pagedTables(contexts, blockSize, maxBlocks, seed);
  const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
  return {
    kCache: env.pair(randomCodes(cacheElems, seed + 1, shape.kScale!)),
    vCache: env.pair(randomCodes(cacheElems, seed + 2, shape.vScale!)),
    q: env.pair(encodeBf16(randomArray(rows * numHeads * headDim, seed + 3, -2, 2))),
    tablesBuf: env.pair(table),
  };
}

function runDecode(env: Env, ops: AttentionOps, c: DecodeCase, seed: number, what: string) {
  const { shape, contexts } = c;
  const { numHeads, headDim, blockSize } = shape;
  const batch = contexts.length;
  const maxContext = Math.max(...contexts);
  const maxBlocks = Math.ceil(maxContext / blockSize) + 1;
  const { kCache, vCache, q, tablesBuf } = pagedInputs(
    env,
    shape,
    contexts,
    maxBlocks,
    batch,
    seed,
  );
  const lens = env.pair(Int32Array.from(contexts));
  const count = batch * numHeads * headDim;
  const out = env.output(count * 2);
  const workspace = env.output(ops.decodeWorkspaceBytes(batch, maxContext, shape)).g;
  const args = { batch, maxBlocks, maxContext, shape };
  const buffers = { out, q, kCache, vCache, blockTables: tablesBuf, contextLens: lens };
  ops.decodeAttention({ ...args, ...sideOf(buffers, "g"), workspace }, env.stream);
  env.cpuOps.decodeAttention(
    { ...args, ...sideOf(buffers, "c"), workspace: env.output(16).c },
    env.cpu.defaultStream,
  );
  const { g, c: ref } = env.bytesOf(out, count * 2);
  const got = new Uint16Array(g.buffer), want = new Uint16Array(ref.buffer);
  assertDecodeRowsClose(got, want, contexts, numHeads * headDim, TOLERANCE, what);
}

/** A decode target of under one block: decodePartSize then takes its full-device branch. */
const LONG_PARTITIONS = 1 / 1024;

gpuTest("fp8-cache decode attention matches the CPU's", async (env) => {
  // The fma kernels launched both ways, then the default (auto: the tensor-core kernels on an
  // FP8 cache), then each family with a partition target so small that every batch counts as
  // filling the device: one block takes a whole sequence up to 2048 tokens (the fma kernels in
  // chunks of 512: the path of batches of 66+ sequences).
  const fma = { decodeKernel: "fma" } as const;
  const decodeVariants: [string, AttentionKernelOptions][] = [
    ["fma", fma],
    ["fma plain launch", { ...fma, programmatic: false }],
    ["default (tensor cores)", {}],
    ["fma long partitions", { ...fma, decodeBlocksPerSm: LONG_PARTITIONS }],
    ["tensor-core long partitions", { decodeKernel: "mma", decodeBlocksPerSm: LONG_PARTITIONS }],
    // The d128 kernels for three blocks an SM (q in registers), the default's before session 25.
    ["tensor cores, three blocks an SM", { decodeKernel: "mma", decodeMmaBlocks: 3 }],
    [
      "tensor cores, three blocks an SM, long partitions",
      { decodeKernel: "mma", decodeMmaBlocks: 3, decodeBlocksPerSm: LONG_PARTITIONS },
    ],
  ];
  for (const [variant, options] of decodeVariants) {
    const ops = await loadAttentionOps(env.gpu, options);
    DECODE_CASES.forEach((c, i) => {
      const { numHeads, numKvHeads, headDim, blockSize, kScale, vScale } = c.shape;
      const what = `${variant} decode ${numHeads}/${numKvHeads} d${headDim} block ${blockSize} ` +
        `scales ${kScale}/${vScale} contexts ${c.contexts}`;
      runDecode(env, ops, c, 100 + i, what);
      env.release();
    });
  }
});

gpuTest("fp8-cache decode attention with the ragged split matches the CPU's", async (env) => {
  // One block an SM: a batch of ceil(SMs / 8) sequences of 8 head blocks reaches the target, so
  // the kernel sizes the partitions from the contexts (a 2000-token one among short ones splits).
  // Both families split (the mma kernels, the default's on an FP8 cache, since session 25).
  const batch = Math.ceil(env.gpu.info.multiprocessors / 8);
  const contexts = Array.from({ length: batch }, (_, i) => i === 0 ? 2000 : 1 + ((i * 53) % 120));
  const c: DecodeCase = { shape: fp8Shape(32, 8, 128, 16, 0.5, 3), contexts };
  const variants: [string, AttentionKernelOptions][] = [
    ["fma", { decodeKernel: "fma" }],
    ["mma", { decodeKernel: "mma" }],
    ["mma at three blocks an SM", { decodeKernel: "mma", decodeMmaBlocks: 3 }],
  ];
  for (const [variant, options] of variants) {
    // The mma split pinned on, whatever DENALI_DECODE_RAGGED_MMA says.
    const ops = await loadAttentionOps(env.gpu, {
      ...options,
      decodeBlocksPerSm: 1,
      decodeRaggedMma: true,
    });
    runDecode(env, ops, c, 900, `ragged split on ${variant}, batch ${batch}`);
    env.release();
  }
});

interface PrefillCase {
  shape: AttentionShape;
  newTokens: number[];
  prefixes: number[];
}

const PREFILL_CASES: PrefillCase[] = [
  { shape: fp8Shape(32, 8, 128, 16, 0.5, 3), newTokens: [1, 70, 130], prefixes: [0, 100, 20] },
  { shape: fp8Shape(8, 8, 64, 16, 1, 1), newTokens: [64, 65, 3], prefixes: [0, 63, 400] },
  { shape: fp8Shape(16, 2, 64, 32, 2, 0.25), newTokens: [200], prefixes: [37] },
  { shape: fp8Shape(12, 4, 128, 16, 3, 0.5), newTokens: [9, 128], prefixes: [700, 0] },
];

function runPrefill(env: Env, ops: AttentionOps, c: PrefillCase, seed: number, what: string) {
  const { shape, newTokens, prefixes } = c;
  const { numHeads, headDim, blockSize } = shape;
  const seqs = newTokens.length;
  const contexts = newTokens.map((n, s) => n + prefixes[s]);
  const starts = new Int32Array(seqs + 1);
  for (let s = 0; s < seqs; s++) starts[s + 1] = starts[s] + newTokens[s];
  const tokens = starts[seqs];
  const maxBlocks = Math.ceil(Math.max(...contexts) / blockSize) + 1;
  const { kCache, vCache, q, tablesBuf: blockTables } = pagedInputs(
    env,
    shape,
    contexts,
    maxBlocks,
    tokens,
    seed,
  );
  const queryStarts = env.pair(starts);
  const contextLens = env.pair(Int32Array.from(contexts));
  const count = tokens * numHeads * headDim;
  const out = env.output(count * 2);
  const args = { seqs, tokens, maxBlocks, shape };
  const buffers = { out, q, kCache, vCache, queryStarts, contextLens, blockTables };
  ops.prefillAttention({ ...args, ...sideOf(buffers, "g") }, env.stream);
  env.cpuOps.prefillAttention({ ...args, ...sideOf(buffers, "c") }, env.cpu.defaultStream);
  const { g, c: ref } = env.bytesOf(out, count * 2);
  assertSequencesClose(
    new Uint16Array(g.buffer),
    new Uint16Array(ref.buffer),
    starts,
    numHeads * headDim,
    TOLERANCE,
    (s) => `${what}: sequence ${s} (${newTokens[s]} new after ${prefixes[s]} cached)`,
  );
}

gpuTest(
  "fp8-cache prefill attention matches the CPU's (tensor-core, portable, one stage)",
  async (env) => {
    for (const [variant, options] of [VARIANTS[0], VARIANTS[2], VARIANTS[3]]) {
      const ops = await loadAttentionOps(env.gpu, options);
      PREFILL_CASES.forEach((c, i) => {
        const { numHeads, numKvHeads, headDim, blockSize, kScale, vScale } = c.shape;
        const what =
          `${variant} prefill ${numHeads}/${numKvHeads} d${headDim} block ${blockSize} ` +
          `scales ${kScale}/${vScale}`;
        runPrefill(env, ops, c, 200 + i, what);
        env.release();
      });
    }
  },
);

/**
 * The tiny engines' options: an FP8 cache, 32 tokens a step (a long prompt's later chunks read
 * the earlier ones from the cache).
 */
const ENGINE_OPTIONS: EngineOptions = {
  kvBlocks: 64,
  blockSize: 16,
  maxRunning: 4,
  maxBatchedTokens: 32,
  log: () => {},
  kvCacheDtype: "fp8",
};

Deno.test({
  name: "the tiny engine with an fp8 KV cache on CUDA matches the CPU engine with one",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const options = ENGINE_OPTIONS;
  const ids = Array.from({ length: 100 }, (_, i) => (i * 37 + 5) % 277);
  const logits: Float32Array[] = [];
  const generated: number[] = [];
  for (const backend of ["cpu", "cuda"] as const) {
    const engine = await Engine.load(TINY, { ...options, backend });
    try {
      assert.equal(engine.info.kvCacheDtype, "fp8");
      const first = await engine.lastLogits(ids);
      const greedy = { temperature: 0, ignoreEos: true, maxTokens: 16 };
      // The GPU run also decodes over the fp8 cache; its tokens extend the prompt for both.
      if (backend === "cuda") {
        for await (const chunk of engine.generate(ids, greedy)) {
          if (chunk.tokenId >= 0) generated.push(chunk.tokenId);
        }
      }
      logits.push(first);
    } finally {
      await engine.close();
    }
  }
  assert.equal(generated.length, 16);
  const error = relativeError(logits[1], logits[0]);
  console.log(
    `tiny-llama fp8 KV: GPU vs CPU prefill logits relative error ${error.toExponential(2)}`,
  );
  assert.ok(error <= ENGINE_TOLERANCE, `prefill logits: relative error ${error}`);
  // The whole sequence, prompt and GPU-generated tokens, through both engines.
  const all = [...ids, ...generated];
  const after: Float32Array[] = [];
  for (const backend of ["cpu", "cuda"] as const) {
    const engine = await Engine.load(TINY, { ...options, backend });
    try {
      after.push(await engine.lastLogits(all));
    } finally {
      await engine.close();
    }
  }
  const errorAfter = relativeError(after[1], after[0]);
  assert.ok(errorAfter <= ENGINE_TOLERANCE, `logits of ${all.length} tokens: ${errorAfter}`);
});

Deno.test({
  name: "the tiny FP8 engine with its checkpoint's KV scales on CUDA matches the CPU engine",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  // Each layer's own K and V scale (not 1, not powers of two) through kv_write_fp8 and both
  // attention kernels, prefill then decode, against the CPU engine on the same checkpoint.
  const dir = await writeFp8Checkpoint(
    { ...COMPRESSED_TENSORS, kv_cache_scheme: KV_SCHEME },
    { edit: withKvScales([0.37, 0.61], [0.45, 1.3]) },
  );
  try {
    const options = ENGINE_OPTIONS;
    const ids = Array.from({ length: 60 }, (_, i) => (i * 41 + 3) % 277);
    const logits: Float32Array[] = [];
    for (const backend of ["cpu", "cuda"] as const) {
      const engine = await Engine.load(dir, { ...options, backend });
      try {
        assert.equal(engine.info.weightFormat, "fp8");
        logits.push(await engine.lastLogits(ids));
      } finally {
        await engine.close();
      }
    }
    const error = relativeError(logits[1], logits[0]);
    console.log(
      `FP8 weights + checkpoint KV scales: GPU vs CPU relative error ${error.toExponential(2)}`,
    );
    assert.ok(error <= ENGINE_TOLERANCE, `relative error ${error}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
