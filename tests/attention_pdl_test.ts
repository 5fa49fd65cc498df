/**
 * How the attention ops launch, through the fake driver: decodeAttention's kernels (the split-K
 * partitions and decode_reduce) use programmatic dependent launch where the backend offers it,
 * and launch plainly where it does not or where told not to; kvWrite and prefill always launch
 * plainly, since they do not wait for the kernel before them.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer, Stream } from "../backends/backend.ts";
import { openCuda } from "../backends/cuda.ts";
import { DriverError } from "../backends/errors.ts";
import { setFallbackSink } from "../backends/fallbacks.ts";
import type { GpuBackend } from "../backends/gpu_backend.ts";
import { configPreset } from "../models/config.ts";
import { attentionShape } from "../models/model.ts";
import {
  type AttentionKernelOptions,
  type GpuAttentionOps,
  loadAttentionOps,
} from "../ops/gpu/attention.ts";
import {
  buildFakeDriver,
  type FakeControl,
  type FakeDriverOptions,
  type FakeLaunch,
  openFakeControl,
} from "./fake_driver/fake.ts";

/** The fake build that exports cuLaunchKernelEx (compute capability 9.0, CUDA 12.4). */
const EX = { launchEx: true };

/** Llama-3-8B heads: 4 query heads per KV head, so decode_attn_d128_g4. */
const SHAPE = attentionShape(configPreset("llama3-8b"), 16);
const MAX_CONTEXT = 4096;
const MAX_BLOCKS = MAX_CONTEXT / SHAPE.blockSize;

/** Buffers for one decode, kvWrite and prefill call at batch 1 (the fake reads none of them). */
class Calls {
  readonly #buffers: DeviceBuffer[] = [];
  readonly out: DeviceBuffer;
  readonly q: DeviceBuffer;
  readonly kCache: DeviceBuffer;
  readonly vCache: DeviceBuffer;
  readonly tables: DeviceBuffer;
  readonly lens: DeviceBuffer;
  readonly workspace: DeviceBuffer;

  constructor(
    readonly gpu: GpuBackend,
    readonly ops: GpuAttentionOps,
    readonly fake: FakeControl,
  ) {
    const alloc = (bytes: number) => {
      const b = gpu.alloc(bytes);
      this.#buffers.push(b);
      return b;
    };
    const row = SHAPE.numHeads * SHAPE.headDim * 2;
    this.out = alloc(row);
    this.q = alloc(row);
    this.kCache = alloc(4 * SHAPE.numKvHeads * SHAPE.blockSize * SHAPE.headDim * 2);
    this.vCache = alloc(this.kCache.bytes);
    this.tables = alloc(MAX_BLOCKS * 4);
    this.lens = alloc(16);
    this.workspace = alloc(ops.decodeWorkspaceBytes(1, MAX_CONTEXT, SHAPE));
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
      maxBlocks: MAX_BLOCKS,
      maxContext,
      shape: SHAPE,
      workspace: this.workspace,
    }, stream);
  }

  /** A decode on the default stream: how many launches it made, and the last of them. */
  decode(maxContext: number): { launches: number; last: FakeLaunch } {
    const before = this.fake.launchCount();
    this.enqueueDecode(maxContext);
    return { launches: this.fake.launchCount() - before, last: this.fake.lastLaunch() };
  }

  kvWrite(): FakeLaunch {
    const k = this.q.slice(0, SHAPE.numKvHeads * SHAPE.headDim * 2);
    const { kCache, vCache, lens, gpu } = this;
    this.ops.kvWrite(kCache, vCache, k, k, lens, 1, SHAPE, gpu.defaultStream);
    return this.fake.lastLaunch();
  }

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
      maxBlocks: MAX_BLOCKS,
      shape: SHAPE,
    }, gpu.defaultStream);
    return this.fake.lastLaunch();
  }

  free(): void {
    for (const b of this.#buffers) this.gpu.free(b);
  }
}

/**
 * Runs `body` on attention ops loaded with `options` onto a CUDA backend over the fake driver
 * built with `driver`; `setup` runs on the reset fake before the backend opens.
 */
