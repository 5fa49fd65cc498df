/**
 * Sampling kernel benchmarks at Llama-3's vocabulary (128256) and batch 1, 64 and 256, one
 * `BENCH` line per op and shape plus the device's copy bandwidth, for comparison with
 * bench/kernels/sampling_torch.py.
 *
 * Usage (GPU machine): `deno run -A bench/kernels/sampling_bench.ts`
 * `--smoke` runs tiny shapes on the CPU backend, only to check the script itself.
 *
 * Ops: argmax; log_softmax; and sample with three parameter sets, the same in every row:
 * sample_topk_topp (T 0.7, top-k 50, top-p 0.9), sample_topp (T 1, top-p 0.95) and sample_plain
 * (T 1, no filters). Logits (and log_softmax's output) rotate through an arena of at least
 * 128 MiB (over twice the H100's 50 MB L2), so each call reads cold logits, as after the LM
 * head. Bytes counted are those the op must move: the logits read once, outputs written once.
 * sample makes several passes over its workspace, so its GB/s is a floor-normalised figure.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuSamplingOps } from "../../ops/cpu/sampling.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { SamplingBuffers, SamplingOps } from "../../ops/ops.ts";
import { loadSamplingOps } from "../../ops/gpu/sampling.ts";
import { randomArray } from "../../tests/support/numeric.ts";
import {
  benchBuffers,
  medianUs,
  printBench,
  printCopyBandwidth,
  setCount as setCountIn,
} from "./measure.ts";
import { helpRequested } from "../../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/kernels/sampling_bench.ts [--smoke]

Sampling kernel benchmarks at Llama-3's vocabulary on an NVIDIA GPU: one BENCH line each.
  --smoke      tiny shapes on the CPU backend, only to check the script
  -h, --help   show this help`;

/** Runs the benchmark; only when this file is the main module (deno bench must not run it). */
async function main(): Promise<void> {
  const smoke = Deno.args.includes("--smoke");
  const gpu: Backend = smoke ? new CpuBackend() : openCuda();
  const ops: SamplingOps = smoke ? cpuSamplingOps() : await loadSamplingOps(gpu);
  const stream = gpu.createStream();
  const ARENA_BYTES = smoke ? 2 ** 20 : 128 * 2 ** 20;
  const MAX_SETS = 1024;
  const VOCAB = smoke ? 1000 : 128256;
  const BATCHES = smoke ? [1, 4] : [1, 64, 256];

  const SAMPLE_CONFIGS = [
    { op: "sample_topk_topp", temperature: 0.7, topK: 50, topP: 0.9 },
    { op: "sample_topp", temperature: 1, topK: 0, topP: 0.95 },
    { op: "sample_plain", temperature: 1, topK: 0, topP: 1 },
  ] as const;

  const { alloc, freeAll } = benchBuffers(gpu, stream);

  /** How many copies of a `bytes`-sized working set fill the arena (at least 2). */
  function setCount(bytes: number): number {
    return setCountIn(bytes, ARENA_BYTES, MAX_SETS);
  }

  /** `sets` slices of `bytes` each (256-byte aligned) of one arena, all holding `data`. */
  function rotating(bytes: number, sets: number, data?: Float32Array): DeviceBuffer[] {
    const stride = Math.ceil(bytes / 256) * 256;
    const arena = alloc(stride * sets);
    const slices = Array.from({ length: sets }, (_, i) => arena.slice(i * stride, bytes));
    if (data) { for (const slice of slices) gpu.copyToDevice(slice, data); }
    return slices;
  }

  function upload(data: ArrayBufferView): DeviceBuffer {
    const buffer = alloc(Math.max(8, data.byteLength));
    gpu.copyToDevice(buffer, data);
    return buffer;
  }

  printCopyBandwidth(gpu, stream, smoke ? 2 ** 24 : 2 ** 30);

  for (const batch of BATCHES) {
    const shape = `batch=${batch},vocab=${VOCAB}`;
    const logitBytes = 4 * batch * VOCAB;
    // Logits as after an LM head: random, spread over ±8.
    const host = randomArray(batch * VOCAB, 17 + batch, -8, 8);

    {
      const sets = setCount(logitBytes);
      const logits = rotating(logitBytes, sets, host);
      const ids = alloc(4 * batch);
      const us = medianUs(gpu, stream, (rep) => {
        ops.argmax(ids, logits[rep % sets], batch, VOCAB, stream);
      });
      printBench("argmax", shape, us, logitBytes + 4 * batch);
      freeAll();
    }

    {
      const sets = setCount(2 * logitBytes);
      const logits = rotating(logitBytes, sets, host);
      const out = rotating(logitBytes, sets);
      const us = medianUs(gpu, stream, (rep) => {
        const i = rep % sets;
        ops.logSoftmax(out[i], logits[i], batch, VOCAB, stream);
      });
      printBench("log_softmax", shape, us, 2 * logitBytes);
      freeAll();
    }

    for (const config of SAMPLE_CONFIGS) {
      const sets = setCount(logitBytes);
      const logits = rotating(logitBytes, sets, host);
      const ids = alloc(4 * batch);
      const workspace = alloc(ops.sampleWorkspaceBytes(batch, VOCAB));
      const seeds = new BigUint64Array(batch);
      for (let b = 0; b < batch; b++) {
        seeds[b] = BigInt(b) * 0x9e3779b97f4a7c15n & 0xffffffffffffffffn;
      }
      const steps = new Int32Array(batch);
      const params: SamplingBuffers = {
        temperature: upload(new Float32Array(batch).fill(config.temperature)),
        topK: upload(new Int32Array(batch).fill(config.topK)),
        topP: upload(new Float32Array(batch).fill(config.topP)),
        minP: upload(new Float32Array(batch)),
        seed: upload(seeds),
        step: upload(steps),
      };
      const us = medianUs(gpu, stream, (rep) => {
        ops.sample(ids, logits[rep % sets], params, batch, VOCAB, workspace, stream);
      });
      printBench(config.op, shape, us, logitBytes + 4 * batch);
      freeAll();
    }
  }

  gpu.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
