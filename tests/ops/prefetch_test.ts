/**
 * `prefetchWeight` through the fake drivers (132 SMs): the `l2_prefetch` launch each weight
 * format gets (its bulk buffer's start, capped; the grid; the L2 priority; programmatic), where
 * it declines (off by default, a window the mode leaves out, more than 16 rows, compute
 * capability 8.x, HIP, plain launches), its knobs' environment variables and their errors, and
 * the same argument errors on the CPU and the GPU. What a prefetch does to a step's time waits
 * for a GPU (tools/pending_gpu_checks.sh PART=prefetch25).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import type { GpuBackend } from "../../backends/gpu_backend.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import {
  l2PrefetchBytesWanted,
  l2PrefetchEvictWanted,
  l2PrefetchModeWanted,
  loadPrefetchOps,
  type PrefetchOptions,
} from "../../ops/gpu/prefetch.ts";
import type { AwqWeight, Fp8Weight, LinearWeight } from "../../ops/linear_weight.ts";
import type { PrefetchWindow } from "../../ops/ops.ts";
import type { FakeControl, FakeDriverOptions } from "../fake_driver/fake.ts";
import { withEnv, withEnvAsync } from "../support/env.ts";
import { withFakeGpu } from "../support/fake_gpu.ts";
import { CpuBackend } from "../../backends/cpu.ts";

const MIB = 2 ** 20;
/** Llama-3-8B's o projection, 4096 × 4096 bf16: 32 MiB. */
const O_BYTES = 2 * 4096 * 4096;
/** The fake exports cuLaunchKernelEx (programmatic launches) and reports 132 SMs. */
const EX: FakeDriverOptions = { launchEx: true };

/** What a prefetch call launched: [kernel, grid x, block x, programmatic, ptr, bytes, evictLast]. */
type Launch = [string, number, number, boolean, bigint, bigint, number];

/** Calls prefetchWeight once on ops loaded with `options`; its result and launch, if any. */
async function prefetchOnce(
  options: PrefetchOptions,
  weightOf: (gpu: GpuBackend) => { weight: LinearWeight; bulk: DeviceBuffer },
  call: { tokens?: number; window?: PrefetchWindow } = {},
  driver: FakeDriverOptions = EX,
  computeCapability: [number, number] = [9, 0],
): Promise<{ ran: boolean; launch: Launch | null; bulk: number }> {
  return await withFakeGpu(
    driver,
    (fake: FakeControl) => fake.setComputeCapability(...computeCapability),
    async (gpu, fake) => {
      const ops = await loadPrefetchOps(gpu, options);
      const { weight, bulk } = weightOf(gpu);
      const before = fake.launchCount();
      fake.setParamSizes([8, 8, 4]);
      const ran = ops.prefetchWeight(
        weight,
        call.tokens ?? 1,
        call.window ?? "attention",
        gpu.createStream(),
      );
      const launched = fake.launchCount() - before;
      assert.equal(launched, ran ? 1 : 0, "one launch when it runs, none when it declines");
      if (!ran) return { ran, launch: null, bulk: bulk.ptr };
      const l = fake.lastLaunch();
      const view = new DataView(l.args.buffer, l.args.byteOffset);
      return {
        ran,
        bulk: bulk.ptr,
        launch: [
          l.functionName,
          l.grid[0],
          l.block[0],
          l.programmatic,
          view.getBigUint64(0, true),
          view.getBigUint64(8, true),
          view.getInt32(16, true),
        ],
      };
    },
  );
}

const bf16 = (bytes: number) => (gpu: GpuBackend) => {
  const b = gpu.alloc(bytes);
  return { weight: b, bulk: b };
};
const fp8 = (gpu: GpuBackend) => {
  const w: Fp8Weight = {
    format: "fp8-e4m3",
    data: gpu.alloc(4096 * 4096),
    scales: gpu.alloc(4 * 4096),
    scratch: null,
  };
  return { weight: w, bulk: w.data };
};
const awq = (gpu: GpuBackend) => {
  const w: AwqWeight = {
    format: "awq-int4",
    codes: gpu.alloc(4096 * 4096 / 2),
    zeros: gpu.alloc(4096 * 32),
    scales: gpu.alloc(4 * 4096 * 32),
    groupSize: 128,
    scratch: null,
  };
  return { weight: w, bulk: w.codes };
};

Deno.test("prefetchWeight: l2_prefetch over the weight's first bytes, programmatic, on sm_90", async () => {
  const on = { mode: "all", maxBytes: 24 * MIB } as const;
  // 24 MiB in 16 KiB requests, 32 a block: 48 blocks.
  const o = await prefetchOnce(on, bf16(O_BYTES));
  assert.deepEqual(o.launch, [
    "l2_prefetch",
    48,
    32,
    true,
    BigInt(o.bulk),
    BigInt(24 * MIB),
    1,
  ]);
  // A weight under the cap: all of it. FP8 and 4-bit weights: their codes.
  const small = await prefetchOnce(on, bf16(3 * MIB + 48));
  assert.deepEqual(small.launch?.slice(1, 2), [7]);
  assert.deepEqual(small.launch?.slice(5, 6), [BigInt(3 * MIB + 48)]);
  const f = await prefetchOnce(on, fp8, { window: "elementwise", tokens: 16 });
  assert.deepEqual(f.launch?.slice(4, 6), [BigInt(f.bulk), BigInt(16 * MIB)]);
  const a = await prefetchOnce(on, awq);
  assert.deepEqual(a.launch?.slice(4, 6), [BigInt(a.bulk), BigInt(8 * MIB)]);
  // The grid stops at one block an SM; the priority may be normal.
  const big = await prefetchOnce(
    { mode: "all", maxBytes: 512 * MIB, evict: "normal" },
    bf16(O_BYTES * 32),
  );
  assert.deepEqual(big.launch?.slice(1, 2), [132]);
  assert.deepEqual(big.launch?.slice(5, 7), [BigInt(512 * MIB), 0]);
});

