/**
 * The attention kernels on a real GPU against the CPU reference (`deno task test:gpu`): the same
 * random bf16 inputs go to both backends; GPU outputs and workspaces are poisoned with 0xff
 * (NaN) first, so an element the kernels forget to write, or a partial they read without writing,
 * cannot pass.
 *
 * Tolerance 1e-2 (‖gpu − cpu‖ / ‖cpu‖, bf16 outputs): each side rounds its fp32 result to bf16
 * once (≤ 2^-9 relative each, so ≤ 3.9e-3 apart); the fp32 results differ only by summation order
 * (split-K partitions, lane butterflies, tensor-core tiles, ~1e-6) and, on the tensor-core
 * prefill, by P rounded to bf16 before P·V (2^-9 per weight, averaging down over the keys). A
 * wrong mask, block or head shows as errors of order 1e-1 or more. kvWrite is compared bit for
 * bit.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { decodeBf16, encodeBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuAttentionOps } from "../../backends/cpu/attention.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { AttentionOps, AttentionShape } from "../../backends/ops.ts";
import { loadAttentionOps } from "../../kernels/ops/attention.ts";
import { assertClose, randomArray, rng } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");
const TOLERANCE = 1e-2;

/** Both backends, the ops on each, and the buffers allocated for the current case. */
class Env {
  readonly cpu = new CpuBackend();
  readonly cpuOps = cpuAttentionOps();
  readonly stream: Stream;
  #gpuBuffers: DeviceBuffer[] = [];
  #cpuBuffers: DeviceBuffer[] = [];

  constructor(
    readonly gpu: Backend,
    readonly gpuOps: AttentionOps,
    readonly simtOps: AttentionOps,
    readonly oneStageOps: AttentionOps,
  ) {
    this.stream = gpu.createStream();
  }

  /** The same bytes on both devices (zero-filled when `data` is a length). */
  pair(data: ArrayBufferView | number): { g: DeviceBuffer; c: DeviceBuffer } {
    const bytes = typeof data === "number" ? data : data.byteLength;
    const g = this.gpu.alloc(Math.max(16, bytes)), c = this.cpu.alloc(Math.max(16, bytes));
    this.#gpuBuffers.push(g);
    this.#cpuBuffers.push(c);
    if (typeof data === "number") {
      this.gpu.memset(g, 0);
    } else {
      this.gpu.copyToDevice(g, data);
      this.cpu.copyToDevice(c, data);
    }
    return { g, c };
  }

  /** A GPU-only buffer, poisoned with NaN bytes. */
  poisoned(bytes: number): DeviceBuffer {
    const g = this.gpu.alloc(Math.max(16, bytes));
    this.#gpuBuffers.push(g);
    this.gpu.memset(g, 0xff);
    return g;
  }

  /** Reads `count` bf16 values from both sides of a pair (the GPU side after the stream). */
  readBoth(p: { g: DeviceBuffer; c: DeviceBuffer }, count: number) {
    this.stream.synchronize();
    const g = new Uint16Array(count), c = new Uint16Array(count);
    this.gpu.copyToHost(g, p.g);
    this.cpu.copyToHost(c, p.c);
    return { g, c };
  }

  release(): void {
    this.stream.synchronize();
    for (const b of this.#gpuBuffers) this.gpu.free(b);
    for (const b of this.#cpuBuffers) this.cpu.free(b);
    this.#gpuBuffers = [];
    this.#cpuBuffers = [];
  }
}

function gpuTest(name: string, body: (env: Env, t: Deno.TestContext) => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false }, async (t) => {
    const gpu = openCuda();
    try {
      const env = new Env(
        gpu,
        await loadAttentionOps(gpu),
        await loadAttentionOps(gpu, { prefill: "simt" }),
        await loadAttentionOps(gpu, { prefill: "one-stage" }),
      );
      await body(env, t);
    } finally {
      gpu.close();
    }
  });
}

function randomBf16(n: number, seed: number): Uint16Array {
  return encodeBf16(randomArray(n, seed, -2, 2));
}

