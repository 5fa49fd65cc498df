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
 * Decode launches programmatically where the device and driver allow it (sm_90, CUDA 12.3+): its
 * kernels start before the kernel ahead of them has finished and read the new token's K/V row only
 * after waiting for it. The chain tests write that row right before each decode, many calls in a
 * row on one stream (eagerly and from a graph), over caches whose not-yet-written rows are NaN,
 * so a decode that read the row too early fails loudly.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { decodeBf16, encodeBf16 } from "../../backends/bf16.ts";
import { cpuAttentionOps } from "../../ops/cpu/attention.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { loadElementwiseOps } from "../../ops/gpu/elementwise.ts";
import { createRopeTable, ropeInverseFrequencies } from "../../models/rope.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { AttentionOps, AttentionShape, ElementwiseOps, KvCacheWrite } from "../../ops/ops.ts";
import {
  type AttentionKernelOptions,
  type GpuAttentionOps,
  loadAttentionOps,
} from "../../ops/gpu/attention.ts";
import { assertDecodeRowsClose, assertSequencesClose, randomArray } from "../support/numeric.ts";
import { pagedTables, shuffled } from "../support/paged_tables.ts";
import { type Pair, PairedBuffers, sideOf } from "../support/paired_buffers.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");
const TOLERANCE = 1e-2;

/** Both backends, the ops on each, and the buffers allocated for the current case. */
class Env extends PairedBuffers {
  readonly cpuOps = cpuAttentionOps();
  /** The CPU's whole op set: its qkvRope with a cache is qkvRope then kvWrite. */
  readonly cpuModelOps = cpuOps();

  constructor(
    gpu: Backend,
    readonly gpuElementwise: ElementwiseOps,
    readonly gpuOps: GpuAttentionOps,
    readonly plainOps: GpuAttentionOps,
    /** decode_reduce after a split decode, where gpuOps reduces in the decode kernel. */
    readonly kernelReduceOps: GpuAttentionOps,
    readonly simtOps: AttentionOps,
    readonly oneStageOps: AttentionOps,
  ) {
    super(gpu);
  }

  /** Reads `count` bf16 values from both sides of a pair (the GPU side after the stream). */
  readBoth(p: Pair, count: number) {
    const { g, c } = this.bytesOf(p, count * 2);
    return { g: new Uint16Array(g.buffer), c: new Uint16Array(c.buffer) };
  }
}

