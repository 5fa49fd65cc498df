/**
 * The GPU attention ops over the fake driver, for launch tests that check which kernel each op
 * launches and how, without a GPU: a loader, and one batch-1 call of each op over buffers the
 * fake never reads.
 *
 * @module
 */

import type { DeviceBuffer, Stream } from "../../backends/backend.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import {
  type AttentionKernelOptions,
  type GpuAttentionOps,
  loadAttentionOps,
} from "../../ops/gpu/attention.ts";
import { type AttentionShape, kvElementBytes } from "../../ops/ops.ts";
import type { FakeControl, FakeDriverOptions, FakeLaunch } from "../fake_driver/fake.ts";
import { withFakeGpu } from "./fake_gpu.ts";

/** Buffers for one decode, kvWrite and prefill call at batch 1 over `shape`. */
export class AttentionCalls {
  readonly #buffers: DeviceBuffer[] = [];
  readonly out: DeviceBuffer;
  readonly q: DeviceBuffer;
  readonly kCache: DeviceBuffer;
  readonly vCache: DeviceBuffer;
  readonly tables: DeviceBuffer;
  readonly lens: DeviceBuffer;
  readonly workspace: DeviceBuffer;
  /** Block-table entries per sequence: maxContext over the block size. */
  readonly maxBlocks: number;

  constructor(
    readonly gpu: GpuBackend,
    readonly ops: GpuAttentionOps,
    readonly fake: FakeControl,
    readonly shape: AttentionShape,
    maxContext: number,
  ) {
    const alloc = (bytes: number) => {
      const b = gpu.alloc(bytes);
      this.#buffers.push(b);
      return b;
    };
    const { numHeads, numKvHeads, headDim, blockSize } = shape;
    this.maxBlocks = maxContext / blockSize;
    const row = numHeads * headDim * 2;
    this.out = alloc(row);
    this.q = alloc(row);
    this.kCache = alloc(4 * numKvHeads * blockSize * headDim * kvElementBytes(shape.kvDtype));
    this.vCache = alloc(this.kCache.bytes);
    this.tables = alloc(this.maxBlocks * 4);
    this.lens = alloc(16);
    this.workspace = alloc(ops.decodeWorkspaceBytes(1, maxContext, shape));
  }

  /** Enqueues a batch-1 decode over contexts up to `maxContext` on `stream`. */
  enqueueDecode(maxContext: number, stream: Stream = this.gpu.defaultStream): void {
    this.ops.decodeAttention({
      out: this.out,
      q: this.q,
      kCache: this.kCache,
      vCache: this.vCache,
      blockTables: this.tables,
      contextLens: this.lens,
      batch: 1,
      maxBlocks: this.maxBlocks,
      maxContext,
      shape: this.shape,
      workspace: this.workspace,
    }, stream);
  }

  /** A decode on the default stream: how many launches it made, and the last of them. */
  decode(maxContext: number): { launches: number; last: FakeLaunch } {
    const before = this.fake.launchCount();
    this.enqueueDecode(maxContext);
    return { launches: this.fake.launchCount() - before, last: this.fake.lastLaunch() };
  }

  /** A one-token kvWrite (k and v both from q's first rows) and its launch. */
  kvWrite(): FakeLaunch {
    const k = this.q.slice(0, this.shape.numKvHeads * this.shape.headDim * 2);
    const { kCache, vCache, lens, gpu } = this;
    this.ops.kvWrite(kCache, vCache, k, k, lens, 1, this.shape, gpu.defaultStream);
    return this.fake.lastLaunch();
  }

  /** A one-token prefill and its launch. */
  prefill(): FakeLaunch {
    const { out, q, kCache, vCache, tables, lens, gpu } = this;
    // q holds one token; lens (16 bytes) serves as queryStarts and contextLens.
    this.ops.prefillAttention({
      out,
      q,
      kCache,
      vCache,
      queryStarts: lens,
      contextLens: lens,
      blockTables: tables,
      seqs: 1,
      tokens: 1,
      maxBlocks: this.maxBlocks,
      shape: this.shape,
    }, gpu.defaultStream);
    return this.fake.lastLaunch();
  }

  /** Frees the buffers. */
  free(): void {
    for (const b of this.#buffers) this.gpu.free(b);
  }
}

/**
 * Runs `body` on attention ops loaded with `options` onto a CUDA backend over the fake driver
 * built with `driver`; `setup` runs on the reset fake before the backend opens. The decode
 * kernels are the fma family unless `options` names one: the tests on top pin that family's
 * geometry, reduce and splits, whatever batch they launch; `auto`'s per-call choice
 * (decodeUsesMma) has its own tests.
 */
export async function withFakeAttentionOps(
  driver: FakeDriverOptions,
  options: AttentionKernelOptions,
  body: (gpu: GpuBackend, ops: GpuAttentionOps, fake: FakeControl) => void,
  setup: (fake: FakeControl) => void = () => {},
): Promise<void> {
  await withFakeGpu(driver, setup, async (gpu, fake) => {
    body(gpu, await loadAttentionOps(gpu, { decodeKernel: "fma", ...options }), fake);
  });
}
