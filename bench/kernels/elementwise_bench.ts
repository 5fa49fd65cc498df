/**
 * Elementwise kernel benchmarks at Llama-3-8B shapes, one `BENCH` line per op and shape plus
 * the device's copy bandwidth, for comparison with bench/kernels/elementwise_torch.py.
 *
 * Usage (GPU machine): `deno run -A bench/kernels/elementwise_bench.ts`
 * `--smoke` runs tiny shapes on the CPU backend, only to check the script itself.
 *
 * Every buffer an op touches rotates through an arena of at least 128 MiB (over twice the
 * H100's 50 MB L2), so each timed call reads cold memory, as a layer's weights and activations
 * are in a real forward pass. Bytes counted are those the op must move: inputs read once,
 * outputs written once.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuElementwiseOps } from "../../ops/cpu/elementwise.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { ElementwiseOps } from "../../ops/ops.ts";
import { configPreset } from "../../models/config.ts";
import { createRopeTable, ropeInverseFrequencies } from "../../models/rope.ts";
import { loadElementwiseOps } from "../../ops/gpu/elementwise.ts";
import {
  benchBuffers,
  medianUs,
  printBench,
  printCopyBandwidth,
  setCount as setCountIn,
} from "./measure.ts";
import { helpRequested } from "../../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/kernels/elementwise_bench.ts [--smoke]

Elementwise kernel benchmarks at Llama-3-8B shapes on an NVIDIA GPU: one BENCH line each.
  --smoke      tiny shapes on the CPU backend, only to check the script
  -h, --help   show this help`;

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const smoke = Deno.args.includes("--smoke");
  const gpu: Backend = smoke ? new CpuBackend() : openCuda();
  const ops: ElementwiseOps = smoke ? cpuElementwiseOps() : await loadElementwiseOps(gpu);
  const stream = gpu.createStream();
  const ARENA_BYTES = smoke ? 2 ** 20 : 128 * 2 ** 20;
  const MAX_SETS = 8192;

  const HIDDEN = smoke ? 256 : 4096;
  const INTER = smoke ? 512 : 14336;
  const HEADS = smoke ? 4 : 32;
  const KV_HEADS = smoke ? 2 : 8;
  const HEAD_DIM = smoke ? 64 : 128;
  const VOCAB = smoke ? 1000 : 128256;
  const TOKENS = smoke ? [1, 4] : [1, 64, 4096];
  const BF16_ONE_BYTE = 0x3c; // every byte 0x3c: bf16 0x3c3c ≈ 0.0115, finite and harmless

  const { alloc, freeAll } = benchBuffers(gpu, stream);

  /** How many copies of a `bytes`-sized working set fill the arena (at least 2). */
  function setCount(bytes: number): number {
    return setCountIn(bytes, ARENA_BYTES, MAX_SETS);
  }

  /** `sets` slices of `bytes` each (16-byte aligned), filled with `fill` bytes. */
  function rotating(bytes: number, sets: number, fill = BF16_ONE_BYTE): DeviceBuffer[] {
    const stride = Math.ceil(bytes / 256) * 256;
    const arena = alloc(stride * sets);
    gpu.memset(arena, fill, stream);
    // The synchronous uploads that may follow must not race the memset.
    stream.synchronize();
    return Array.from({ length: sets }, (_, i) => arena.slice(i * stride, bytes));
  }

  /** `sets` slices holding seeded random i32 in [0, bound). */
  function randomInts(count: number, sets: number, bound: number): DeviceBuffer[] {
    const buffers = rotating(4 * count, sets, 0);
    let s = 0x2545f491;
    const values = new Int32Array(count);
    for (const buffer of buffers) {
      for (let i = 0; i < count; i++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        values[i] = (s >>> 0) % bound;
      }
      gpu.copyToDevice(buffer, values);
    }
    return buffers;
  }

  printCopyBandwidth(gpu, stream, smoke ? 2 ** 24 : 2 ** 30);

  for (const tokens of TOKENS) {
    const act = 2 * tokens * HIDDEN;
    const sets = setCount(2 * act + 2 * HIDDEN);
    const x = rotating(act, sets), out = rotating(act, sets), w = rotating(2 * HIDDEN, sets);
    const shape = `tokens=${tokens},hidden=${HIDDEN}`;
    const plain = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.rmsNorm(out[i], x[i], w[i], null, tokens, HIDDEN, 1e-5, stream);
    });
    printBench("rms_norm", shape, plain, 2 * act + 2 * HIDDEN);
    const residual = rotating(act, sets);
    const fused = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.rmsNorm(out[i], x[i], w[i], residual[i], tokens, HIDDEN, 1e-5, stream);
    });
    printBench("rms_norm_residual", shape, fused, 4 * act + 2 * HIDDEN);
    freeAll();
  }

  {
    const { ropeTheta, ropeScaling } = configPreset("llama3.1-8b");
    const table = createRopeTable(gpu, ropeInverseFrequencies(HEAD_DIM, ropeTheta, ropeScaling!));
    for (const tokens of TOKENS) {
      const qBytes = 2 * tokens * HEADS * HEAD_DIM, kBytes = 2 * tokens * KV_HEADS * HEAD_DIM;
      const sets = setCount(qBytes + kBytes);
      const q = rotating(qBytes, sets), k = rotating(kBytes, sets);
      const positions = randomInts(tokens, sets, 32768);
      const us = medianUs(gpu, stream, (rep) => {
        const i = rep % sets;
        ops.rope(q[i], k[i], positions[i], table, tokens, HEADS, KV_HEADS, stream);
      });
      const shape = `tokens=${tokens},heads=${HEADS}/${KV_HEADS},head_dim=${HEAD_DIM}`;
      printBench("rope", shape, us, 2 * (qBytes + kBytes) + 4 * tokens + 2 * HEAD_DIM);
      freeAll();
    }
    gpu.free(table.invFreq);
  }

  for (const tokens of TOKENS) {
    const outBytes = 2 * tokens * INTER;
    const sets = setCount(3 * outBytes);
    const gateUp = rotating(2 * outBytes, sets), out = rotating(outBytes, sets);
    const us = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.siluMul(out[i], gateUp[i], tokens, INTER, stream);
    });
    printBench("silu_mul", `tokens=${tokens},inter=${INTER}`, us, 3 * outBytes);
    freeAll();
  }

  {
    const tokens = TOKENS[TOKENS.length - 1];
    const table = rotating(2 * VOCAB * HIDDEN, 1)[0];
    const act = 2 * tokens * HIDDEN;
    const sets = setCount(2 * act);
    const out = rotating(act, sets);
    const ids = randomInts(tokens, sets, VOCAB);
    const us = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.embedding(out[i], table, ids[i], tokens, HIDDEN, stream);
    });
    printBench(
      "embedding",
      `tokens=${tokens},hidden=${HIDDEN},vocab=${VOCAB}`,
      us,
      2 * act + 4 * tokens,
    );
    freeAll();
  }

  {
    const count = smoke ? 4096 : 4096 * 4096;
    const sets = setCount(6 * count);
    const f32 = rotating(4 * count, sets), bf16 = rotating(2 * count, sets);
    const down = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.castF32ToBf16(bf16[i], f32[i], count, stream);
    });
    printBench("cast_f32_to_bf16", `count=${count}`, down, 6 * count);
    const up = medianUs(gpu, stream, (rep) => {
      const i = rep % sets;
      ops.castBf16ToF32(f32[i], bf16[i], count, stream);
    });
    printBench("cast_bf16_to_f32", `count=${count}`, up, 6 * count);
    freeAll();
  }

  gpu.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
