/**
 * Linear-layer benchmark on the GPU: the decode GEMV (M = 1, 8, 16) and the prefill GEMM
 * (M = 256, 1024, 4096) on the Llama-3-8B weight shapes (N×K = 4096×4096, 1024×4096,
 * 14336×4096, 4096×14336, 128256×4096), or the M and shapes `--ms` and `--shapes` name,
 * Denali's kernels (every GEMM tiling, stream-K forms included, and up to 128 rows the
 * swapped-operand tiles, with a `# ... time ratio` line for each stream-K or swapped form against
 * the data-parallel tiles it would replace) and, where the backend has one, the
 * vendor library (cuBLASLt) on the same buffers. Pair with linear_torch.py for torch.matmul.
 *
 * Usage (on the GPU machine): `deno run -A bench/kernels/linear_bench.ts [--gemv-sweep]`
 *
 * Output: `BENCH copy_bandwidth gbps=...`, then per op and shape
 * `BENCH <op> m<M>_n<N>_k<K> time_us=<median> gbps=<x> tflops=<y>`, where bytes are x + W + out
 * once each, followed by a `# ...` line naming the kernel that ran and, for GEMVs, its launch
 * (kernel function, K split, steps in flight, programmatic or not) and the fraction of the copy
 * bandwidth reached. Each GEMV is also timed launched plainly (`linear_gemv_plain_launch`): the
 * difference is what programmatic dependent launch gains over back-to-back calls. Weights are
 * rotated over enough copies (≥ 256 MiB together) that L2 (50 MB) never holds the next call's
 * weight; inputs are random bf16. Per weight shape, `BENCH copy_same_size n<N>_k<K>` times a
 * device-to-device copy of one weight the same way: what a call moving that many bytes reaches;
 * `BENCH read_only_same_size n<N>_k<K>` times a kernel that only reads one weight (measure.ts
 * readOnlyKernel), and each op's `#` line gives `of_read_only`, that kernel's time over the op's
 * (and the library's, on its ratio line): at the decode batches where a GEMM still streams its
 * weight (M up to ~128 on an H100 or H200), how close it comes to just reading it.
 *
 * `--gemv-sweep` times only the GEMVs (M = 1, 8, 16), each shape also under every forced
 * configuration (`linear_gemv_sweep_r<rows>_k<split>_s<stages>`: 16 or 8 W rows per warp group,
 * K split 1, 2, 4 or 8, one or two steps in flight; all launched programmatically where the
 * device allows), then prints the fastest configuration per shape and M, to pick the defaults of
 * ops/gpu/linear.ts from one run.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { helpRequested, positiveList } from "../../tools/cli.ts";
import type { Backend, DeviceBuffer, Stream } from "../../backends/backend.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { openCuda } from "../../backends/cuda.ts";
import {
  type GpuLinearOps,
  type LinearKernel,
  type LinearOptions,
  loadLinearOps,
  WGMMA_KERNELS,
} from "../../ops/gpu/linear.ts";
import { medianUs, printBench, printCopyBandwidth, readOnlyKernel } from "./measure.ts";

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
const GEMM_VARIANTS: LinearKernel[] = ["gemm128", "gemm128x256", ...WGMMA_KERNELS];
/** The swapped-operand tilings (tokens as wgmma's N) are timed only up to this many rows. */
const SWAP_BENCH_MAX_M = 128;
/** Each stream-K or swapped-operand GEMM and the tiles it would replace, for the ratio lines. */
const ALTERNATIVE_PAIRS: [LinearKernel, LinearKernel][] = [
  ["wgmmaSk128x256", "wgmma128x256"],
  ["wgmmaSk128x128", "wgmma128x128"],
  ["wgmmaSwap128x64", "wgmma128x128"],
  ["wgmmaSwap128x32", "wgmma128x128"],
];
/** The GEMV configurations of `--gemv-sweep`: rows per warp group, K split, steps in flight. */
const SWEEP: LinearOptions[] = (["gemv16", "gemv8"] as const).flatMap((kernel) =>
  ([1, 2, 4, 8] as const).flatMap((gemvSplit) =>
    ([1, 2] as const).map((gemvStages) => ({ kernel, gemvSplit, gemvStages }))
  )
);
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

/** A sweep configuration's label, e.g. `r16_k8_s1`. */
function sweepLabel(options: LinearOptions): string {
  const rows = options.kernel === "gemv16" ? 16 : 8;
  return `r${rows}_k${options.gemvSplit}_s${options.gemvStages}`;
}

