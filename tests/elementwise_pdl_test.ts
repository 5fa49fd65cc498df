/**
 * How the elementwise ops launch, through the fake driver: the kernels between a decode step's
 * GEMVs (rmsNorm, qkvRope, siluMul, castBf16ToF32) use programmatic dependent launch where the
 * backend offers it, and launch plainly where it does not or where told not to; embedding, which
 * opens a step, and the kernels off the forward pass always launch plainly.
 *
 * @module
 */

import assert from "node:assert/strict";
import { openCuda } from "../backends/cuda.ts";
import type { DeviceBuffer } from "../backends/backend.ts";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import { loadElementwiseOps } from "../ops/gpu/elementwise.ts";
import type { ElementwiseOps } from "../ops/ops.ts";
import {
  buildFakeDriver,
  type FakeControl,
  type FakeDriverOptions,
  openFakeControl,
} from "./fake_driver/fake.ts";

/** The fake build that exports cuLaunchKernelEx (compute capability 9.0, CUDA 12.4). */
const EX = { launchEx: true };

const HIDDEN = 64, HEADS = 2, KV_HEADS = 1, HEAD_DIM = 16, INTER = 32;

/** [kernel, launched through cuLaunchKernelEx, programmatic] of each op's one-token call. */
type How = Record<string, [string, boolean, boolean]>;

/** One call of every forward-pass elementwise op on ops loaded with `programmatic`. */
async function launches(
  driver: FakeDriverOptions,
  programmatic: boolean | undefined,
  setup: (fake: FakeControl) => void = () => {},
): Promise<How> {
  const path = buildFakeDriver(driver);
  const fake = openFakeControl(path);
  fake.reset();
  setup(fake);
  const gpu: GpuBackend = openCuda({ libraryPath: path });
  const buffers: DeviceBuffer[] = [];
  const alloc = (bytes: number) => {
    const b = gpu.alloc(bytes);
    buffers.push(b);
    return b;
  };
  try {
    const ops: ElementwiseOps = await loadElementwiseOps(gpu, { programmatic });
    const s = gpu.defaultStream;
    const row = alloc(4 * INTER * 4), ids = alloc(16), weight = alloc(HIDDEN * 2);
    const invFreq = alloc(HEAD_DIM * 2);
    const how: How = {};
    const record = (op: string, call: () => void) => {
      call();
      const last = fake.lastLaunch();
      how[op] = [last.functionName, last.launchEx, last.programmatic];
    };
    record("embedding", () => ops.embedding(row, row, ids, 1, HIDDEN, s));
    record("rmsNorm", () => ops.rmsNorm(row, row, weight, null, 1, HIDDEN, 1e-5, s));
    record("rmsNormResidual", () => ops.rmsNorm(row, row, weight, row, 1, HIDDEN, 1e-5, s));
    record("qkvRope", () =>
      ops.qkvRope({
        q: row,
        k: row,
        v: row,
        qkv: row,
        positions: ids,
        table: { invFreq, headDim: HEAD_DIM },
        bias: null,
        qNorm: null,
        kNorm: null,
        eps: 1e-6,
        tokens: 1,
        numHeads: HEADS,
        numKvHeads: KV_HEADS,
      }, s));
    record("siluMul", () => ops.siluMul(row, row, 1, INTER, s));
    record("castBf16ToF32", () => ops.castBf16ToF32(row, row, INTER, s));
    record("castF32ToBf16", () => ops.castF32ToBf16(row, row, INTER, s));
    return how;
  } finally {
    for (const b of buffers) gpu.free(b);
    gpu.close();
    fake.reset();
    fake.close();
  }
}

/** What `launches` gives when the waiting kernels launch as `waiting` says. */
function expected(waiting: boolean): How {
  return {
    embedding: ["embedding_bf16", false, false],
    rmsNorm: ["rms_norm_bf16", waiting, waiting],
    rmsNormResidual: ["rms_norm_residual_bf16", waiting, waiting],
    qkvRope: ["qkv_rope_bf16", waiting, waiting],
    siluMul: ["silu_mul_bf16", waiting, waiting],
    castBf16ToF32: ["cast_bf16_to_f32", waiting, waiting],
    castF32ToBf16: ["cast_f32_to_bf16", false, false],
  };
}

