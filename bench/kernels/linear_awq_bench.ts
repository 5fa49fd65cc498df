/**
 * 4-bit (W4A16: AWQ/GPTQ, group 128) linear benchmark on the GPU: `linear` on 4-bit weights at
 * M = 1, 8, 16 (the tensor-core GEMV) on the Llama-3-8B shapes as Denali runs them (fused q/k/v 6144×4096, o
 * 4096×4096, fused gate/up 28672×4096, down 4096×14336, and the 1024×4096 k/v shape), beside the
 * bf16 GEMV on the same shape, and at M = 32 to 2048 the dequantize path (dequantize + bf16 GEMM)
 * beside the bf16 GEMM and the W4A16 GEMM (`w4a16_gemm`, with its time over both)
 * (bench/kernels/quantized_linear.ts).
 *
 * The GEMV's bytes are the codes plus their zeros and scales (n·k/2 + 5·n·k/128). Its reference
 * is the read-only kernel over the codes, scaled to those extra bytes. Per shape at M = 1:
 *   TARGET gemv_awq_n<N>_k<K> value=<read-only time ÷ GEMV time> goal=0.85 met|MISSED
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_awq_bench.ts`
 *
 * @module
 */

import type { AwqGemvVariant } from "../../ops/gpu/awq.ts";
import { helpRequested } from "../../tools/cli.ts";
import type { AwqWeight } from "../../ops/linear_weight.ts";
import {
  parseQuantizedBenchArgs,
  QUANTIZED_BENCH_FLAGS,
  type QuantizedFormat,
  runQuantizedLinearBench,
} from "./quantized_linear.ts";

const USAGE = `Usage: deno run -A bench/kernels/linear_awq_bench.ts

4-bit linear at M = 1, 8, 16 (GEMV) and 32..2048 (dequantize + GEMM, and the W4A16 GEMM) on the
Llama-3-8B shapes, beside bf16;
prints TARGET gemv_awq_<shape> (fraction of the read-only bandwidth, goal 0.85).
  --variant V        the M <= 8 GEMV's variant: s2_ps (default), s2, s3, s2_p, s3_p (ops/gpu/awq.ts)
  -h, --help         show this help
${QUANTIZED_BENCH_FLAGS}`;

const GROUP = 128;

const AWQ: QuantizedFormat<AwqWeight> = {
  name: "awq",
  codeBytes: (n, k) => n * k / 2,
  weightBytes: (n, k) => n * k / 2 + 5 * n * k / GROUP,
  scratchBytes: (ops, n, k) => ops.awqScratchBytes(n, k),
  alloc(gpu, n, k, scratch, copy, stream) {
    const groups = n * k / GROUP;
    const w: AwqWeight = {
      format: "awq-int4",
      codes: gpu.alloc(n * k / 2),
      zeros: gpu.alloc(groups),
      scales: gpu.alloc(4 * groups),
      groupSize: GROUP,
      scratch,
    };
    // Codes 7 and 3 (or neighbours), zero 8, f32 scales 0x3c3c3c3c (~0.0115).
    gpu.memset(w.codes, 0x37 + (copy & 3), stream);
    gpu.memset(w.zeros, 8, stream);
    gpu.memset(w.scales, 0x3c, stream);
    return w;
  },
  codes: (w) => w.codes,
  buffers: (w) => [w.codes, w.zeros, w.scales],
  kernel: (_ops, m) => m <= 16 ? "linear_awq_gemv (mma)" : "dequantize+gemm",
  gemmMs: [32, 64, 128, 256, 512, 2048],
  prefills: [{
    name: "w4a16_gemm",
    run: (ops, out, x, w, m, n, k, stream) => ops.awqGemm(out, x, w, m, n, k, stream),
  }],
};

// `linear` dequantizes past the GEMVs (the W4A16 GEMM is opt-in), so each `w4a16_gemm` line has
// the dequantize path beside it in the same run.
if (import.meta.main && !helpRequested(Deno.args, USAGE)) {
  const { split, variant, scope } = parseQuantizedBenchArgs(Deno.args);
  await runQuantizedLinearBench(
    AWQ,
    { awqGemvSplit: split, awqGemvVariant: variant as AwqGemvVariant | undefined },
    scope,
  );
}
