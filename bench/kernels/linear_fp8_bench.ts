/**
 * FP8 (W8A16) linear benchmark on the GPU: the FP8 decode GEMV (M = 1, 8, 16) on the Llama-3-8B
 * weight shapes as Denali runs them (fused q/k/v 6144×4096, o 4096×4096, fused gate/up
 * 28672×4096, down 4096×14336, and the 1024×4096 k/v shape), beside the bf16 GEMV on the same
 * shape, and the prefill path (M = 256: dequantize + bf16 GEMM) beside the bf16 GEMM.
 *
 * The GEMV's bytes are the quantized weights plus their scales (n·k + 4·n; x and out are too
 * small to matter at M = 1). Its reference is the read-only kernel (measure.ts readOnlyKernel)
 * over the codes, timed the same way and scaled to the scales' extra bytes: the speed of just
 * reading them. Per shape at M = 1:
 *   TARGET gemv_fp8_n<N>_k<K> value=<read-only time ÷ GEMV time> goal=0.85 met|MISSED
 * i.e. the fraction of the read bandwidth the GEMV reaches (issue 13). Weights rotate over
 * copies of at least 256 MiB, so L2 never holds the next call's weight.
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_fp8_bench.ts`
 *
 * @module
 */

import { helpRequested } from "../../tools/cli.ts";
import type { DeviceBuffer, Stream } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import { loadLinearOps } from "../../ops/gpu/linear.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import { medianUs, printBench, printCopyBandwidth, readOnlyKernel } from "./measure.ts";

const USAGE = `Usage: deno run -A bench/kernels/linear_fp8_bench.ts

FP8 GEMV (M = 1, 8, 16) and dequantize + GEMM (M = 256) on the Llama-3-8B shapes, beside bf16;
prints TARGET gemv_fp8_<shape> (fraction of the read-only bandwidth, goal 0.85).
  -h, --help   show this help`;

const SHAPES: [number, number][] = [
  [6144, 4096],
  [4096, 4096],
  [1024, 4096],
  [28672, 4096],
  [4096, 14336],
];
const GEMV_MS = [1, 8, 16];
const GEMM_M = 256;
const ROTATION_BYTES = 256 * 2 ** 20;
const GOAL = 0.85;

async function main() {
  const gpu = openCuda();
  const stream: Stream = gpu.createStream();
  console.log(`# device: ${gpu.info.name}, ${gpu.info.multiprocessors} SMs`);
  const copy = printCopyBandwidth(gpu, stream);
  const readOnly = await readOnlyKernel(gpu, stream);
  const ops = await loadLinearOps(gpu);
  const targets: string[] = [];

  for (const [n, k] of SHAPES) {
    const fp8Bytes = n * k + 4 * n;
    const copies = Math.max(1, Math.ceil(ROTATION_BYTES / (n * k)));
    const scratch = gpu.alloc(ops.fp8ScratchBytes(n, k));
    const weights: Fp8Weight[] = [];
    const bf16: DeviceBuffer[] = [];
    for (let i = 0; i < copies; i++) {
      const w: Fp8Weight = {
        format: "fp8-e4m3",
        data: gpu.alloc(n * k),
        scales: gpu.alloc(4 * n),
        scratch,
      };
      // Code 0x2c (0.375) and f32 scales 0x3c3c3c3c (~0.0115): finite, realistic magnitudes.
      gpu.memset(w.data, 0x2c + (i & 3), stream);
      gpu.memset(w.scales, 0x3c, stream);
      weights.push(w);
    }
    for (let i = 0; i < Math.max(1, Math.ceil(copies / 2)); i++) {
      const w = gpu.alloc(2 * n * k);
      gpu.memset(w, 0x3c, stream);
      bf16.push(w);
    }
    const x = gpu.alloc(2 * GEMM_M * k), out = gpu.alloc(2 * GEMM_M * n);
    gpu.memset(x, 0x3c, stream);
    stream.synchronize();
    const shape = `n${n}_k${k}`;
    // The read-only kernel reads the codes (one buffer); the scales add 4/k to the bytes, read
    // at the same bandwidth.
    const readOnlyUs = readOnly.print(shape, weights.map((w) => w.data), n * k, copy) *
      fp8Bytes / (n * k);

    for (const m of [...GEMV_MS, GEMM_M]) {
      const label = `m${m}_${shape}`;
      const reps = m > 16 ? 10 : 30;
      const fp8Us = medianUs(
        gpu,
        stream,
        (rep) => ops.linear(out, x, weights[rep % copies], m, n, k, stream),
        reps,
      );
      const bf16Us = medianUs(
        gpu,
        stream,
        (rep) => ops.linear(out, x, bf16[rep % bf16.length], m, n, k, stream),
        reps,
      );
      const bytes = fp8Bytes + 2 * m * (k + n);
      const kernel = ops.fp8GemvKernel(m, n, k, x, weights[0]) ?? "dequantize+gemm";
      printBench(
        m > 16 ? "linear_fp8_gemm" : "linear_fp8_gemv",
        label,
        fp8Us,
        bytes,
        2 * m * n * k,
      );
      printBench(
        m > 16 ? "linear_gemm" : "linear_gemv",
        label,
        bf16Us,
        2 * n * k + 2 * m * (k + n),
      );
      const ofReadOnly = readOnlyUs / fp8Us;
      console.log(
        `# ${label} kernel=${kernel} fp8/bf16 time=${(fp8Us / bf16Us).toFixed(3)}` +
          (m <= 16 ? ` of_read_only=${ofReadOnly.toFixed(3)}` : ""),
      );
      if (m === 1) {
        targets.push(
          `TARGET gemv_fp8_${shape} value=${ofReadOnly.toFixed(3)} goal=${GOAL} ${
            ofReadOnly >= GOAL ? "met" : "MISSED"
          }`,
        );
      }
    }
    for (const w of weights) {
      gpu.free(w.data);
      gpu.free(w.scales);
    }
    for (const b of [...bf16, scratch, x, out]) gpu.free(b);
  }
  for (const line of targets) console.log(line);
  gpu.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
