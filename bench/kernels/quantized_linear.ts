/**
 * The shared body of the quantized linear benchmarks (linear_fp8_bench.ts, linear_awq_bench.ts):
 * per Llama-3-8B weight shape, the quantized GEMV (M = 1, 8, 16) and the dequantize + GEMM path
 * (M = 256 and 2048) beside the bf16 kernels on the same shape, a format's own prefill path where
 * it has one (FP8: W8A8 on FP8 tensor cores), and the GEMV's fraction of the read-only
 * bandwidth over the same bytes (the quantized weights plus their scales and zeros):
 *   TARGET gemv_<format>_n<N>_k<K> value=<read-only time ÷ GEMV time> goal=0.85 met|MISSED
 * Weights rotate over copies of at least 256 MiB, so L2 never holds the next call's weight.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DeviceBuffer, Stream } from "../../backends/backend.ts";
import { openCuda } from "../../backends/cuda.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { type GpuLinearOps, type LinearOptions, loadLinearOps } from "../../ops/gpu/linear.ts";
import type { LinearWeight } from "../../ops/linear_weight.ts";
import { positiveList } from "../../tools/cli.ts";
import { medianUs, printBench, printCopyBandwidth, readOnlyKernel } from "./measure.ts";

/** One quantized weight format, as the benchmark needs it. */
export interface QuantizedFormat<W extends LinearWeight> {
  /** The name in labels and targets: "fp8", "awq". */
  readonly name: string;
  /** Bytes of the main buffer (the codes), which the read-only kernel reads. */
  codeBytes(n: number, k: number): number;
  /** Every byte the GEMV must read: the codes plus scales (and zeros). */
  weightBytes(n: number, k: number): number;
  /** Bytes of the dequantize scratch. */
  scratchBytes(ops: GpuLinearOps, n: number, k: number): number;
  /** Copy `copy` of a weight [n, k] with finite, realistic values, filled on `stream`. */
  alloc(
    gpu: GpuBackend,
    n: number,
    k: number,
    scratch: DeviceBuffer,
    copy: number,
    stream: Stream,
  ): W;
  /** The weight's codes (what the read-only kernel reads) and all its buffers. */
  codes(weight: W): DeviceBuffer;
  buffers(weight: W): DeviceBuffer[];
  /** The kernel `linear` runs for this call, for the log. */
  kernel(ops: GpuLinearOps, m: number, n: number, k: number, x: DeviceBuffer, weight: W): string;
  /** Optional: the rows of x timed past the GEMVs (default 256 and 2048). */
  readonly gemmMs?: readonly number[];
  /**
   * Optional: the format's own prefill paths, each run directly (`linear` takes one only where
   * prepareLinear timed it faster); `run` returns false where it can't run the call.
   */
  readonly prefills?: readonly {
    readonly name: string;
    run(
      ops: GpuLinearOps,
      out: DeviceBuffer,
      x: DeviceBuffer,
      weight: W,
      m: number,
      n: number,
      k: number,
      stream: Stream,
    ): boolean;
  }[];
}

const SHAPES: [number, number][] = [
  [6144, 4096],
  [4096, 4096],
  [1024, 4096],
  [28672, 4096],
  [4096, 14336],
];
const GEMV_MS = [1, 8, 16];
const GEMM_MS = [256, 2048];
const ROTATION_BYTES = 256 * 2 ** 20;
const GOAL = 0.85;

/** Which part of the benchmark to run, and a tag for its lines. */
export interface QuantizedBenchScope {
  /** Only the GEMV rows (M = 1, 8, 16), not the GEMM rows. */
  readonly gemvOnly?: boolean;
  /** The rows of x timed past the GEMVs, in place of the format's (e.g. decode batches). */
  readonly gemmMs?: readonly number[];
  /** Appended to every label and TARGET name, e.g. `_split2_s3_p` for a forced variant. */
  readonly suffix?: string;
}

/**
 * The command line the quantized benchmarks share: `--split N`, `--variant V`, `--gemv-only`,
 * `--ms LIST`.
 */
export interface QuantizedBenchArgs {
  /** A forced GEMV K split, or undefined for the default. */
  readonly split?: 1 | 2 | 4 | 8;
  /** A forced GEMV variant (the 4-bit bench), or undefined. */
  readonly variant?: string;
  /** The scope, with the forced split and variant as its label suffix. */
  readonly scope: QuantizedBenchScope;
}

/** Usage lines of {@link parseQuantizedBenchArgs}'s options. */
export const QUANTIZED_BENCH_FLAGS = `  --split N          force the GEMVs' K split (1, 2, 4, 8)
  --gemv-only        only M = 1, 8, 16
  --ms LIST          the rows of x past 16 to time, in place of the bench's own (e.g. 32,64,128)
A forced split (or variant) tags every label and TARGET name (e.g. n4096_k4096_split2).`;