Deno.test("elementwise launch: the kernels between GEMVs launch programmatically", async () => {
  assert.deepEqual(await launches(EX, undefined), expected(true));
});

Deno.test("elementwise launch: programmatic: false launches every kernel plainly", async () => {
  assert.deepEqual(await launches(EX, false), expected(false));
});

Deno.test("elementwise launch: DENALI_PDL=0 launches every kernel plainly", async () => {
  const saved = Deno.env.get("DENALI_PDL");
  Deno.env.set("DENALI_PDL", "0");
  try {
    assert.deepEqual(await launches(EX, undefined), expected(false));
  } finally {
    if (saved === undefined) Deno.env.delete("DENALI_PDL");
    else Deno.env.set("DENALI_PDL", saved);
  }
});

Deno.test("elementwise launch: plain where the backend has no programmatic launch", async () => {
  // A driver without cuLaunchKernelEx, and an Ampere device (no griddepcontrol).
  assert.deepEqual(await launches({}, undefined), expected(false));
  assert.deepEqual(
    await launches(EX, undefined, (f) => f.setComputeCapability(8, 0)),
    expected(false),
  );
});

Deno.test("qkvRope launch: decode tokens' rows over several blocks, flags and cache arguments", async () => {
  const path = buildFakeDriver(EX);
  const fake = openFakeControl(path);
  fake.reset();
  const gpu: GpuBackend = openCuda({ libraryPath: path });
  try {
    const ops = await loadElementwiseOps(gpu);
    // Llama-3-8B's heads: 32 q + 8 k + 8 v rows of 128.
    const [heads, kvHeads, headDim, blockSize] = [32, 8, 128, 16];
    const width = (heads + 2 * kvHeads) * headDim;
    const big = gpu.alloc(2 * 300 * width), ids = gpu.alloc(4 * 300);
    const invFreq = gpu.alloc(2 * headDim), cache = gpu.alloc(4 * kvHeads * blockSize * headDim);
    const shape = { numHeads: heads, numKvHeads: kvHeads, headDim, blockSize, scale: 0.1 };
    const call = (tokens: number, withCache: boolean, fp8 = false) => {
      ops.qkvRope({
        q: big,
        k: big,
        v: big,
        qkv: big,
        positions: ids,
        table: { invFreq, headDim },
        bias: null,
        qNorm: null,
        kNorm: null,
        eps: 1e-6,
        tokens,
        numHeads: heads,
        numKvHeads: kvHeads,
        cache: withCache
          ? {
            kCache: cache,
            vCache: cache,
            slots: ids,
            shape: fp8 ? { ...shape, kvDtype: "fp8" as const, kScale: 2, vScale: 0.5 } : shape,
          }
          : null,
      }, gpu.defaultStream);
      const last = fake.lastLaunch();
      const view = new DataView(last.args.buffer, last.args.byteOffset, last.args.byteLength);
      // After 9 pointers (72 bytes): heads, kv heads, head dim, eps, flags; 3 pointers; block
      // size, cache blocks, kScale, vScale.
      const flags = view.getUint32(88, true);
      const scales = [view.getFloat32(128, true), view.getFloat32(132, true)];
      const blocks = view.getUint32(124, true);
      return { grid: last.grid, block: last.block[0], flags, scales, blocks };
    };
    // One decode token: 48 rows over 6 blocks of 8 warps; 300 prefill tokens: a block each.
    assert.deepEqual(call(1, false), {
      grid: [1, 6, 1],
      block: 256,
      flags: 0,
      scales: [1, 1],
      blocks: 0,
    });
    assert.deepEqual(call(16, true).grid, [16, 6, 1]);
    assert.deepEqual(call(300, true), {
      grid: [300, 1, 1],
      block: 512,
      flags: 4,
      scales: [1, 1],
      blocks: 2, // 16 KiB of bf16 cache: 2 blocks of 8 heads × 16 rows × 128
    });
    assert.deepEqual(call(1, true, true), {
      grid: [1, 6, 1],
      block: 256,
      flags: 4 | 8,
      scales: [2, 0.5],
      blocks: 4, // the same bytes hold twice the fp8 blocks
    });
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});