/** Seeded Fisher-Yates permutation of 0..n-1. */
function shuffled(n: number, seed: number): number[] {
  const next = rng(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next(0, 1) * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Block tables for sequences of `lengths` tokens over a shuffled pool (two spare blocks), -1 in
 * every entry a sequence does not use, so a kernel reading past a context reads garbage ids.
 */
function tables(lengths: readonly number[], blockSize: number, maxBlocks: number, seed: number) {
  const need = lengths.map((n) => Math.ceil(n / blockSize));
  const numBlocks = need.reduce((a, b) => a + b, 0) + 2;
  const pool = shuffled(numBlocks, seed);
  const table = new Int32Array(lengths.length * maxBlocks).fill(-1);
  let used = 0;
  need.forEach((n, s) => {
    for (let i = 0; i < n; i++) table[s * maxBlocks + i] = pool[used++];
  });
  return { table, numBlocks };
}

function shapeOf(numHeads: number, numKvHeads: number, headDim: number, blockSize: number) {
  return { numHeads, numKvHeads, headDim, blockSize, scale: 1 / Math.sqrt(headDim) };
}

interface DecodeCase {
  name: string;
  shape: AttentionShape;
  contexts: number[];
  /** Defaults to the longest context; larger tests partitions past every sequence. */
  maxContext?: number;
}

function runDecode(env: Env, c: DecodeCase, seed: number): void {
  const { shape, contexts } = c;
  const { numHeads, numKvHeads, headDim, blockSize } = shape;
  const batch = contexts.length;
  const maxContext = c.maxContext ?? Math.max(...contexts);
  const maxBlocks = Math.ceil(maxContext / blockSize) + 1;
  const { table, numBlocks } = tables(contexts, blockSize, maxBlocks, seed);
  const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
  const kCache = env.pair(randomBf16(cacheElems, seed + 1));
  const vCache = env.pair(randomBf16(cacheElems, seed + 2));
  const q = env.pair(randomBf16(batch * numHeads * headDim, seed + 3));
  const tablesBuf = env.pair(table);
  const lens = env.pair(Int32Array.from(contexts));
  const outCount = batch * numHeads * headDim;
  const out = { g: env.poisoned(outCount * 2), c: env.pair(outCount * 2).c };
  const workspace = env.poisoned(env.gpuOps.decodeWorkspaceBytes(batch, maxContext, shape));
  env.gpuOps.decodeAttention(
    out.g,
    q.g,
    kCache.g,
    vCache.g,
    tablesBuf.g,
    lens.g,
    batch,
    maxBlocks,
    maxContext,
    shape,
    workspace,
    env.stream,
  );
  env.cpuOps.decodeAttention(
    out.c,
    q.c,
    kCache.c,
    vCache.c,
    tablesBuf.c,
    lens.c,
    batch,
    maxBlocks,
    maxContext,
    shape,
    env.cpu.alloc(16),
    env.cpu.defaultStream,
  );
  const { g, c: ref } = env.readBoth(out, outCount);
  const got = decodeBf16(g), want = decodeBf16(ref);
  const row = numHeads * headDim;
  // Per sequence, so a short sequence's error is not diluted by a long one's.
  for (let b = 0; b < batch; b++) {
    const slice = [b * row, (b + 1) * row] as const;
    assertClose(
      got.subarray(...slice),
      want.subarray(...slice),
      TOLERANCE,
      `${c.name}: sequence ${b} (context ${contexts[b]})`,
    );
  }
}

interface PrefillCase {
  name: string;
  shape: AttentionShape;
  newTokens: number[];
  prefixes: number[];
}

function runPrefill(env: Env, c: PrefillCase, ops: AttentionOps, seed: number): void {
  const { shape, newTokens, prefixes } = c;
  const { numHeads, numKvHeads, headDim, blockSize } = shape;
  const seqs = newTokens.length;
  const contexts = newTokens.map((n, s) => n + prefixes[s]);
  const starts = new Int32Array(seqs + 1);
  for (let s = 0; s < seqs; s++) starts[s + 1] = starts[s] + newTokens[s];
  const tokens = starts[seqs];
  const maxBlocks = Math.ceil(Math.max(...contexts) / blockSize) + 1;
  const { table, numBlocks } = tables(contexts, blockSize, maxBlocks, seed);
  const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
  const kCache = env.pair(randomBf16(cacheElems, seed + 1));
  const vCache = env.pair(randomBf16(cacheElems, seed + 2));
  const q = env.pair(randomBf16(tokens * numHeads * headDim, seed + 3));
  const startsBuf = env.pair(starts);
  const lens = env.pair(Int32Array.from(contexts));
  const tablesBuf = env.pair(table);
  const outCount = tokens * numHeads * headDim;
  const out = { g: env.poisoned(outCount * 2), c: env.pair(outCount * 2).c };
  ops.prefillAttention(
    out.g,
    q.g,
    kCache.g,
    vCache.g,
    startsBuf.g,
    lens.g,
    tablesBuf.g,
    seqs,
    tokens,
    maxBlocks,
    shape,
    env.stream,
  );
  env.cpuOps.prefillAttention(
    out.c,
    q.c,
    kCache.c,
    vCache.c,
    startsBuf.c,
    lens.c,
    tablesBuf.c,
    seqs,
    tokens,
    maxBlocks,
    shape,
    env.cpu.defaultStream,
  );
  const { g, c: ref } = env.readBoth(out, outCount);
  const got = decodeBf16(g), want = decodeBf16(ref);
  const row = numHeads * headDim;
  for (let s = 0; s < seqs; s++) {
    const slice = [starts[s] * row, starts[s + 1] * row] as const;
    assertClose(
      got.subarray(...slice),
      want.subarray(...slice),
      TOLERANCE,
      `${c.name}: sequence ${s} (${newTokens[s]} new after ${prefixes[s]} cached)`,
    );
  }
}

const llama = (blockSize = 16) => shapeOf(32, 8, 128, blockSize);

const DECODE_CASES: DecodeCase[] = [
  { name: "context 1", shape: llama(), contexts: [1] },
  { name: "contexts crossing blocks 17/63/65", shape: llama(), contexts: [17, 63, 65] },
  { name: "32k context, batch 1", shape: llama(), contexts: [32768] },
  { name: "mixed batch, block 16", shape: llama(), contexts: [1, 100, 2049, 4000] },
  { name: "mixed batch, block 64", shape: llama(64), contexts: [1, 100, 2049, 4000] },
  {
    name: "mixed batch, head dim 64, GQA 4",
    shape: shapeOf(16, 4, 64, 16),
    contexts: [1, 100, 2049, 4000],
  },
  { name: "GQA 1 (MHA)", shape: shapeOf(8, 8, 128, 16), contexts: [300, 1000, 17] },
  { name: "GQA 8", shape: shapeOf(32, 4, 128, 16), contexts: [700, 5, 65] },
  { name: "GQA 8, head dim 64, block 64", shape: shapeOf(16, 2, 64, 64), contexts: [63, 1500] },
  { name: "GQA 3 (padded head group)", shape: shapeOf(12, 4, 64, 16), contexts: [129, 40] },
  { name: "GQA 16 (two head chunks)", shape: shapeOf(32, 2, 128, 16), contexts: [513, 64] },
  {
    // One head block and a 32-token partition: 525 partitions on 132 SMs, two reduce chunks.
    name: "single KV head, hundreds of partitions",
    shape: shapeOf(8, 1, 64, 16),
    contexts: [16800],
  },
  {
    name: "maxContext beyond every sequence",
    shape: llama(),
    contexts: [10, 20, 1],
    maxContext: 3000,
  },
  {
    name: "batch 64 of short contexts (one partition, direct output)",
    shape: llama(),
    contexts: Array.from({ length: 64 }, (_, i) => 1 + ((i * 97) % 512)),
  },
];

const PREFILL_CASES: PrefillCase[] = [
  {
    name: "new [1, 37, 130] after [5, 0, 70]",
    shape: llama(),
    newTokens: [1, 37, 130],
    prefixes: [5, 0, 70],
  },
  {
    name: "head dim 64, GQA 8, block 64",
    shape: shapeOf(16, 2, 64, 64),
    newTokens: [1, 37, 130],
    prefixes: [0, 20, 3],
  },
  {
    name: "GQA 1, one sequence of 200",
    shape: shapeOf(8, 8, 128, 64),
    newTokens: [200],
    prefixes: [0],
  },
  {
    name: "long prefill after a prefix, GQA 4",
    shape: shapeOf(8, 2, 128, 16),
    newTokens: [600, 64],
    prefixes: [100, 0],
  },
  {
    name: "GQA 3, head dim 64",
    shape: shapeOf(6, 2, 64, 16),
    newTokens: [65, 1],
    prefixes: [63, 300],
  },
];

gpuTest("gpu attention: kvWrite scatters rows bit for bit and skips slot -1", async (env, t) => {
  for (const [i, shape] of [shapeOf(32, 8, 128, 16), shapeOf(8, 2, 64, 64)].entries()) {
    await t.step(`headDim ${shape.headDim}, block ${shape.blockSize}`, () => {
      const { numKvHeads, headDim, blockSize } = shape;
      const tokens = 50, numBlocks = 6;
      const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
      const kCache = env.pair(randomBf16(cacheElems, 10 + i));
      const vCache = env.pair(randomBf16(cacheElems, 20 + i));
      const k = env.pair(randomBf16(tokens * numKvHeads * headDim, 30 + i));
      const v = env.pair(randomBf16(tokens * numKvHeads * headDim, 40 + i));
      const slotList = Int32Array.from(shuffled(numBlocks * blockSize, 50 + i).slice(0, tokens));
      slotList[0] = -1;
      slotList[17] = -1;
      slotList[tokens - 1] = -1;
      const slots = env.pair(slotList);
      env.gpuOps.kvWrite(kCache.g, vCache.g, k.g, v.g, slots.g, tokens, shape, env.stream);
      env.cpuOps.kvWrite(kCache.c, vCache.c, k.c, v.c, slots.c, tokens, shape, env.stream);
      try {
        for (const [name, pair] of [["kCache", kCache], ["vCache", vCache]] as const) {
          const { g, c } = env.readBoth(pair, cacheElems);
          assert.ok(g.every((x, j) => x === c[j]), `${name} differs from the CPU`);
        }
      } finally {
        env.release();
      }
    });
  }
});

gpuTest("gpu attention: decode matches the CPU", async (env, t) => {
  for (const [i, c] of DECODE_CASES.entries()) {
    await t.step(c.name, () => {
      try {
        runDecode(env, c, 1000 + 10 * i);
      } finally {
        env.release();
      }
    });
  }
});

gpuTest(
  "gpu attention: prefill (tensor cores, 2 and 1 stages; portable) matches the CPU",
  async (env, t) => {
    for (const [i, c] of PREFILL_CASES.entries()) {
      const kinds = [
        ["auto", env.gpuOps],
        ["one-stage", env.oneStageOps],
        ["simt", env.simtOps],
      ] as const;
      for (const [kind, ops] of kinds) {
        await t.step(`${kind}: ${c.name}`, () => {
          try {
            runPrefill(env, c, ops, 2000 + 10 * i);
          } finally {
            env.release();
          }
        });
      }
    }
  },
);

gpuTest("gpu attention: ops reject what the kernels cannot run", (env) => {
  const shape = llama();
  const buf = env.gpu.alloc(1 << 20);
  try {
    assert.throws(
      () =>
        env.gpuOps.decodeAttention(
          buf,
          buf.slice(2),
          buf,
          buf,
          buf,
          buf,
          1,
          1,
          16,
          shape,
          buf,
          env.stream,
        ),
      (e: Error) =>
        e instanceof RangeError && /^decodeAttention: q .* 16-byte aligned/.test(e.message),
    );
    assert.throws(
      () => env.gpuOps.decodeWorkspaceBytes(1, 16, { ...shape, headDim: 96 }),
      (e: Error) => e instanceof RangeError && /headDim must be 64 or 128/.test(e.message),
    );
    assert.throws(
      () => env.gpuOps.kvWrite(buf, buf, buf, buf, buf, 1, { ...shape, blockSize: 24 }, env.stream),
      (e: Error) =>
        e instanceof RangeError && /^kvWrite: shape.blockSize must be a power of two/
          .test(e.message),
    );
    const small = env.gpu.alloc(256);
    assert.throws(
      () =>
        env.gpuOps.decodeAttention(
          buf,
          buf,
          buf,
          buf,
          buf,
          buf,
          1,
          2048,
          32768,
          shape,
          small,
          env.stream,
        ),
      (e: Error) =>
        e instanceof RangeError && /^decodeAttention: workspace has 256 bytes/.test(e.message),
    );
    env.gpu.free(small);
  } finally {
    env.gpu.free(buf);
  }
  return Promise.resolve();
});