/** Parses the shared flags; throws naming a bad --split or --ms. */
export function parseQuantizedBenchArgs(args: readonly string[]): QuantizedBenchArgs {
  const { values } = parseArgs({
    args: [...args],
    options: {
      split: { type: "string" },
      variant: { type: "string" },
      "gemv-only": { type: "boolean", default: false },
      ms: { type: "string" },
    },
  });
  const gemmMs = values.ms === undefined ? undefined : positiveList("--ms", values.ms);
  if (gemmMs?.some((m) => m <= 16)) {
    throw new RangeError(
      `--ms ${values.ms}: the rows past the GEMVs start at 17 (1-16 always run)`,
    );
  }
  const split = values.split === undefined ? undefined : Number(values.split);
  if (split !== undefined && ![1, 2, 4, 8].includes(split)) {
    throw new RangeError(`--split must be 1, 2, 4 or 8, got ${values.split}`);
  }
  const suffix = (split ? `_split${split}` : "") + (values.variant ? `_${values.variant}` : "");
  return {
    split: split as 1 | 2 | 4 | 8 | undefined,
    variant: values.variant,
    scope: { gemvOnly: values["gemv-only"], gemmMs, suffix },
  };
}

/** Runs the benchmark of `format` on the first CUDA device and prints its lines. */
export async function runQuantizedLinearBench<W extends LinearWeight>(
  format: QuantizedFormat<W>,
  options: LinearOptions = {},
  scope: QuantizedBenchScope = {},
): Promise<void> {
  const gpu = openCuda();
  const stream: Stream = gpu.createStream();
  console.log(`# device: ${gpu.info.name}, ${gpu.info.multiprocessors} SMs`);
  const copy = printCopyBandwidth(gpu, stream);
  const readOnly = await readOnlyKernel(gpu, stream);
  const ops = await loadLinearOps(gpu, options);
  const targets: string[] = [];
  const tag = format.name;
  const gemmMs = scope.gemvOnly ? [] : scope.gemmMs ?? format.gemmMs ?? GEMM_MS;
  const suffix = scope.suffix ?? "";
  const maxM = Math.max(...GEMV_MS, ...gemmMs);

  for (const [n, k] of SHAPES) {
    const codeBytes = format.codeBytes(n, k), quantizedBytes = format.weightBytes(n, k);
    const copies = Math.max(1, Math.ceil(ROTATION_BYTES / codeBytes));
    const scratch = gpu.alloc(format.scratchBytes(ops, n, k));
    const weights: W[] = [];
    const bf16: DeviceBuffer[] = [];
    for (let i = 0; i < copies; i++) weights.push(format.alloc(gpu, n, k, scratch, i, stream));
    for (let i = 0; i < Math.max(1, Math.ceil(ROTATION_BYTES / (2 * n * k))); i++) {
      const w = gpu.alloc(2 * n * k);
      gpu.memset(w, 0x3c, stream);
      bf16.push(w);
    }
    const x = gpu.alloc(2 * maxM * k), out = gpu.alloc(2 * maxM * n);
    gpu.memset(x, 0x3c, stream);
    stream.synchronize();
    const shape = `n${n}_k${k}${suffix}`;
    // The read-only kernel reads the codes (one buffer); scales and zeros are read at the same
    // bandwidth, so its time scales by the bytes.
    const readOnlyUs = readOnly.print(shape, weights.map(format.codes), codeBytes, copy) *
      quantizedBytes / codeBytes;

    for (const m of [...GEMV_MS, ...gemmMs]) {
      const label = `m${m}_${shape}`;
      const reps = m > 16 ? 10 : 30;
      const quantizedUs = medianUs(
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
      const kind = m > 16 ? "gemm" : "gemv";
      const io = 2 * m * (k + n);
      printBench(`linear_${tag}_${kind}`, label, quantizedUs, quantizedBytes + io, 2 * m * n * k);
      printBench(`linear_${kind}`, label, bf16Us, 2 * n * k + io);
      const ofReadOnly = readOnlyUs / quantizedUs;
      console.log(
        `# ${label} kernel=${format.kernel(ops, m, n, k, x, weights[0])} ${tag}/bf16 time=${
          (quantizedUs / bf16Us).toFixed(3)
        }` + (m <= 16 ? ` of_read_only=${ofReadOnly.toFixed(3)}` : ""),
      );
      for (const prefill of m > 16 ? format.prefills ?? [] : []) {
        if (!prefill.run(ops, out, x, weights[0], m, n, k, stream)) {
          console.log(
            `# ${label} ${prefill.name}: did not run (a shape it does not take, or the fallback above)`,
          );
          continue;
        }
        const prefillUs = medianUs(
          gpu,
          stream,
          (rep) => prefill.run(ops, out, x, weights[rep % copies], m, n, k, stream),
          reps,
        );
        printBench(
          `linear_${tag}_${prefill.name}`,
          label,
          prefillUs,
          quantizedBytes + io,
          2 * m * n * k,
        );
        console.log(
          `# ${label} ${prefill.name}/bf16 time=${(prefillUs / bf16Us).toFixed(3)} ` +
            `${prefill.name}/dequantize time=${(prefillUs / quantizedUs).toFixed(3)}`,
        );
      }
      if (m === 1) {
        targets.push(
          `TARGET gemv_${tag}_${shape} value=${ofReadOnly.toFixed(3)} goal=${GOAL} ${
            ofReadOnly >= GOAL ? "met" : "MISSED"
          }`,
        );
      }
    }
    for (const w of weights) for (const b of format.buffers(w)) gpu.free(b);
    for (const b of [...bf16, scratch, x, out]) gpu.free(b);
  }
  for (const line of targets) console.log(line);
  gpu.close();
}
