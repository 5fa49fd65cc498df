/**
 * FP8 (W8A16) linear benchmark on the GPU: the FP8 decode GEMV (M = 1, 8, 16) on the Llama-3-8B
 * weight shapes as Denali runs them (fused q/k/v 6144×4096, o 4096×4096, fused gate/up
 * 28672×4096, down 4096×14336, and the 1024×4096 k/v shape), beside the bf16 GEMV on the same
 * shape, and the paths past 16 rows (M = 256 and 2048, or `--ms`: dequantize + bf16 GEMM, W8A8 —
 * x quantized per token, Denali's wgmma GEMM and the vendor library's FP8 matmul where the
 * library has it — and, up to 64 rows, the GEMV over 16-row chunks) beside the bf16 GEMM
 * (bench/kernels/quantized_linear.ts). With `--ms 32,64,128,256` it times the decode batches
 * past the GEMV; DENALI_SWAP_AB=1 puts the swapped-operand W8A8 tiles under `w8a8_wgmma` up to 64
 * rows.
 *
 * The GEMV's bytes are the quantized weights plus their scales (n·k + 4·n; x and out are too
 * small to matter at M = 1). Its reference is the read-only kernel (measure.ts readOnlyKernel)
 * over the codes, timed the same way and scaled to the scales' extra bytes: the speed of just
 * reading them. Per shape at M = 1:
 *   TARGET gemv_fp8_n<N>_k<K> value=<read-only time ÷ GEMV time> goal=0.85 met|MISSED
 * i.e. the fraction of the read bandwidth the GEMV reaches (issue 13).
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_fp8_bench.ts`
 *
 * @module
 */

import { helpRequested } from "../../tools/cli.ts";
import type { Fp8Weight } from "../../ops/linear_weight.ts";
import {
  parseQuantizedBenchArgs,
  QUANTIZED_BENCH_FLAGS,
  type QuantizedFormat,
  runQuantizedLinearBench,
} from "./quantized_linear.ts";

const USAGE = `Usage: deno run -A bench/kernels/linear_fp8_bench.ts

FP8 GEMV (M = 1, 8, 16) and, past 16 rows (M = 256, 2048, or --ms), dequantize + GEMM, W8A8
and the 16-row GEMV chunks, on the Llama-3-8B shapes, beside bf16;
prints TARGET gemv_fp8_<shape> (fraction of the read-only bandwidth, goal 0.85).
  -h, --help         show this help
${QUANTIZED_BENCH_FLAGS}`;

const FP8: QuantizedFormat<Fp8Weight> = {
  name: "fp8",
  codeBytes: (n, k) => n * k,
  weightBytes: (n, k) => n * k + 4 * n,
  // Room for W8A8's quantized x at the largest M as well as the dequantized weight.
  scratchBytes: (ops, n, k) =>
    Math.max(ops.fp8ScratchBytes(n, k), ops.fp8W8a8ScratchBytes(2048, k)),
  alloc(gpu, n, k, scratch, copy, stream) {
    const w: Fp8Weight = {
      format: "fp8-e4m3",
      data: gpu.alloc(n * k),
      scales: gpu.alloc(4 * n),
      scratch,
    };
    // Code 0x2c (0.375) and f32 scales 0x3c3c3c3c (~0.0115): finite, realistic magnitudes.
    gpu.memset(w.data, 0x2c + (copy & 3), stream);
    gpu.memset(w.scales, 0x3c, stream);
    return w;
  },
  codes: (w) => w.data,
  buffers: (w) => [w.data, w.scales],
  kernel: (ops, m, n, k, x, w) => ops.fp8GemvKernel(m, n, k, x, w) ?? "dequantize+gemm",
  prefills: [
    {
      name: "w8a8_wgmma",
      run: (ops, out, x, w, m, n, k, stream) => ops.fp8W8a8(out, x, w, m, n, k, stream, "wgmma"),
    },
    {
      name: "w8a8_cublaslt",
      run: (ops, out, x, w, m, n, k, stream) => ops.fp8W8a8(out, x, w, m, n, k, stream, "library"),
    },
    {
      // The W8A16 GEMV over x's rows in chunks of 16 (17-64 rows), each chunk reading W again.
      name: "gemv_rows",
      run: (ops, out, x, w, m, n, k, stream) => ops.fp8GemvRows(out, x, w, m, n, k, stream),
    },
  ],
};

if (import.meta.main && !helpRequested(Deno.args, USAGE)) {
  const { split, variant, scope } = parseQuantizedBenchArgs(Deno.args);
  if (variant !== undefined) throw new RangeError("--variant is the 4-bit bench's; FP8 has none");
  await runQuantizedLinearBench(FP8, { fp8GemvSplit: split }, scope);
}