/** `decode` picks the decode kernels and partition target of the env's gpuOps and plainOps. */
function gpuTest(
  name: string,
  body: (env: Env, t: Deno.TestContext) => Promise<void>,
  decode: AttentionKernelOptions = { decodeKernel: "fma" },
) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false }, async (t) => {
    const gpu = openCuda();
    try {
      const env = new Env(
        gpu,
        await loadElementwiseOps(gpu),
        await loadAttentionOps(gpu, decode),
        await loadAttentionOps(gpu, { ...decode, programmatic: false }),
        await loadAttentionOps(gpu, { ...decode, decodeReduce: "kernel" }),
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

/** Runs `c` on `ops` and the CPU, checks them against each other, and returns the GPU's bits. */
function runDecode(env: Env, c: DecodeCase, seed: number, ops = env.gpuOps): Uint16Array {
  const { shape, contexts } = c;
  const { numHeads, numKvHeads, headDim, blockSize } = shape;
  const batch = contexts.length;
  const maxContext = c.maxContext ?? Math.max(...contexts);
  const maxBlocks = Math.ceil(maxContext / blockSize) + 1;
  const { table, numBlocks } = pagedTables(contexts, blockSize, maxBlocks, seed);
  const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
  const kCache = env.pair(randomBf16(cacheElems, seed + 1));
  const vCache = env.pair(randomBf16(cacheElems, seed + 2));
  const q = env.pair(randomBf16(batch * numHeads * headDim, seed + 3));
  const tablesBuf = env.pair(table);
  const lens = env.pair(Int32Array.from(contexts));
  const outCount = batch * numHeads * headDim;
  const out = { g: env.poisoned(outCount * 2), c: env.pair(outCount * 2).c };
  const workspace = env.poisoned(ops.decodeWorkspaceBytes(batch, maxContext, shape));
  const buffers = { out, q, kCache, vCache, blockTables: tablesBuf, contextLens: lens };
  const args = { batch, maxBlocks, maxContext, shape };
  ops.decodeAttention({ ...args, ...sideOf(buffers, "g"), workspace }, env.stream);
  env.cpuOps.decodeAttention(
    { ...args, ...sideOf(buffers, "c"), workspace: env.pair(16).c },
    env.cpu.defaultStream,
  );
  const { g, c: ref } = env.readBoth(out, outCount);
  assertDecodeRowsClose(g, ref, contexts, numHeads * headDim, TOLERANCE, c.name);
  return g;
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
  const { table, numBlocks } = pagedTables(contexts, blockSize, maxBlocks, seed);
  const cacheElems = numBlocks * numKvHeads * blockSize * headDim;
  const kCache = env.pair(randomBf16(cacheElems, seed + 1));
  const vCache = env.pair(randomBf16(cacheElems, seed + 2));
  const q = env.pair(randomBf16(tokens * numHeads * headDim, seed + 3));
  const queryStarts = env.pair(starts);
  const contextLens = env.pair(Int32Array.from(contexts));
  const blockTables = env.pair(table);
  const outCount = tokens * numHeads * headDim;
  const out = { g: env.poisoned(outCount * 2), c: env.pair(outCount * 2).c };
  const buffers = { out, q, kCache, vCache, queryStarts, contextLens, blockTables };
  const args = { seqs, tokens, maxBlocks, shape };
  ops.prefillAttention({ ...args, ...sideOf(buffers, "g") }, env.stream);
  env.cpuOps.prefillAttention({ ...args, ...sideOf(buffers, "c") }, env.cpu.defaultStream);
  const { g, c: ref } = env.readBoth(out, outCount);
  assertSequencesClose(
    g,
    ref,
    starts,
    numHeads * headDim,
    TOLERANCE,
    (s) => `${c.name}: sequence ${s} (${newTokens[s]} new after ${prefixes[s]} cached)`,
  );
}

/** Asserts two bf16 outputs are the same bits, naming the first difference. */
function assertSameBits(got: Uint16Array, want: Uint16Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const first = got.findIndex((x, i) => x !== want[i]);
  assert.equal(
    first,
    -1,
    `${what}: output [${first}] is 0x${got[first]?.toString(16)}, not 0x${
      want[first]?.toString(16)
    }`,
  );
}

/** Sequences that grow by one token per step, starting from `contexts`. */
interface ChainCase {
  name: string;
  shape: AttentionShape;
  contexts: number[];
  steps: number;
}

/**
 * A paged cache for the sequences of a chain, on both devices: rows below the starting contexts
 * random, every row a step will add NaN (0xffff), so a decode that reads a new row before it is
 * written shows NaNs rather than small errors. The GPU also keeps pristine copies that
 * `restore` enqueues back, so a graph can replay the chain from the start.
 */
class GrowingCache {
  readonly batch: number;
  readonly maxContext: number;
  readonly maxBlocks: number;
  readonly table: Int32Array;
  readonly k: Pair;
  readonly v: Pair;
  readonly tables: Pair;
  readonly #kInit: DeviceBuffer;
  readonly #vInit: DeviceBuffer;

  constructor(readonly env: Env, readonly c: ChainCase, seed: number) {
    const { shape, contexts, steps } = c;
    const { numKvHeads, headDim, blockSize } = shape;
    this.batch = contexts.length;
    const finals = contexts.map((n) => n + steps);
    this.maxContext = Math.max(...finals);
    this.maxBlocks = Math.ceil(this.maxContext / blockSize) + 1;
    const { table, numBlocks } = pagedTables(finals, blockSize, this.maxBlocks, seed);
    this.table = table;
    const elems = numBlocks * numKvHeads * blockSize * headDim;
    const [k, v] = [randomBf16(elems, seed + 1), randomBf16(elems, seed + 2)];
    contexts.forEach((n, b) => {
      for (let pos = n; pos < finals[b]; pos++) {
        for (let h = 0; h < numKvHeads; h++) {
          const at = this.row(b, pos, h);
          k.fill(0xffff, at, at + headDim);
          v.fill(0xffff, at, at + headDim);
        }
      }
    });
    this.k = env.pair(k);
    this.v = env.pair(v);
    this.#kInit = env.poisoned(k.byteLength);
    this.#vInit = env.poisoned(v.byteLength);
    env.gpu.copyToDevice(this.#kInit, k);
    env.gpu.copyToDevice(this.#vInit, v);
    this.tables = env.pair(table);
  }

  /** The bf16 element offset of sequence b's row at `pos` for KV head h. */
  row(b: number, pos: number, h: number): number {
    const { numKvHeads, blockSize, headDim } = this.c.shape;
    const block = this.table[b * this.maxBlocks + Math.floor(pos / blockSize)];
    return ((block * numKvHeads + h) * blockSize + (pos % blockSize)) * headDim;
  }

  /** The cache slot of sequence b's position `pos`. */
  slot(b: number, pos: number): number {
    const { blockSize } = this.c.shape;
    return this.table[b * this.maxBlocks + Math.floor(pos / blockSize)] * blockSize +
      (pos % blockSize);
  }

  /** Enqueues the GPU caches' return to their starting state. */
  restore(): void {
    const { gpu, stream } = this.env;
    gpu.copyDevice(this.k.g, this.#kInit, stream);
    gpu.copyDevice(this.v.g, this.#vInit, stream);
  }
}

/**
 * Runs a chain on the GPU: `enqueue` once, or (`graph`) captured after restoring `cache` and
 * poisoning `out`, and replayed twice; `check` after each run.
 */
function runChainOnGpu(
  env: Env,
  graph: boolean,
  cache: GrowingCache,
  out: DeviceBuffer,
  enqueue: () => void,
  check: (what: string) => void,
): void {
  // A replayed graph starts from the caches as they were and from poisoned outputs.
  const reset = () => {
    cache.restore();
    env.gpu.memset(out, 0xff, env.stream);
  };
  if (!graph) {
    enqueue();
    check("eager");
    return;
  }
  env.gpu.beginCapture(env.stream);
  reset();
  enqueue();
  const captured = env.gpu.endCapture(env.stream);
  try {
    for (let replay = 0; replay < 2; replay++) {
      captured.launch(env.stream);
      check(`graph replay ${replay}`);
    }
  } finally {
    captured.destroy();
  }
}

/**
 * `steps` × (kvWrite of one new random row per sequence at position contextLens - 1, then decode
 * into that step's own output) on one stream without synchronizing, against the same steps on
 * the CPU. With `writer` "qkvRope", the step's q, k and v come from a random fused projection
 * through qkvRope, which writes the cache rows itself (the model's decode step), and decode reads
 * that q.
 */
function runKvWriteChain(
  env: Env,
  c: ChainCase,
  seed: number,
  graph: boolean,
  writer: "kvWrite" | "qkvRope" = "kvWrite",
): void {
  const { shape, contexts, steps } = c;
  const { numHeads, numKvHeads, headDim } = shape;
  const cache = new GrowingCache(env, c, seed);
  const { batch, maxBlocks, maxContext } = cache;
  const rowBytes = batch * numKvHeads * headDim * 2, outBytes = batch * numHeads * headDim * 2;
  const slots = new Int32Array(steps * batch), lens = new Int32Array(steps * batch);
  contexts.forEach((n, b) => {
    for (let s = 0; s < steps; s++) {
      slots[s * batch + b] = cache.slot(b, n + s);
      lens[s * batch + b] = n + s + 1;
    }
  });
  const newK = env.pair(randomBf16((steps * rowBytes) / 2, seed + 3));
  const newV = env.pair(randomBf16((steps * rowBytes) / 2, seed + 4));
  const q = env.pair(randomBf16((steps * outBytes) / 2, seed + 5));
  const slotsBuf = env.pair(slots), lensBuf = env.pair(lens);
  const out = { g: env.poisoned(steps * outBytes), c: env.pair(steps * outBytes).c };
  const workspace = env.poisoned(env.gpuOps.decodeWorkspaceBytes(batch, maxContext, shape));
  // The qkvRope writer's inputs: a fused projection per step and the new rows' positions.
  const qkvBytes = outBytes + 2 * rowBytes;
  const qkv = env.pair(randomBf16((steps * qkvBytes) / 2, seed + 6));
  const positions = env.pair(lens.map((n) => n - 1));
  const inv = ropeInverseFrequencies(headDim, 10000);
  const tables = { g: createRopeTable(env.gpu, inv), c: createRopeTable(env.cpu, inv) };
  const cacheWrite = (side: "g" | "c", ids: DeviceBuffer): KvCacheWrite => ({
    kCache: cache.k[side],
    vCache: cache.v[side],
    slots: ids,
    shape,
  });

  const enqueue = (ops: AttentionOps, side: "g" | "c", stream: Stream, ws: DeviceBuffer) => {
    for (let s = 0; s < steps; s++) {
      const ids = slotsBuf[side].slice(4 * batch * s, 4 * batch);
      const k = newK[side].slice(rowBytes * s, rowBytes),
        v = newV[side].slice(rowBytes * s, rowBytes);
      const qs = q[side].slice(outBytes * s, outBytes);
      if (writer === "kvWrite") {
        ops.kvWrite(cache.k[side], cache.v[side], k, v, ids, batch, shape, stream);
      } else {
        const rope = side === "g" ? env.gpuElementwise : env.cpuModelOps;
        rope.qkvRope({
          q: qs,
          k,
          v,
          qkv: qkv[side].slice(qkvBytes * s, qkvBytes),
          positions: positions[side].slice(4 * batch * s, 4 * batch),
          table: tables[side],
          bias: null,
          qNorm: null,
          kNorm: null,
          eps: 1e-6,
          tokens: batch,
          numHeads,
          numKvHeads,
          cache: cacheWrite(side, ids),
        }, stream);
      }
      ops.decodeAttention({
        out: out[side].slice(outBytes * s, outBytes),
        q: qs,
        kCache: cache.k[side],
        vCache: cache.v[side],
        blockTables: cache.tables[side],
        contextLens: lensBuf[side].slice(4 * batch * s, 4 * batch),
        batch,
        maxBlocks,
        maxContext,
        shape,
        workspace: ws,
      }, stream);
    }
  };
  enqueue(env.cpuOps, "c", env.cpu.defaultStream, env.pair(16).c);
  runChainOnGpu(
    env,
    graph,
    cache,
    out.g,
    () => enqueue(env.gpuOps, "g", env.stream, workspace),
    (what) => checkChainOutputs(env, out, c, `${c.name}, ${writer}, ${what}`),
  );
  if (writer === "qkvRope") {
    // The cache rows themselves: RoPE's cos and sin differ by an ulp between the devices at most.
    const { g, c: ref } = env.readBoth(cache.k, cache.k.c.bytes / 2);
    let differ = 0;
    for (let i = 0; i < g.length; i++) {
      if (g[i] === ref[i]) continue;
      const a = decodeBf16(g.subarray(i, i + 1))[0], b = decodeBf16(ref.subarray(i, i + 1))[0];
      assert.ok(
        Math.abs(a - b) <= 2 ** -7 * Math.max(1, Math.abs(b)),
        `k cache element ${i}: ${a} vs ${b}`,
      );
      differ++;
    }
    assert.ok(differ <= g.length / 100, `${differ} of ${g.length} k cache elements differ`);
    const vs = env.readBoth(cache.v, cache.v.c.bytes / 2);
    assert.deepEqual(vs.g, vs.c, `${c.name}: v cache rows written by qkvRope`);
  }
  env.gpu.free(tables.g.invFreq);
  env.cpu.free(tables.c.invFreq);
}

/** Checks every step's decode output of a chain against the CPU's. */
function checkChainOutputs(env: Env, out: Pair, c: ChainCase, what: string): void {
  const row = c.shape.numHeads * c.shape.headDim, count = c.contexts.length * row;
  const { g, c: ref } = env.readBoth(out, c.steps * count);
  for (let s = 0; s < c.steps; s++) {
    assertDecodeRowsClose(
      g.subarray(s * count, (s + 1) * count),
      ref.subarray(s * count, (s + 1) * count),
      c.contexts.map((n) => n + s + 1),
      row,
      TOLERANCE,
      `${what}, step ${s}`,
    );
  }
}

/**
 * A chain whose new rows come from programmatic kernels: each step, after a plain barrier
 * (kvWrite of nothing, which keeps the contract's "everything before it is complete"), two decodes
 * of another cache write the new K and V rows (one KV head, so a row is one head's output), then
 * the decode under test runs. Those writers let it start at once (kvWrite only as its blocks
 * exit), so a read of the new row before its wait would meet the NaN still there. The CPU then
 * decodes each step over the rows the GPU wrote, which later steps leave alone.
 */
function runDecodeWrittenChain(env: Env, c: ChainCase, seed: number, graph: boolean): void {
  const { shape, contexts, steps } = c;
  const { numHeads, headDim } = shape;
  assert.ok(shape.numKvHeads === 1 && contexts.length === 1, "one KV head, one sequence");
  const cache = new GrowingCache(env, c, seed);
  const { maxBlocks, maxContext } = cache;
  // The writers: single-head decodes over 2048 random tokens, long enough to be caught running.
  const writer = shapeOf(1, 1, headDim, shape.blockSize);
  const writerContext = 2048, writerBlocks = writerContext / shape.blockSize;
  const writerElems = writerBlocks * shape.blockSize * headDim;
  const wk = env.pair(randomBf16(writerElems, seed + 3)).g;
  const wv = env.pair(randomBf16(writerElems, seed + 4)).g;
  const wTable = env.pair(Int32Array.from({ length: writerBlocks }, (_, i) => i)).g;
  const wLens = env.pair(Int32Array.of(writerContext)).g;
  const wq = env.pair(randomBf16(2 * steps * headDim, seed + 5)).g;
  const wWorkspace = env.poisoned(env.gpuOps.decodeWorkspaceBytes(1, writerContext, writer));
  const lens = env.pair(Int32Array.from({ length: steps }, (_, s) => contexts[0] + s + 1));
  const outBytes = numHeads * headDim * 2;
  const q = env.pair(randomBf16((steps * outBytes) / 2, seed + 6));
  const out = { g: env.poisoned(steps * outBytes), c: env.pair(steps * outBytes).c };
  const workspace = env.poisoned(env.gpuOps.decodeWorkspaceBytes(1, maxContext, shape));
  const nothing = env.pair(Int32Array.of(-1)).g, scratch = env.poisoned(2 * headDim);
  /** Decode step s of the sequence under test, on the GPU ("g") or the CPU reference ("c"). */
  const decodeStep = (side: "g" | "c", s: number) => {
    const gpu = side === "g";
    (gpu ? env.gpuOps : env.cpuOps).decodeAttention({
      out: out[side].slice(outBytes * s, outBytes),
      q: q[side].slice(outBytes * s, outBytes),
      kCache: cache.k[side],
      vCache: cache.v[side],
      blockTables: cache.tables[side],
      contextLens: lens[side].slice(4 * s, 4),
      batch: 1,
      maxBlocks,
      maxContext,
      shape,
      workspace: gpu ? workspace : env.pair(16).c,
    }, gpu ? env.stream : env.cpu.defaultStream);
  };

  const enqueue = () => {
    const ops = env.gpuOps, stream = env.stream;
    for (let s = 0; s < steps; s++) {
      ops.kvWrite(cache.k.g, cache.v.g, scratch, scratch, nothing, 1, shape, stream);
      const at = 2 * cache.row(0, contexts[0] + s, 0);
      [cache.k.g, cache.v.g].forEach((dst, i) => {
        const wqs = wq.slice(2 * headDim * (2 * s + i), 2 * headDim);
        ops.decodeAttention({
          out: dst.slice(at, 2 * headDim),
          q: wqs,
          kCache: wk,
          vCache: wv,
          blockTables: wTable,
          contextLens: wLens,
          batch: 1,
          maxBlocks: writerBlocks,
          maxContext: writerContext,
          shape: writer,
          workspace: wWorkspace,
        }, stream);
      });
      decodeStep("g", s);
    }
  };
  const check = (what: string) => {
    // The GPU's finished caches are the reference's: every new row written, and finite.
    env.stream.synchronize();
    for (const pair of [cache.k, cache.v]) {
      const bits = new Uint16Array(pair.g.bytes / 2);
      env.gpu.copyToHost(bits, pair.g);
      for (let s = 0; s < steps; s++) {
        const at = cache.row(0, contexts[0] + s, 0);
        const rowValues = decodeBf16(bits.subarray(at, at + headDim));
        assert.ok(rowValues.every(Number.isFinite), `${what}: new row ${s} was not written`);
      }
      env.cpu.copyToDevice(pair.c, bits);
    }
    for (let s = 0; s < steps; s++) decodeStep("c", s);
    checkChainOutputs(env, out, c, `${c.name}, ${what}`);
  };
  runChainOnGpu(
    env,
    graph,
    cache,
    out.g,
    enqueue,
    check,
  );
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
    // The fused reduce counts only the partitions that hold rows; an empty context has none and
    // its output (zeros) comes from its first partition.
    name: "an empty context in a split batch",
    shape: llama(),
    contexts: [0, 700, 3],
  },
  {
    name: "batch 64 of short contexts (one partition, direct output)",
    shape: llama(),
    contexts: Array.from({ length: 64 }, (_, i) => 1 + ((i * 97) % 512)),
  },
];

// Partitions of 32 tokens up to 256 and 512 (the new row then in a later loop step), one
// partition (direct output) and several; new rows crossing partition and block boundaries.
const CHAIN_CASES: ChainCase[] = [
  { name: "one partition, contexts 1 and 9", shape: llama(), contexts: [1, 9], steps: 20 },
  {
    name: "32-token partitions, contexts 1, 60, 300",
    shape: llama(),
    contexts: [1, 60, 300],
    steps: 40,
  },
  {
    name: "head dim 64, GQA 8, block 64",
    shape: shapeOf(16, 2, 64, 64),
    contexts: [31, 130],
    steps: 40,
  },
  {
    name: "batch 8 near 2k: 256-token partitions",
    shape: llama(),
    contexts: Array.from({ length: 8 }, (_, i) => 1900 + 13 * i),
    steps: 6,
  },
  {
    name: "batch 64: one 512-token partition",
    shape: llama(),
    contexts: Array.from({ length: 64 }, (_, i) => 60 + ((i * 37) % 240)),
    steps: 4,
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
  // Where the device and driver allow it, decode must really launch programmatically.
  const { computeCapability: [major], driverVersion } = env.gpu.info;
  assert.equal(
    env.gpuOps.decodeProgrammatic,
    major >= 9 && driverVersion >= 12030 && Deno.env.get("DENALI_PDL") !== "0",
    `programmatic decode, compute capability ${major}, driver ${driverVersion}`,
  );
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
  "gpu attention: decode launched plainly matches the CPU, and the programmatic launch bit for bit",
  async (env, t) => {
    assert.equal(env.plainOps.decodeProgrammatic, false);
    for (const [i, c] of DECODE_CASES.entries()) {
      await t.step(c.name, () => {
        try {
          const plain = runDecode(env, c, 1000 + 10 * i, env.plainOps);
          env.release();
          // Same kernels, inputs and summation order: only when each block waits differs.
          assertSameBits(runDecode(env, c, 1000 + 10 * i), plain, `${c.name}: programmatic`);
        } finally {
          env.release();
        }
      });
    }
  },
);

gpuTest(
  "gpu attention: decode combining partitions in decode_reduce (not in the kernel) matches the CPU",
  async (env, t) => {
    assert.equal(env.kernelReduceOps.decodeKernel, "fma");
    for (const [i, c] of DECODE_CASES.entries()) {
      await t.step(c.name, () => {
        try {
          runDecode(env, c, 1000 + 10 * i, env.kernelReduceOps);
        } finally {
          env.release();
        }
      });
    }
  },
);

for (const mode of ["eagerly", "from a graph"] as const) {
  gpuTest(
    `gpu attention: kvWrite then decode, many times on one stream (${mode}), matches the CPU`,
    async (env, t) => {
      for (const [i, c] of CHAIN_CASES.entries()) {
        await t.step(c.name, () => {
          try {
            runKvWriteChain(env, c, 3000 + 10 * i, mode === "from a graph");
          } finally {
            env.release();
          }
        });
      }
    },
  );
  gpuTest(
    `gpu attention: qkvRope writing the cache, then decode, many times (${mode}), matches the CPU`,
    async (env, t) => {
      for (const [i, c] of CHAIN_CASES.entries()) {
        await t.step(c.name, () => {
          try {
            runKvWriteChain(env, c, 3500 + 10 * i, mode === "from a graph", "qkvRope");
          } finally {
            env.release();
          }
        });
      }
    },
  );
}

gpuTest(
  "gpu attention: decode reads its new row after a programmatic writer ahead of it finishes",
  async (env, t) => {
    const cases: ChainCase[] = [
      { name: "one partition", shape: shapeOf(8, 1, 128, 16), contexts: [3], steps: 20 },
      { name: "split-K", shape: shapeOf(8, 1, 128, 16), contexts: [100], steps: 40 },
    ];
    for (const [i, c] of cases.entries()) {
      for (const graph of [false, true]) {
        await t.step(`${c.name}${graph ? ", from a graph" : ""}`, () => {
          try {
            runDecodeWrittenChain(env, c, 4000 + 10 * i, graph);
          } finally {
            env.release();
          }
        });
      }
    }
  },
);

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

// The tensor-core decode kernels (decodeKernel "mma"; auto's pick on FP8 caches and at some
// batches): the same cases against the CPU, launched plainly and programmatically, and after a
// writer still running when they start. Their p is rounded to bf16 before p·v (as FlashAttention
// does): 2^-9 of each term, inside TOLERANCE.
gpuTest("gpu attention: decode on tensor cores (mma) matches the CPU", async (env, t) => {
  assert.equal(env.gpuOps.decodeKernel, "mma");
  for (const [i, c] of DECODE_CASES.entries()) {
    await t.step(c.name, () => {
      try {
        runDecode(env, c, 1000 + 10 * i);
        env.release();
        runDecode(env, c, 1000 + 10 * i, env.plainOps);
      } finally {
        env.release();
      }
    });
  }
  for (const [i, c] of CHAIN_CASES.entries()) {
    await t.step(`kvWrite chain, from a graph: ${c.name}`, () => {
      try {
        runKvWriteChain(env, c, 3000 + 10 * i, true);
      } finally {
        env.release();
      }
    });
  }
  const written: ChainCase = {
    name: "split-K",
    shape: shapeOf(8, 1, 128, 16),
    contexts: [100],
    steps: 40,
  };
  await t.step("new row after a programmatic writer", () => {
    try {
      runDecodeWrittenChain(env, written, 4000, false);
    } finally {
      env.release();
    }
  });
}, { decodeKernel: "mma" });

// Batches of 66+ sequences (Llama's 8 KV heads) fill the device without a split, so a block
// takes a whole sequence up to 2048 tokens in chunks of 512 rows (online softmax across chunks),
// and longer ones split evenly. A partition target of under one block takes that path at any
// batch: chunk edges (511..513, 1024), one partition (direct output) and three (the reduce), the
// fma and mma kernels, and new rows in a later chunk written by a kernel still running.
const LONG_PARTITIONS = 1 / 1024; // a decode target of under one block
const LONG_PARTITION_CASES: DecodeCase[] = [
  { name: "one partition of 1..2048", shape: llama(), contexts: [1, 511, 512, 513, 1024, 2048] },
  { name: "three partitions", shape: llama(), contexts: [5000, 700, 2049, 1] },
  { name: "GQA 8, head dim 64, block 64", shape: shapeOf(16, 2, 64, 64), contexts: [63, 1500] },
  { name: "GQA 3 (padded head group)", shape: shapeOf(12, 4, 64, 16), contexts: [1300, 40] },
];
for (const decodeKernel of ["fma", "mma"] as const) {
  gpuTest(
    `gpu attention: decode in long partitions (${decodeKernel}) matches the CPU`,
    async (env, t) => {
      assert.equal(env.gpuOps.decodeKernel, decodeKernel);
      for (const [i, c] of LONG_PARTITION_CASES.entries()) {
        await t.step(c.name, () => {
          try {
            runDecode(env, c, 5000 + 10 * i);
          } finally {
            env.release();
          }
        });
      }
      const chain: ChainCase = { name: "chunks", shape: llama(), contexts: [500, 1020], steps: 10 };
      await t.step("kvWrite chain across chunk edges, from a graph", () => {
        try {
          runKvWriteChain(env, chain, 6000, true);
        } finally {
          env.release();
        }
      });
    },
    { decodeKernel, decodeBlocksPerSm: LONG_PARTITIONS },
  );
}

/**
 * The ragged split (kernels/src/attention.cu ragged_part_size): a batch of Llama's 8 head blocks
 * a sequence whose rows reach the target (one block an SM here) but stay under twice it. The
 * kernel sizes the partitions from the contexts: a long context among short ones is split (the
 * fused reduce), the others run whole in a grid of several partitions (their output direct).
 */
function raggedCases(multiprocessors: number): DecodeCase[] {
  const batch = Math.ceil(multiprocessors / 8);
  const short = (i: number) => 1 + ((i * 53) % 120);
  const rows = (first: number[], rest: (i: number) => number) =>
    Array.from({ length: batch }, (_, i) => i < first.length ? first[i] : rest(i));
  return [
    { name: "one long context among short ones", shape: llama(), contexts: rows([2000], short) },
    {
      name: "several long, one empty, at chunk and partition edges",
      shape: llama(),
      contexts: rows([1100, 1024, 513, 0, 512], short),
    },
    {
      name: "even contexts: none split, grid of 2",
      shape: llama(),
      contexts: rows([], (i) => 600 + ((i * 37) % 300)),
    },
    {
      name: "a graph bucket past every context",
      shape: llama(64),
      contexts: rows([1300, 700], short),
      maxContext: 2048,
    },
  ];
}

// Both families split these batches (the mma kernels since session 25: decodeRaggedMma, pinned
// on here).
for (const decodeKernel of ["fma", "mma"] as const) {
  gpuTest(
    `gpu attention: decode with the ragged split (${decodeKernel}) matches the CPU`,
    async (env, t) => {
      const cases = raggedCases(env.gpu.info.multiprocessors);
      for (const [i, c] of cases.entries()) {
        await t.step(c.name, () => {
          try {
            // Programmatic and plain launches split; decode_reduce's ops keep one partition.
            for (const ops of [env.gpuOps, env.plainOps, env.kernelReduceOps]) {
              runDecode(env, c, 7000 + 10 * i, ops);
            }
          } finally {
            env.release();
          }
        });
      }
      // More sequences than a block has threads (each sums two or more contexts), on ops whose split
      // reaches 4 block targets of rows at the default 4 blocks an SM: 200 × 8 rows on 132 SMs.
      const wide = await loadAttentionOps(env.gpu, {
        decodeKernel,
        decodeRaggedRows: 8,
        decodeRaggedMma: true,
      });
      const many: DecodeCase = {
        name: "200 sequences, one long",
        shape: llama(),
        contexts: Array.from({ length: 200 }, (_, i) => i === 150 ? 2000 : 1 + ((i * 71) % 150)),
      };
      await t.step(many.name, () => {
        try {
          runDecode(env, many, 7050, wide);
        } finally {
          env.release();
        }
      });
      const batch = Math.ceil(env.gpu.info.multiprocessors / 8);
      const chain: ChainCase = {
        name: "ragged chain",
        shape: llama(),
        contexts: Array.from({ length: batch }, (_, i) => i === 0 ? 1500 : 1 + ((i * 29) % 90)),
        steps: 4,
      };
      await t.step("kvWrite chain with a split context, from a graph", () => {
        try {
          runKvWriteChain(env, chain, 7100, true);
        } finally {
          env.release();
        }
      });
    },
    // Pinned, so that DENALI_DECODE_RAGGED_MMA=0 in the environment cannot turn the mma split off.
    { decodeKernel, decodeBlocksPerSm: 1, decodeRaggedMma: true },
  );
}

gpuTest("gpu attention: ops reject what the kernels cannot run", (env) => {
  const shape = llama();
  const buf = env.gpu.alloc(1 << 20);
  try {
    assert.throws(
      () =>
        env.gpuOps.decodeAttention({
          out: buf,
          q: buf.slice(2),
          kCache: buf,
          vCache: buf,
          blockTables: buf,
          contextLens: buf,
          batch: 1,
          maxBlocks: 1,
          maxContext: 16,
          shape,
          workspace: buf,
        }, env.stream),
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
        env.gpuOps.decodeAttention({
          out: buf,
          q: buf,
          kCache: buf,
          vCache: buf,
          blockTables: buf,
          contextLens: buf,
          batch: 1,
          maxBlocks: 2048,
          maxContext: 32768,
          shape,
          workspace: small,
        }, env.stream),
      (e: Error) =>
        e instanceof RangeError && /^decodeAttention: workspace has 256 bytes/.test(e.message),
    );
    env.gpu.free(small);
  } finally {
    env.gpu.free(buf);
  }
  return Promise.resolve();
});
