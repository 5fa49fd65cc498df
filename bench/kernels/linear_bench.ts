/**
 * Linear-layer benchmark on the GPU: the decode GEMV (M = 1, 8, 16) and the prefill GEMM
 * (M = 256, 1024, 4096) on the Llama-3-8B weight shapes (N×K = 4096×4096, 1024×4096,
 * 14336×4096, 4096×14336, 128256×4096), Denali's kernels and, where the backend has one, the
 * vendor library (cuBLASLt) on the same buffers. Pair with linear_torch.py for torch.matmul.
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_bench.ts`
 *
 * Output: `BENCH copy_bandwidth gbps=...`, then per op and shape
 * `BENCH <op> m<M>_n<N>_k<K> time_us=<median> gbps=<x> tflops=<y>`, where bytes are x + W + out
 * once each, followed by a `# ...` line naming the kernel that ran and, for GEMVs, the fraction
 * of the copy bandwidth reached. Weights are rotated over enough copies (≥ 256 MiB together) that
 * L2 (50 MB) never holds the next call's weight; inputs are random bf16.
 *
 * @module
 */

import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { openCuda } from "../../backends/cuda.ts";
import { type LinearKernel, loadLinearOps } from "../../kernels/ops/linear.ts";
import { medianUs, printBench, printCopyBandwidth } from "./measure.ts";

const SHAPES: [number, number][] = [
  [4096, 4096],
  [1024, 4096],
  [14336, 4096],
  [4096, 14336],
  [128256, 4096],
];
const GEMV_MS = [1, 8, 16];
const GEMM_MS = [256, 1024, 4096];
/** The mma GEMM tilings timed one by one beside the automatic choice. */
const GEMM_VARIANTS: LinearKernel[] = ["gemm128", "gemm128x256", "wgmma128x256", "wgmma128x128"];
const ROTATION_BYTES = 256 * 2 ** 20;
const CHUNK_BYTES = 64 * 2 ** 20;

/** Fills `buffer` by tiling one random host chunk: random enough for timing, fast to upload. */
function fillRandom(gpu: Backend, buffer: DeviceBuffer, chunk: Uint16Array): void {
  const bytes = chunk.byteLength;
  for (let offset = 0; offset < buffer.bytes; offset += bytes) {
    const length = Math.min(bytes, buffer.bytes - offset);
    gpu.copyToDevice(buffer.slice(offset, length), new Uint8Array(chunk.buffer, 0, length));
  }
}

/** 64 MiB of seeded random bf16, uniform in ±scale. */
function randomChunk(scale: number, seed: number): Uint16Array {
  const chunk = new Uint16Array(CHUNK_BYTES / 2);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < chunk.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    chunk[i] = toBf16Bits(((s >>> 0) / 2 ** 32 * 2 - 1) * scale);
  }
  return chunk;
}

async function main() {
  const gpu = openCuda();
  const stream: Stream = gpu.createStream();
  console.log(`# device: ${gpu.info.name}, ${gpu.info.multiprocessors} SMs`);
  const copy = printCopyBandwidth(gpu, stream);
  const ops = await loadLinearOps(gpu);
  const variants = await Promise.all(
    GEMM_VARIANTS.map((kernel) => loadLinearOps(gpu, { kernel })),
  );
  const accel = gpu.gemmAccelerator;
  console.log(`# accelerator: ${accel?.name ?? "none"}`);
  const xChunk = randomChunk(1, 7);

  for (const [n, k] of SHAPES) {
    const wBytes = 2 * n * k;
    const copies = Math.max(1, Math.ceil(ROTATION_BYTES / wBytes));
    const wChunk = randomChunk(1 / Math.sqrt(k), n + k);
    const weights: DeviceBuffer[] = [];
    for (let i = 0; i < copies; i++) {
      const w = gpu.alloc(wBytes);
      fillRandom(gpu, w, wChunk);
      weights.push(w);
    }
    const maxM = GEMM_MS[GEMM_MS.length - 1];
    const x = gpu.alloc(2 * maxM * k);
    fillRandom(gpu, x, xChunk);
    const out = gpu.alloc(2 * maxM * n);
    gpu.synchronize();

    for (const m of [...GEMV_MS, ...GEMM_MS]) {
      const gemv = m <= 16;
      const shape = `m${m}_n${n}_k${k}`;
      const bytes = 2 * (m * k + n * k + m * n);
      const flops = 2 * m * n * k;
      const reps = flops > 1e12 ? 10 : 30;
      const us = medianUs(
        gpu,
        stream,
        (rep) => ops.linear(out, x, weights[rep % copies], m, n, k, stream),
        reps,
      );
      const op = gemv ? "linear_gemv" : "linear_gemm";
      printBench(op, shape, us, bytes, flops);
      const gbps = bytes / (us * 1e3);
      console.log(
        `# ${op} ${shape} kernel=${ops.kernelName(m, n, k, x, weights[0])}` +
          (gemv ? ` of_copy=${(gbps / copy).toFixed(3)}` : ""),
      );
      for (let v = 0; v < (gemv ? 0 : variants.length); v++) {
        const variantUs = medianUs(
          gpu,
          stream,
          (rep) => variants[v].linear(out, x, weights[rep % copies], m, n, k, stream),
          reps,
        );
        printBench(`linear_gemm_${GEMM_VARIANTS[v]}`, shape, variantUs, bytes, flops);
      }
      if (accel) {
        // As prepareLinear does at start: time the library's candidate algorithms, keep the best.
        accel.tune?.(
          out,
          x,
          weights[0],
          m,
          n,
          k,
          stream,
          (call) => medianUs(gpu, stream, call, 3, 2, 5) / 1e3,
        );
        const libUs = medianUs(
          gpu,
          stream,
          (rep) => accel.gemm(out, x, weights[rep % copies], m, n, k, stream),
          reps,
        );
        printBench(gemv ? "accel_linear_gemv" : "accel_linear_gemm", shape, libUs, bytes, flops);
        console.log(`# ${shape} denali/accelerator time ratio=${(us / libUs).toFixed(3)}`);
      }
    }
    for (const b of [...weights, x, out]) gpu.free(b);
  }
  gpu.close();
}

if (import.meta.main) await main();