Deno.test("prefetchWeight: declines (false, no launch) where it does not apply", async () => {
  const w = bf16(O_BYTES);
  const declines = async (
    what: string,
    options: PrefetchOptions,
    call: { tokens?: number; window?: PrefetchWindow } = {},
    driver: FakeDriverOptions = EX,
    cc: [number, number] = [9, 0],
  ) => assert.equal((await prefetchOnce(options, w, call, driver, cc)).ran, false, what);
  await withEnvAsync({ DENALI_L2_PREFETCH: undefined }, async () => {
    await declines("off by default", {});
  });
  await declines("off", { mode: "off" });
  await declines("attention mode, elementwise window", { mode: "attention" }, {
    window: "elementwise",
  });
  assert.equal((await prefetchOnce({ mode: "attention" }, w)).ran, true, "attention window");
  await declines("17 rows", { mode: "all" }, { tokens: 17 });
  await declines("compute capability 8.0", { mode: "all" }, {}, EX, [8, 0]);
  await declines("HIP", { mode: "all" }, {}, { hip: true });
  await declines("plain launches asked for", { mode: "all", programmatic: false });
  await declines("a driver without cuLaunchKernelEx", { mode: "all" }, {}, {});
  const misaligned = (gpu: GpuBackend) => {
    const b = gpu.alloc(O_BYTES).slice(8, O_BYTES - 8);
    return { weight: b, bulk: b };
  };
  assert.equal((await prefetchOnce({ mode: "all" }, misaligned)).ran, false, "misaligned");
});

Deno.test("prefetchWeight: bad rows or windows throw the same on the CPU and the GPU", async () => {
  const cpu = new CpuBackend();
  const ops = cpuOps();
  const w = cpu.alloc(64);
  const bad = (run: (tokens: number, window: PrefetchWindow) => boolean) => {
    assert.throws(
      () => run(0, "attention"),
      new RangeError("prefetchWeight: tokens must be an integer in 1..2^31-1, got 0"),
    );
    assert.throws(() => run(1.5, "attention"), /tokens must be an integer/);
    assert.throws(
      () => run(1, "gemm" as PrefetchWindow),
      new RangeError('prefetchWeight: window must be "attention" or "elementwise", got "gemm"'),
    );
  };
  bad((tokens, window) => ops.prefetchWeight(w, tokens, window, cpu.defaultStream));
  assert.equal(ops.prefetchWeight(w, 1, "attention", cpu.defaultStream), false, "the CPU declines");
  for (const mode of ["off", "all"] as const) {
    await withFakeGpu(EX, () => {}, async (gpu) => {
      const gops = await loadPrefetchOps(gpu, { mode });
      const gw = gpu.alloc(64);
      bad((tokens, window) => gops.prefetchWeight(gw, tokens, window, gpu.defaultStream));
    });
  }
});

Deno.test("prefetch knobs: the options, else DENALI_L2_PREFETCH{,_MB,_EVICT}, else off / 24 MiB / last", () => {
  withEnv({
    DENALI_L2_PREFETCH: undefined,
    DENALI_L2_PREFETCH_MB: undefined,
    DENALI_L2_PREFETCH_EVICT: undefined,
  }, () => {
    assert.equal(l2PrefetchModeWanted(), "off");
    assert.equal(l2PrefetchBytesWanted(), 24 * MIB);
    assert.equal(l2PrefetchEvictWanted(), "last");
    assert.equal(l2PrefetchModeWanted("all"), "all");
    assert.equal(l2PrefetchBytesWanted(8 * MIB), 8 * MIB);
    assert.throws(() => l2PrefetchBytesWanted(MIB / 2), /maxBytes must be a whole number of MiB/);
  });
  withEnv({
    DENALI_L2_PREFETCH: "attention",
    DENALI_L2_PREFETCH_MB: "40",
    DENALI_L2_PREFETCH_EVICT: "normal",
  }, () => {
    assert.equal(l2PrefetchModeWanted(), "attention");
    assert.equal(l2PrefetchBytesWanted(), 40 * MIB);
    assert.equal(l2PrefetchEvictWanted(), "normal");
    assert.equal(l2PrefetchModeWanted("off"), "off", "an explicit option wins");
  });
  withEnv({ DENALI_L2_PREFETCH: "0" }, () => assert.equal(l2PrefetchModeWanted(), "off"));
  withEnv({ DENALI_L2_PREFETCH: "on" }, () =>
    assert.throws(
      () => l2PrefetchModeWanted(),
      new RangeError(
        "DENALI_L2_PREFETCH=on is not a prefetch mode; use off (or 0), attention or all",
      ),
    ));
  for (const bad of ["0", "1025", "1.5", "lots"]) {
    withEnv({ DENALI_L2_PREFETCH_MB: bad }, () =>
      assert.throws(
        () => l2PrefetchBytesWanted(),
        new RangeError(
          "DENALI_L2_PREFETCH_MB must be a whole number of MiB from 1 to 1024 (the bytes of a " +
            `weight the L2 prefetch asks for; default 24), got ${bad}`,
        ),
      ));
  }
  withEnv(
    { DENALI_L2_PREFETCH_EVICT: "first" },
    () =>
      assert.throws(
        () => l2PrefetchEvictWanted(),
        /EVICT=first is not an L2 priority; use last or normal/,
      ),
  );
});
