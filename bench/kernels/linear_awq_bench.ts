/**
 * 4-bit (W4A16, AWQ/GPTQ, group 128) linear benchmark on the GPU: the 4-bit decode GEMV (M = 1,
 * 8, 16) on the Llama-3-8B
 * weight shapes as Denali runs them (fused q/k/v 6144×4096, o 4096×4096, fused gate/up
 * 28672×4096, down 4096×14336, and the 1024×4096 k/v shape), beside the bf16 GEMV on the same
 * shape, and the prefill path (M = 256: dequantize + bf16 GEMM) beside the bf16 GEMM.
 *
 * The GEMV's bytes are the quantized weights plus their zeros and scales (n·k/2 + 5·n·k/128;
 * x and out are too small to matter at M = 1). Its reference is the read-only kernel (measure.ts readOnlyKernel)
 * over the codes, timed the same way and scaled to the zeros' and scales' extra bytes: the speed of just
 * reading them. Per shape at M = 1:
 *   TARGET gemv_awq_n<N>_k<K> value=<read-only time ÷ GEMV time> goal=0.85 met|MISSED
 * i.e. the fraction of the read bandwidth the GEMV reaches (issue 13). Weights rotate over
 * copies of at least 256 MiB, so L2 never holds the next call's weight.
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_awq_bench.ts`
 *
 * @module
 */

import { helpRequested } from "../../tools/cli.ts";
import type { DeviceBuffer, Stream } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import { loadLinearOps } from "../../ops/gpu/linear.ts";
import type { AwqWeight } from "../../ops/linear_weight.ts";
import { medianUs, printBench, printCopyBandwidth, readOnlyKernel } from "./measure.ts";

const USAGE = `Usage: deno run -A bench/kernels/linear_awq_bench.ts

4-bit GEMV (M = 1, 8, 16) and dequantize + GEMM (M = 256) on the Llama-3-8B shapes, beside bf16;
prints TARGET gemv_awq_<shape> (fraction of the read-only bandwidth, goal 0.85).
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
const GROUP = 128;

async function main() {
  const gpu = openCuda();
  const stream: Stream = gpu.createStream();
  console.log(`# device: ${gpu.info.name}, ${gpu.info.multiprocessors} SMs`);
  const copy = printCopyBandwidth(gpu, stream);
  const readOnly = await readOnlyKernel(gpu, stream);
  const ops = await loadLinearOps(gpu);
  const targets: string[] = [];

  for (const [n, k] of SHAPES) {
    const codeBytes = n * k / 2, groups = n * k / GROUP;
    const awqBytes = codeBytes + 5 * groups;
    const copies = Math.max(1, Math.ceil(ROTATION_BYTES / codeBytes));
    const scratch = gpu.alloc(ops.awqScratchBytes(n, k));
    const weights: AwqWeight[] = [];
    const bf16: DeviceBuffer[] = [];
    for (let i = 0; i < copies; i++) {
      const w: AwqWeight = {
        format: "awq-int4",
        codes: gpu.alloc(codeBytes),
        zeros: gpu.alloc(groups),
        scales: gpu.alloc(4 * groups),
        groupSize: GROUP,
        scratch,
      };
      // Codes 7 and 3 (or their neighbours), zero 8, f32 scales 0x3c3c3c3c (~0.0115).
      gpu.memset(w.codes, 0x37 + (i & 3), stream);
      gpu.memset(w.zeros, 8, stream);
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
    // The read-only kernel reads the codes (one buffer); the zeros and scales add 5/128 bytes
    // a weight, read at the same bandwidth.
    const readOnlyUs = readOnly.print(shape, weights.map((w) => w.codes), codeBytes, copy) *
      awqBytes / codeBytes;

    for (const m of [...GEMV_MS, GEMM_M]) {
      const label = `m${m}_${shape}`;
      const reps = m > 16 ? 10 : 30;
      const awqUs = medianUs(
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
      const bytes = awqBytes + 2 * m * (k + n);
      const kernel = m <= 16 ? "linear_awq_gemv" : "dequantize+gemm";
      printBench(
        m > 16 ? "linear_awq_gemm" : "linear_awq_gemv",
        label,
        awqUs,
        bytes,
        2 * m * n * k,
      );
      printBench(
        m > 16 ? "linear_gemm" : "linear_gemv",
        label,
        bf16Us,
        2 * n * k + 2 * m * (k + n),
      );
      const ofReadOnly = readOnlyUs / awqUs;
      console.log(
        `# ${label} kernel=${kernel} awq/bf16 time=${(awqUs / bf16Us).toFixed(3)}` +
          (m <= 16 ? ` of_read_only=${ofReadOnly.toFixed(3)}` : ""),
      );
      if (m === 1) {
        targets.push(
          `TARGET gemv_awq_${shape} value=${ofReadOnly.toFixed(3)} goal=${GOAL} ${
            ofReadOnly >= GOAL ? "met" : "MISSED"
          }`,
        );
      }
    }
    for (const w of weights) for (const b of [w.codes, w.zeros, w.scales]) gpu.free(b);
    for (const b of [...bf16, scratch, x, out]) gpu.free(b);
  }
  for (const line of targets) console.log(line);
  gpu.close();
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
