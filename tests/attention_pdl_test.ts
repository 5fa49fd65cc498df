/**
 * How the attention ops launch, through the fake driver: decodeAttention's kernels (the split-K
 * partitions, which by default also combine them through the op's counters, or decode_reduce
 * after them) and kvWrite use programmatic dependent launch where the backend offers it, and
 * launch plainly where it does not or where told not to; prefill always launches plainly, since
 * it does not wait for the kernel before it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DriverError } from "../backends/errors.ts";
import { setFallbackSink } from "../backends/fallbacks.ts";
import { configPreset } from "../models/config.ts";
import { attentionShape } from "../models/model.ts";
import type { AttentionKernelOptions } from "../ops/gpu/attention.ts";
import type { FakeControl, FakeDriverOptions, FakeLaunch } from "./fake_driver/fake.ts";
import { AttentionCalls as Calls, withFakeAttentionOps } from "./support/attention_calls.ts";

/** The fake build that exports cuLaunchKernelEx (compute capability 9.0, CUDA 12.4). */
const EX = { launchEx: true };

/** Llama-3-8B heads: 4 query heads per KV head, so decode_attn_d128_g4. */
const SHAPE = attentionShape(configPreset("llama3-8b"), 16);
const MAX_CONTEXT = 4096;

/** One call of each op over SHAPE on ops loaded as `withFakeAttentionOps` says. */
async function withOps(
  driver: FakeDriverOptions,
  options: AttentionKernelOptions,
  body: (calls: Calls) => void,
  setup: (fake: FakeControl) => void = () => {},
): Promise<void> {
  await withFakeAttentionOps(driver, options, (gpu, ops, fake) => {
    const calls = new Calls(gpu, ops, fake, SHAPE, MAX_CONTEXT);
    try {
      body(calls);
    } finally {
      calls.free();
    }
  }, setup);
}

/** [kernel, launched through cuLaunchKernelEx, programmatic] of a recorded launch. */
function how(launch: FakeLaunch): [string, boolean, boolean] {
  return [launch.functionName, launch.launchEx, launch.programmatic];
}

/** The last pointer argument of a decode kernel's launch: its fused reduce's counters, or 0. */
function countersArg(launch: FakeLaunch): bigint {
  const { args } = launch;
  return new DataView(args.buffer, args.byteOffset, args.byteLength).getBigUint64(
    args.byteLength - 8,
    true,
  );
}

/** Asserts that every attention op launches plainly. */
function assertAllPlain(calls: Calls): void {
  assert.equal(calls.ops.decodeProgrammatic, false);
  // One partition covers 32 tokens on 132 SMs: the decode kernel alone, writing bf16 itself.
  assert.deepEqual(how(calls.decode(32).last), ["decode_attn_d128_g4", false, false]);
  // A split decode combines its partitions in the kernel (the fused reduce): one launch.
  const split = calls.decode(MAX_CONTEXT);
  assert.deepEqual([split.launches, ...how(split.last)], [1, "decode_attn_d128_g4", false, false]);
  assert.deepEqual(how(calls.kvWrite()), ["kv_write", false, false]);
  assert.deepEqual(how(calls.prefill()), ["prefill_attn_d128", false, false]);
}

Deno.test("attention launch: kvWrite, decode kernels and decode_reduce launch programmatically", async () => {
  await withOps(EX, {}, (calls) => {
    assert.equal(calls.ops.decodeProgrammatic, true);
    const direct = calls.decode(32);
    assert.deepEqual(
      [direct.launches, ...how(direct.last)],
      [1, "decode_attn_d128_g4", true, true],
    );
    // 4096 tokens split 64 ways: one programmatic launch, whose last blocks combine the
    // partitions through the op's counters; a one-partition call passes none.
    const split = calls.decode(MAX_CONTEXT);
    assert.deepEqual([split.launches, ...how(split.last)], [1, "decode_attn_d128_g4", true, true]);
    assert.deepEqual(split.last.grid, [64, SHAPE.numKvHeads, 1]);
    assert.notEqual(countersArg(split.last), 0n);
    assert.equal(countersArg(direct.last), 0n);
    calls.fake.failNext("cuLaunchKernelEx", 700);
    assert.throws(
      () => calls.decode(MAX_CONTEXT),
      (e: Error) => e instanceof DriverError && e.call === "cuLaunchKernelEx",
    );
    // kvWrite waits before it reads anything (and only then lets decode start); prefill does not
    // wait for the kernel before it: a plain launch.
    assert.deepEqual(how(calls.kvWrite()), ["kv_write", true, true]);
    const prefill = calls.prefill();
    assert.deepEqual(how(prefill), ["prefill_attn_d128", false, false]);
    // Two K/V stages of 2 × 64 rows × (128 + 8) bf16: the raised limit held for this launcher.
    assert.equal(prefill.sharedMem, 2 * 2 * 64 * 136 * 2);
  });
});

Deno.test("attention launch: the tensor-core decode kernels combine a split in the kernel too", async () => {
  await withOps(EX, { decodeKernel: "mma" }, (calls) => {
    const direct = calls.decode(32);
    assert.deepEqual(
      [direct.launches, ...how(direct.last)],
      [1, "decode_attn_mma_d128_g4", true, true],
    );
    assert.equal(countersArg(direct.last), 0n);
    const split = calls.decode(MAX_CONTEXT);
    assert.deepEqual(
      [split.launches, ...how(split.last)],
      [1, "decode_attn_mma_d128_g4", true, true],
    );
    assert.deepEqual(split.last.grid, [64, SHAPE.numKvHeads, 1]);
    assert.notEqual(countersArg(split.last), 0n);
  });
  // decodeReduce "kernel": the partitions pass no counters, then decode_reduce.
  await withOps(EX, { decodeKernel: "mma", decodeReduce: "kernel" }, (calls) => {
    const split = calls.decode(MAX_CONTEXT);
    assert.deepEqual([split.launches, split.last.functionName], [2, "decode_reduce"]);
  });
});

Deno.test("attention launch: decodeReduce kernel splits into partitions then decode_reduce", async () => {
  await withOps(EX, { decodeReduce: "kernel" }, (calls) => {
    const split = calls.decode(MAX_CONTEXT);
    assert.deepEqual([split.launches, ...how(split.last)], [2, "decode_reduce", true, true]);
    assert.deepEqual(split.last.grid, [SHAPE.numHeads, 1, 1]);
    // The partitions' launch is the first of the two: it passes no counters.
    calls.fake.failNext("cuLaunchKernelEx", 700);
    assert.throws(
      () => calls.decode(MAX_CONTEXT),
      (e: Error) => e instanceof DriverError && e.call === "cuLaunchKernelEx",
    );
  });
  const saved = Deno.env.get("DENALI_DECODE_REDUCE");
  try {
    Deno.env.set("DENALI_DECODE_REDUCE", "kernel");
    await withOps(EX, {}, (calls) => {
      assert.equal(calls.decode(MAX_CONTEXT).launches, 2);
    });
    Deno.env.set("DENALI_DECODE_REDUCE", "later");
    await assert.rejects(
      () => withOps(EX, {}, () => {}),
      /DENALI_DECODE_REDUCE=later is not a decode reduce; use fused or kernel/,
    );
  } finally {
    if (saved === undefined) Deno.env.delete("DENALI_DECODE_REDUCE");
    else Deno.env.set("DENALI_DECODE_REDUCE", saved);
  }
});

Deno.test("attention launch: a captured decode keeps the programmatic attribute", async () => {
  await withOps(EX, { decodeReduce: "kernel" }, (calls) => {
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
