/**
 * One decode step of a Llama-3.2-1B-shaped model on the CPU backend, op by op, with random bf16
 * weights: the figure the kernels issue asks for ("a 1B-class decode step must not take
 * minutes"). Batch 1, a 512-token context already in the paged cache.
 *
 * Usage: deno run -A bench/cpu_decode_bench.ts [--steps 3] [--layers 16]
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DeviceBuffer } from "../backends/backend.ts";
import { CpuBackend } from "../backends/cpu.ts";
import { loadOps } from "../ops/load.ts";
import type { AttentionShape } from "../ops/ops.ts";
import { createRopeTable, ropeInverseFrequencies } from "../models/rope.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/cpu_decode_bench.ts [--steps 3] [--layers 16]

One decode step of a Llama-3.2-1B-shaped model on the CPU backend, op by op (random weights).
  --steps N    decode steps to time (default 3)
  --layers N   decoder layers (default 16)
  -h, --help   show this help`;

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { steps: { type: "string", default: "3" }, layers: { type: "string", default: "16" } },
  });
  const steps = Number(values.steps);
  const layers = Number(values.layers);
  // Llama-3.2-1B.
  const hidden = 2048, inter = 8192, heads = 32, kvHeads = 8, headDim = 64, vocab = 128256;
  const context = 512, blockSize = 16;
  const qkvRows = (heads + 2 * kvHeads) * headDim;

  const cpu = new CpuBackend();
  const ops = await loadOps(cpu);
  const stream = cpu.defaultStream;

  /** A bf16 buffer of `count` values filled with a cheap repeating pseudo-random pattern. */
  function weights(count: number, scale: number): DeviceBuffer {
    const buffer = cpu.alloc(2 * count);
    const bits = new Uint16Array(buffer.host!.buffer, buffer.host!.byteOffset, count);
    let s = 0x9e3779b9;
    const pattern = new Uint16Array(65536);
    const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
    for (let i = 0; i < pattern.length; i++) {
      s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
      f32[0] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
      pattern[i] = u32[0] >>> 16;
    }
    for (let i = 0; i < count; i += pattern.length) {
      bits.set(pattern.subarray(0, Math.min(pattern.length, count - i)), i);
    }
    return buffer;
  }

  const started = performance.now();
  const embed = weights(vocab * hidden, 0.02);
  const layer = Array.from({ length: layers }, () => ({
    inputNorm: weights(hidden, 1),
    qkv: weights(qkvRows * hidden, 0.02),
    o: weights(hidden * heads * headDim, 0.02),
    postNorm: weights(hidden, 1),
    gateUp: weights(2 * inter * hidden, 0.02),
    down: weights(hidden * inter, 0.02),
    k: weights((context / blockSize) * kvHeads * blockSize * headDim, 1),
    v: weights((context / blockSize) * kvHeads * blockSize * headDim, 1),
  }));
  const finalNorm = weights(hidden, 1);
  console.log(`weights ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const i32 = (values: number[]) => {
    const buffer = cpu.alloc(4 * values.length);
    new Int32Array(buffer.host!.buffer, buffer.host!.byteOffset, values.length).set(values);
    return buffer;
  };
  const ids = i32([1234]);
  const positions = i32([context - 1]);
  const slots = i32([context - 1]);
  const blockTables = i32(Array.from({ length: context / blockSize }, (_, i) => i));
  const contextLens = i32([context]);
  const rope = createRopeTable(cpu, ropeInverseFrequencies(headDim, 500000));
  const shape: AttentionShape = {
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    blockSize,
    scale: 1 / Math.sqrt(headDim),
  };
  const x = cpu.alloc(2 * hidden), residual = cpu.alloc(2 * hidden), normed = cpu.alloc(2 * hidden);
  const qkv = cpu.alloc(2 * qkvRows), attn = cpu.alloc(2 * heads * headDim);
  const gateUp = cpu.alloc(4 * inter), act = cpu.alloc(2 * inter);
  const logits16 = cpu.alloc(2 * vocab), logits = cpu.alloc(4 * vocab), next = cpu.alloc(4);
  const workspace = cpu.alloc(Math.max(4, ops.decodeWorkspaceBytes(1, context, shape)));
  const q = qkv.slice(0, 2 * heads * headDim);
  const k = qkv.slice(2 * heads * headDim, 2 * kvHeads * headDim);
  const v = qkv.slice(2 * (heads + kvHeads) * headDim, 2 * kvHeads * headDim);

  const timing = { linear: 0, attention: 0, other: 0 };
  const timed = (bucket: keyof typeof timing, run: () => void) => {
    const t = performance.now();
    run();
    timing[bucket] += performance.now() - t;
  };

  for (let step = 0; step < steps; step++) {
    const t0 = performance.now();
    timed("other", () => ops.embedding(residual, embed, ids, 1, hidden, stream));
    cpu.memset(x, 0);
    for (const w of layer) {
      timed("other", () => ops.rmsNorm(normed, x, w.inputNorm, residual, 1, hidden, 1e-5, stream));
      timed("linear", () => ops.linear(qkv, normed, w.qkv, 1, qkvRows, hidden, stream));
      timed("other", () => ops.rope(q, k, positions, rope, 1, heads, kvHeads, stream));
      timed("attention", () => {
        ops.kvWrite(w.k, w.v, k, v, slots, 1, shape, stream);
        ops.decodeAttention({
          out: attn,
          q,
          kCache: w.k,
          vCache: w.v,
          blockTables,
          contextLens,
          batch: 1,
          maxBlocks: context / blockSize,
          maxContext: context,
          shape,
          workspace,
        }, stream);
      });
      timed("linear", () => ops.linear(x, attn, w.o, 1, hidden, heads * headDim, stream));
      timed("other", () => ops.rmsNorm(normed, x, w.postNorm, residual, 1, hidden, 1e-5, stream));
      timed("linear", () => ops.linear(gateUp, normed, w.gateUp, 1, 2 * inter, hidden, stream));
      timed("other", () => ops.siluMul(act, gateUp, 1, inter, stream));
      timed("linear", () => ops.linear(x, act, w.down, 1, hidden, inter, stream));
    }
    timed("other", () => ops.rmsNorm(normed, x, finalNorm, residual, 1, hidden, 1e-5, stream));
    timed("linear", () => ops.linear(logits16, normed, embed, 1, vocab, hidden, stream));
    timed("other", () => {
      ops.castBf16ToF32(logits, logits16, vocab, stream);
      ops.argmax(next, logits, 1, vocab, stream);
    });
    const token = new Int32Array(next.host!.buffer, next.host!.byteOffset, 1)[0];
    console.log(
      `step ${step}: ${
        (performance.now() - t0).toFixed(0)
      } ms (next token ${token}; ${layers} layers)`,
    );
  }
  const per = (ms: number) => (ms / steps).toFixed(0);
  console.log(
    `per step: linear ${per(timing.linear)} ms, attention ${per(timing.attention)} ms, ` +
      `other ${per(timing.other)} ms`,
  );
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
