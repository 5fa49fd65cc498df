/**
 * A CUDA C kernel written in a template string, compiled at run time (NVRTC on NVIDIA, hipRTC on
 * AMD), launched through a generated launcher, and checked against the same computation on the
 * CPU. The second compile of the same source comes from the disk cache.
 *
 * ```sh
 * deno run -A examples/custom_kernel.ts            # needs a GPU and NVRTC (or hipRTC)
 * deno run -A examples/custom_kernel.ts --rows 4096 --cols 4096
 * ```
 *
 * The kernel normalises each row of a matrix to unit L2 norm and scales it: one block per row,
 * a shared-memory reduction for the sum of squares. Any `extern "C" __global__` function works
 * the same way: its parameters are read from the source, and `mod.launchers.<name>.launch` takes
 * grid, block, shared memory bytes, the stream, then the kernel's own arguments in order.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openBackend } from "../backends/select.ts";
import { compileKernels } from "../kernels/compile.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE =
  `Usage: deno run -A examples/custom_kernel.ts [--rows N] [--cols N] [--backend cuda|hip]

Compiles a row-normalising CUDA C kernel at run time, launches it and checks it against the CPU.
Needs a GPU and NVRTC (set DENALI_LIBNVRTC to its path if it is not found) or hipRTC.
  --rows N      matrix rows (default 1024)
  --cols N      matrix columns (default 4096)
  --backend     cuda or hip (default: the first found)
  -h, --help    show this help`;

/** The kernel: y[r, :] = scale · x[r, :] / ||x[r, :]||, one 256-thread block per row. */
export const SOURCE = `
extern "C" __global__ void __launch_bounds__(256) l2_normalize_rows(
    float* __restrict__ y, const float* __restrict__ x, int cols, float scale) {
  __shared__ float partial[256];
  const float* row = x + (size_t)blockIdx.x * cols;
  float sum = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += row[c] * row[c];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  const float factor = scale * rsqrtf(partial[0] + 1e-12f);
  float* out = y + (size_t)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = row[c] * factor;
}
`;

/** The CPU reference, in f64. */
export function l2NormalizeRows(x: Float32Array, rows: number, cols: number, scale: number) {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += x[r * cols + c] ** 2;
    const factor = scale / Math.sqrt(sum + 1e-12);
    for (let c = 0; c < cols; c++) y[r * cols + c] = x[r * cols + c] * factor;
  }
  return y;
}

async function main(args: string[]): Promise<number> {
  if (helpRequested(args, USAGE)) return 0;
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: "string", default: "1024" },
      cols: { type: "string", default: "4096" },
      backend: { type: "string" },
    },
  });
  const rows = Number(values.rows), cols = Number(values.cols), scale = 2.5;
  const gpu = openBackend((values.backend ?? "auto") as "auto");
  if (gpu.kind === "cpu") {
    console.error("no GPU found: run-time kernels need the cuda or hip backend");
    gpu.close();
    return 1;
  }
  try {
    console.log(`device: ${gpu.info.name} (${gpu.info.arch})`);
    let t = performance.now();
    const mod = await compileKernels(gpu, SOURCE, { name: "custom_kernel", arch: "auto" });
    console.log(
      `compiled in ${(performance.now() - t).toFixed(1)} ms` +
        `${mod.fromCache ? " (from the disk cache)" : ""}${mod.log ? `; log:\n${mod.log}` : ""}`,
    );
    t = performance.now();
    const again = await compileKernels(gpu, SOURCE, { name: "custom_kernel", arch: "auto" });
    console.log(
      `second load: ${(performance.now() - t).toFixed(2)} ms, cached: ${again.fromCache}`,
    );
    again.module.unload();

    const x = new Float32Array(rows * cols);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 3 + Math.cos(i * 0.011);
    const gx = gpu.alloc(4 * x.length), gy = gpu.alloc(4 * x.length);
    const stream = gpu.createStream();
    gpu.copyToDevice(gx, x);
    const launch = mod.launchers.l2_normalize_rows.launch;
    launch(rows, 1, 1, 256, 1, 1, 0, stream, gy, gx, cols, scale);
    stream.synchronize();
    const y = new Float32Array(x.length);
    gpu.copyToHost(y, gy);

    const want = l2NormalizeRows(x, rows, cols, scale);
    let worst = 0;
    for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i] - want[i]));
    // f32 sums of `cols` squares and rsqrtf: a few 1e-6 relative to values of size scale/√cols.
    const bound = 1e-5 * scale;
    console.log(`max |gpu - cpu| = ${worst.toExponential(2)} (bound ${bound.toExponential(1)})`);

    const launches = 1000;
    t = performance.now();
    for (let i = 0; i < launches; i++) {
      launch(rows, 1, 1, 256, 1, 1, 0, stream, gy, gx, cols, scale);
    }
    const hostUs = ((performance.now() - t) * 1000) / launches;
    stream.synchronize();
    console.log(`host time per launch: ${hostUs.toFixed(2)} µs (the generated launcher)`);

    stream.destroy();
    gpu.free(gx);
    gpu.free(gy);
    mod.module.unload();
    if (!(worst <= bound)) {
      console.error("MISMATCH: the kernel disagrees with the CPU");
      return 1;
    }
    console.log("OK: the run-time compiled kernel matches the CPU");
    return 0;
  } finally {
    gpu.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