/** How `ops` runs a GEMV shape, for the `#` lines. */
function describeGemv(
  ops: GpuLinearOps,
  m: number,
  n: number,
  k: number,
  x: DeviceBuffer,
  w: DeviceBuffer,
) {
  const g = ops.gemvLaunch(m, n, k, x, w);
  if (g === null) return "";
  return ` launch=${g.kernel} split=${g.split} stages=${g.stages} blocks=${g.blocks}` +
    ` programmatic=${g.programmatic}`;
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
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "gemv-sweep": { type: "boolean" },
      ms: { type: "string" },
      shapes: { type: "string" },
    },
  });
  const sweep = values["gemv-sweep"] ?? false;
  const ms = values.ms === undefined ? [...GEMV_MS, ...GEMM_MS] : positiveList("--ms", values.ms);
  const shapes: [number, number][] = values.shapes === undefined
    ? SHAPES
    : values.shapes.split(",").map((shape) => {
      const [n, k] = positiveList("--shapes", shape.replace("x", ","));
      if (k === undefined) throw new Error(`--shapes ${shape}: write each shape as NxK`);
      return [n, k];
    });
  const gpu = openCuda();
  const stream: Stream = gpu.createStream();
  const { computeCapability: [major, minor], driverVersion } = gpu.info;
  console.log(
    `# device: ${gpu.info.name}, ${gpu.info.multiprocessors} SMs, compute capability ` +
      `${major}.${minor}, driver ${driverVersion}`,
  );
  const copy = printCopyBandwidth(gpu, stream);
  const readOnly = await readOnlyKernel(gpu, stream);
  const ops = await loadLinearOps(gpu);
  const plain = await loadLinearOps(gpu, { programmatic: false });
  const variants = await Promise.all(
    (sweep ? [] : GEMM_VARIANTS).map((kernel) => loadLinearOps(gpu, { kernel })),
  );
  const sweepOps = await Promise.all((sweep ? SWEEP : []).map((o) => loadLinearOps(gpu, o)));
  const best: string[] = [];
  const accel = sweep ? null : gpu.gemmAccelerator;
  console.log(`# accelerator: ${accel?.name ?? "none"}`);
  const xChunk = randomChunk(1, 7);

  for (const [n, k] of shapes) {
    const wBytes = 2 * n * k;
    const copies = Math.max(1, Math.ceil(ROTATION_BYTES / wBytes));
    const wChunk = randomChunk(1 / Math.sqrt(k), n + k);
    const weights: DeviceBuffer[] = [];
    for (let i = 0; i < copies; i++) {
      const w = gpu.alloc(wBytes);
      fillRandom(gpu, w, wChunk);
      weights.push(w);
    }
    const maxM = Math.max(...ms);
    const x = gpu.alloc(2 * maxM * k);
    fillRandom(gpu, x, xChunk);
    const out = gpu.alloc(2 * maxM * n);
    gpu.synchronize();

    // What the copy engine path reaches on a working set of this size: the same back-to-back
    // timing of a device-to-device copy of one (rotated) weight, bytes read plus written. Small
    // weights pay the fixed cost of every call, so this is the ceiling a GEMV of W can expect.
    const copyDst = gpu.alloc(wBytes);
    const copyUs = medianUs(
      gpu,
      stream,
      (rep) => gpu.copyDevice(copyDst, weights[rep % copies], stream),
    );
    printBench("copy_same_size", `n${n}_k${k}`, copyUs, 2 * wBytes);
    console.log(
      `# copy_same_size n${n}_k${k} of_copy=${(2 * wBytes / (copyUs * 1e3) / copy).toFixed(3)}`,
    );
    gpu.free(copyDst);
    const readOnlyUs = readOnly.print(`n${n}_k${k}`, weights, wBytes, copy);

    for (const m of sweep ? GEMV_MS : ms) {
      const gemv = m <= 16;
      const shape = `m${m}_n${n}_k${k}`;
      const bytes = 2 * (m * k + n * k + m * n);
      const flops = 2 * m * n * k;
      const reps = flops > 1e12 ? 10 : 30;
      // One set of ops (auto, plain launch, a forced kernel) on this shape, weights rotated.
      const time = (o: GpuLinearOps) =>
        medianUs(
          gpu,
          stream,
          (rep) => o.linear(out, x, weights[rep % copies], m, n, k, stream),
          reps,
        );
      const us = time(ops);
      const op = gemv ? "linear_gemv" : "linear_gemm";
      printBench(op, shape, us, bytes, flops);
      const gbps = bytes / (us * 1e3);
      console.log(
        `# ${op} ${shape} kernel=${ops.kernelName(m, n, k, x, weights[0])}` +
          describeGemv(ops, m, n, k, x, weights[0]) +
          (gemv ? ` of_copy=${(gbps / copy).toFixed(3)}` : "") +
          ` of_read_only=${(readOnlyUs / us).toFixed(3)}`,
      );
      if (gemv) {
        const plainUs = time(plain);
        printBench("linear_gemv_plain_launch", shape, plainUs, bytes, flops);
        console.log(`# ${shape} programmatic/plain time ratio=${(us / plainUs).toFixed(3)}`);
        let bestUs = us, bestLabel = "auto";
        sweepOps.forEach((o, i) => {
          const label = sweepLabel(SWEEP[i]);
          const sweepUs = time(o);
          printBench(`linear_gemv_sweep_${label}`, shape, sweepUs, bytes, flops);
          if (sweepUs < bestUs) [bestUs, bestLabel] = [sweepUs, label];
        });
        if (sweep) {
          const ratio = (t: number) => (bytes / (t * 1e3) / copy).toFixed(3);
          best.push(
            `# best ${shape}: ${bestLabel} ${bestUs.toFixed(2)} us of_copy=${ratio(bestUs)}` +
              ` (auto ${us.toFixed(2)} us of_copy=${ratio(us)}, plain launch ${
                plainUs.toFixed(2)
              } us of_copy=${ratio(plainUs)})`,
          );
          console.log(best[best.length - 1]);
        }
      }
      const variantUs: number[] = [];
      for (let v = 0; v < (gemv ? 0 : variants.length); v++) {
        if (GEMM_VARIANTS[v].startsWith("wgmmaSwap") && m > SWAP_BENCH_MAX_M) continue;
        variantUs[v] = time(variants[v]);
        printBench(`linear_gemm_${GEMM_VARIANTS[v]}`, shape, variantUs[v], bytes, flops);
      }
      // Each stream-K or swapped form against the tiles it replaces, same shape and weights.
      for (const [sk, dp] of ALTERNATIVE_PAIRS) {
        const [s, d] = [GEMM_VARIANTS.indexOf(sk), GEMM_VARIANTS.indexOf(dp)];
        if (variantUs[s] !== undefined && variantUs[d] !== undefined) {
          console.log(
            `# ${shape} ${sk}/${dp} time ratio=${(variantUs[s] / variantUs[d]).toFixed(3)}`,
          );
        }
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
          // One call per sample, each behind medianUs's L2-flushing fill: the weight comes from
          // DRAM as in the timed runs (which rotate weights), not from L2, where back-to-back
          // calls on one weight would leave it and favour other algorithms.
          (call) => medianUs(gpu, stream, call, 5, 1, 1) / 1e3,
        );
        const libUs = medianUs(
          gpu,
          stream,
          (rep) => accel.gemm(out, x, weights[rep % copies], m, n, k, stream),
          reps,
        );
        printBench(gemv ? "accel_linear_gemv" : "accel_linear_gemm", shape, libUs, bytes, flops);
        console.log(
          `# ${shape} denali/accelerator time ratio=${(us / libUs).toFixed(3)} ` +
            `accelerator of_read_only=${(readOnlyUs / libUs).toFixed(3)}`,
        );
      }
    }
    for (const b of [...weights, x, out]) gpu.free(b);
  }
  if (sweep) console.log(["# GEMV sweep: fastest configuration per shape", ...best].join("\n"));
  gpu.close();
}

const USAGE = `Usage: deno run -A bench/kernels/linear_bench.ts [--gemv-sweep] [--ms LIST]
       [--shapes LIST]

GEMV and GEMM benchmarks at Llama-3-8B shapes on an NVIDIA GPU: one BENCH line each.
  --gemv-sweep   also sweep the GEMV variants' options
  --ms LIST      rows of x to time (default 1,8,16,256,1024,4096), e.g. 64,128,192,256
  --shapes LIST  weight shapes NxK (default the Llama-3-8B ones), e.g. 28672x4096,6144x4096
  -h, --help     show this help`;

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
