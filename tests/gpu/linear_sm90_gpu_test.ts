/**
 * The Hopper wgmma GEMMs (kernels/src/linear_sm90.cu) on a real GPU (`deno task test:gpu`).
 *
 * On a compute-capability 9.0 device the sm_90a image must load and the automatic choice must
 * take the wgmma kernels for large shapes. Each wgmma kernel, forced, is compared with the CPU
 * reference on shapes whose every edge is a partial tile (M, N not multiples of 128 or 256, K not
 * a multiple of the 64-wide k tile, K = 8 a single chunk), and on large shapes, where the CPU
 * would take minutes, with the mma.sync GEMM of linear.cu: an independent kernel (other
 * instructions, tiles and summation order) on the same inputs. Shapes with few 128×128 tiles
 * split K (300×1000×1000 in 4 slices, the last one short; 257×264×4096 in 14, the last one
 * empty; 256×1024×4096 in 8), each run three times on the same ticket counters, so a counter
 * the last block failed to reset, or a partial read before it was written, shows.
 *
 * The swapped-operand tiles (W's rows as wgmma's M, tokens as its N, the output written
 * transposed) run the same shapes, forced, and the decode batches of 17-64 rows they exist for,
 * split over K as dispatch splits them.
 *
 * Tolerance: as tests/gpu/linear_gpu_test.ts. Each side rounds an fp32 sum to bf16 once; sums
 * that straddle a rounding boundary land one bf16 ulp apart (≤ 2^-7·|ref|), and the fp32 sums
 * differ by reordering only (≤ K·2^-24·max|x·w|, below 1e-4 here), so per element
 * |got − ref| ≤ 2^-7·|ref| + 1e-4, and ‖got − ref‖ / ‖ref‖ ≤ 1e-2. A wrong swizzle, descriptor
 * or fragment mapping moves whole tiles by O(1).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { decodeBf16 } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuLinearOps } from "../../ops/cpu/linear.ts";
import { openCuda } from "../../backends/cuda.ts";
import { type GpuLinearOps, loadLinearOps, WGMMA_KERNELS } from "../../ops/gpu/linear.ts";
import { loadKernels } from "../../kernels/modules.ts";
import { assertClose, randomBf16Bits } from "../support/numeric.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");
// The data-parallel tiles, their stream-K forms (a shape's k iterations shared out over at most
// one block an SM, tiles cut between blocks summed through the scratch), and the swapped-operand
// tiles (128 W rows × 64 or 32 tokens, written transposed; forced here past 64 rows too, where
// they walk several token tiles).
const WGMMA = WGMMA_KERNELS;

/** Seeded bf16 patterns uniform in ±scale. */
/** Per-element and norm-wise comparison (bounds in the module comment). */
function assertGemmClose(got: Float32Array, ref: Float32Array, what: string): void {
  assertClose(got, ref, 1e-2, what);
  for (let i = 0; i < ref.length; i++) {
    if (!(Math.abs(got[i] - ref[i]) <= 2 ** -7 * Math.abs(ref[i]) + 1e-4)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, the reference says ${ref[i]}`);
    }
  }
}

/** x [m, k] (±1) and W [n, k] (±1/sqrt(k)) on the GPU, and a poisoned-output runner. */
class Operands {
  readonly x: Uint16Array;
  readonly w: Uint16Array;
  readonly gx: DeviceBuffer;
  readonly gw: DeviceBuffer;
  readonly gout: DeviceBuffer;

  constructor(readonly gpu: Backend, readonly m: number, readonly n: number, readonly k: number) {
    this.x = randomBf16Bits(m * k, 11 + m + k, 1);
    this.w = randomBf16Bits(n * k, 29 + n + k, 1 / Math.sqrt(k));
    this.gx = gpu.alloc(2 * m * k);
    this.gw = gpu.alloc(2 * n * k);
    this.gout = gpu.alloc(2 * m * n);
    gpu.copyToDevice(this.gx, this.x);
    gpu.copyToDevice(this.gw, this.w);
  }

  /** `ops.linear` on output poisoned with NaN first, as floats. */
  run(ops: GpuLinearOps): Float32Array {
    const stream = this.gpu.defaultStream;
    this.gpu.memset(this.gout, 0xff, stream);
    ops.linear(this.gout, this.gx, this.gw, this.m, this.n, this.k, stream);
    stream.synchronize();
    const bits = new Uint16Array(this.m * this.n);
    this.gpu.copyToHost(bits, this.gout);
    return decodeBf16(bits);
  }

  /** The CPU backend's result on the same bf16 inputs. */
  reference(): Float32Array {
    const cpu = new CpuBackend();
    const x = cpu.alloc(this.x.byteLength), w = cpu.alloc(this.w.byteLength);
    const out = cpu.alloc(2 * this.m * this.n);
    cpu.copyToDevice(x, this.x);
    cpu.copyToDevice(w, this.w);
    cpuLinearOps().linear(out, x, w, this.m, this.n, this.k, cpu.defaultStream);
    const bits = new Uint16Array(out.host!.buffer, out.host!.byteOffset, this.m * this.n);
    return decodeBf16(bits);
  }

  free(): void {
    for (const b of [this.gx, this.gw, this.gout]) this.gpu.free(b);
  }
}

/** Opens the GPU, runs `body` if the device is Hopper (compute capability 9.0), closes it. */
function hopperTest(name: string, body: (gpu: Backend) => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false }, async () => {
    const gpu = openCuda();
    try {
      const [major, minor] = gpu.info.computeCapability;
      if (major !== 9 || minor !== 0) {
        console.log(`skipped: ${gpu.info.name} is sm_${major}${minor}, not sm_90`);
        return;
      }
      await body(gpu);
    } finally {
      gpu.close();
    }
  });
}

hopperTest("gpu wgmma: an sm_90 device loads the sm_90a image", async (gpu) => {
  assert.equal((await loadKernels(gpu, "linear_sm90")).target, "sm_90a");
  assert.equal((await loadKernels(gpu, "linear")).target, "sm_90");
});

hopperTest("gpu wgmma: every wgmma kernel matches the CPU on partial tiles", async (gpu) => {
  const ops = await Promise.all(WGMMA.map((kernel) => loadLinearOps(gpu, { kernel })));
  // [m, n, k]: K = 8 is one chunk; 72 and 1000 end inside a k tile; 4096 is 64 k tiles.
  const shapes = [[17, 37, 8], [129, 300, 72], [300, 1000, 1000], [257, 264, 4096]];
  for (const [m, n, k] of shapes) {
    const operands = new Operands(gpu, m, n, k);
    try {
      const ref = operands.reference();
      ops.forEach((o, i) => {
        assert.equal(o.kernelName(m, n, k, operands.gx, operands.gw), WGMMA[i]);
        for (let run = 0; run < 3; run++) {
          assertGemmClose(operands.run(o), ref, `${WGMMA[i]} m=${m} n=${n} k=${k} run ${run}`);
        }
      });
    } finally {
      operands.free();
    }
  }
});

hopperTest("gpu wgmma: large shapes match the mma.sync GEMM", async (gpu) => {
  const reference = await loadLinearOps(gpu, { kernel: "gemm128" });
  const ops = await Promise.all(WGMMA.map((kernel) => loadLinearOps(gpu, { kernel })));
  // The last three are decode batches the swapped tiles take: split 5 (48 W row tiles), 16
  // (2048 × 14336) and none (224 W row tiles).
  const shapes = [
    [2048, 4096, 4096],
    [1100, 14336, 4096],
    [512, 4096, 14336],
    [256, 1024, 4096],
    [17, 6144, 4096],
    [64, 2048, 14336],
    [48, 28672, 4096],
  ];
  for (const [m, n, k] of shapes) {
    const operands = new Operands(gpu, m, n, k);
    try {
      assert.equal(reference.kernelName(m, n, k, operands.gx, operands.gw), "gemm128");
      const ref = operands.run(reference);
      ops.forEach((o, i) => {
        for (let run = 0; run < 3; run++) {
          const what = `${WGMMA[i]} m=${m} n=${n} k=${k} vs gemm128, run ${run}`;
          assertGemmClose(operands.run(o), ref, what);
        }
      });
    } finally {
      operands.free();
    }
  }
});

hopperTest("gpu wgmma: the automatic choice takes wgmma for prefill shapes", async (gpu) => {
  const ops = await loadLinearOps(gpu);
  const x = gpu.alloc(16), w = gpu.alloc(16);
  try {
    assert.equal(ops.kernelName(1024, 4096, 4096, x, w), "wgmma128x256");
    assert.equal(ops.kernelName(4096, 14336, 4096, x, w), "wgmma128x256");
    assert.equal(ops.kernelName(256, 14336, 4096, x, w), "wgmma128x128");
    assert.equal(ops.kernelName(256, 4096, 4096, x, w), "wgmma128x128");
    assert.equal(ops.kernelName(256, 1024, 4096, x, w), "wgmma128x128"); // split 8 ways
    assert.equal(ops.kernelName(64, 1024, 1024, x, w), "gemm64"); // 8 tiles, k too short to split
    assert.match(ops.kernelName(16, 4096, 4096, x, w), /^gemv/);
    const swapped = await loadLinearOps(gpu, { swapAb: "always" });
    assert.equal(swapped.kernelName(64, 4096, 4096, x, w), "wgmmaSwap128x64");
    assert.equal(swapped.kernelName(17, 6144, 4096, x, w), "wgmmaSwap128x32");
    assert.equal(swapped.kernelName(65, 4096, 4096, x, w), "wgmma128x128");
  } finally {
    gpu.free(x);
    gpu.free(w);
  }
});