async function withOps(
  driver: FakeDriverOptions,
  options: AttentionKernelOptions,
  body: (calls: Calls) => void,
  setup: (fake: FakeControl) => void = () => {},
): Promise<void> {
  const path = buildFakeDriver(driver);
  const fake = openFakeControl(path);
  fake.reset();
  setup(fake);
  const gpu = openCuda({ libraryPath: path });
  try {
    const calls = new Calls(gpu, await loadAttentionOps(gpu, options), fake);
    try {
      body(calls);
    } finally {
      calls.free();
    }
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
}

/** [kernel, launched through cuLaunchKernelEx, programmatic] of a recorded launch. */
function how(launch: FakeLaunch): [string, boolean, boolean] {
  return [launch.functionName, launch.launchEx, launch.programmatic];
}

/** Asserts that every attention op launches plainly. */
function assertAllPlain(calls: Calls): void {
  assert.equal(calls.ops.decodeProgrammatic, false);
  // One partition covers 32 tokens on 132 SMs: the decode kernel alone, writing bf16 itself.
  assert.deepEqual(how(calls.decode(32).last), ["decode_attn_d128_g4", false, false]);
  const split = calls.decode(MAX_CONTEXT);
  assert.deepEqual([split.launches, ...how(split.last)], [2, "decode_reduce", false, false]);
  assert.deepEqual(how(calls.kvWrite()), ["kv_write", false, false]);
  assert.deepEqual(how(calls.prefill()), ["prefill_attn_d128", false, false]);
}

Deno.test("attention launch: decode kernels and decode_reduce launch programmatically", async () => {
  await withOps(EX, {}, (calls) => {
    assert.equal(calls.ops.decodeProgrammatic, true);
    const direct = calls.decode(32);
    assert.deepEqual(
      [direct.launches, ...how(direct.last)],
      [1, "decode_attn_d128_g4", true, true],
    );
    // 4096 tokens split 64 ways: the partitions, then the reduce, both programmatic.
    const split = calls.decode(MAX_CONTEXT);
    assert.deepEqual([split.launches, ...how(split.last)], [2, "decode_reduce", true, true]);
    assert.deepEqual(split.last.grid, [SHAPE.numHeads, 1, 1]);
    // The partitions' launch is the first of the two: failing it shows it went through Ex too.
    calls.fake.failNext("cuLaunchKernelEx", 700);
    assert.throws(
      () => calls.decode(MAX_CONTEXT),
      (e: Error) => e instanceof DriverError && e.call === "cuLaunchKernelEx",
    );
    // kvWrite and prefill do not wait for the kernel before them: plain launches.
    assert.deepEqual(how(calls.kvWrite()), ["kv_write", false, false]);
    const prefill = calls.prefill();
    assert.deepEqual(how(prefill), ["prefill_attn_d128", false, false]);
    // Two K/V stages of 2 × 64 rows × (128 + 8) bf16: the raised limit held for this launcher.
    assert.equal(prefill.sharedMem, 2 * 2 * 64 * 136 * 2);
  });
});

Deno.test("attention launch: a captured decode keeps the programmatic attribute", async () => {
  await withOps(EX, {}, (calls) => {
    const stream = calls.gpu.createStream();
    calls.gpu.beginCapture(stream);
    calls.enqueueDecode(MAX_CONTEXT, stream);
    const graph = calls.gpu.endCapture(stream);
    try {
      assert.deepEqual(how(calls.fake.lastCapturedLaunch()), ["decode_reduce", true, true]);
      assert.equal(calls.fake.launchCount(), 0);
      graph.launch(stream);
      assert.equal(calls.fake.graphNodesReplayed(), 2);
    } finally {
      graph.destroy();
    }
  });
});

Deno.test("attention launch: programmatic: false launches decode plainly", async () => {
  await withOps(EX, { programmatic: false }, assertAllPlain);
});

Deno.test("attention launch: DENALI_PDL=0 launches decode plainly", async () => {
  const saved = Deno.env.get("DENALI_PDL");
  Deno.env.set("DENALI_PDL", "0");
  try {
    await withOps(EX, {}, assertAllPlain);
  } finally {
    if (saved === undefined) Deno.env.delete("DENALI_PDL");
    else Deno.env.set("DENALI_PDL", saved);
  }
});

Deno.test("attention launch: plain where the backend has no programmatic launch", async () => {
  // A driver without cuLaunchKernelEx, an Ampere device (no griddepcontrol), a CUDA 12.2 driver
  // (graphs would drop the attribute).
  await withOps({}, {}, assertAllPlain);
  await withOps(EX, {}, assertAllPlain, (f) => f.setComputeCapability(8, 0));
  await withOps(EX, {}, assertAllPlain, (f) => f.setDriverVersion(12020));
});

Deno.test("attention: a device refusing the two-stage shared memory gets one stage, reported once", async () => {
  const lines: string[] = [];
  const previous = setFallbackSink((line) => lines.push(line));
  try {
    // Both head dims (64, then 128) are refused their raised limit.
    await withOps(EX, {}, (calls) => {
      const prefill = calls.prefill();
      assert.equal(prefill.functionName, "prefill_attn_d128");
      assert.equal(prefill.sharedMem, 2 * 64 * 136 * 2, "one K/V stage");
    }, (fake) => {
      fake.failNext("funcSetAttribute", 1);
      fake.failNext("funcSetAttribute", 1);
    });
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0],
      /^\[denali\] fallback: the device refuses the two-stage prefill attention's shared memory: cuFuncSetAttribute failed/,
    );
  } finally {
    setFallbackSink(previous);
  }
});

Deno.test("attention: any other failure while raising the limit propagates", async () => {
  await assert.rejects(
    () => withOps(EX, {}, () => {}, (fake) => fake.failNext("funcSetAttribute", 700)),
    (e: Error) =>
      e instanceof DriverError && e.call === "cuFuncSetAttribute" &&
      e.codeName === "CUDA_ERROR_ILLEGAL_ADDRESS",
  );
});
