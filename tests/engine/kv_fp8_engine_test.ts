/**
 * `kvCacheDtype: "fp8"` end to end on the tiny checkpoint (checkpoints/tiny-llama) on the CPU:
 * generation runs, logits stay close to the bf16 cache's, the same memory holds twice the
 * blocks, the option and the serve flag reject bad values naming the accepted ones, and a GPU
 * backend (the fake driver) loads it (the GPU numbers: tests/gpu/kv_fp8_gpu_test.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../backends/cpu.ts";
import { openCuda } from "../../backends/cuda.ts";
import { Engine, type EngineOptions } from "../../engine/engine.ts";
import { resolveKvCacheDtype } from "../../engine/kv_cache.ts";
import { main } from "../../serve.ts";
import { buildFakeDriver, openFakeControl } from "../fake_driver/fake.ts";
import { relativeError } from "../support/numeric.ts";

const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;
const GREEDY = { temperature: 0, ignoreEos: true };
const SMALL: EngineOptions = {
  backend: "cpu",
  kvBlocks: 64,
  blockSize: 16,
  maxRunning: 4,
  maxBatchedTokens: 32,
  log: () => {},
};

/** A CPU backend that reports a fixed amount of free memory, so two loads get the same budget. */
class FixedMemoryCpu extends CpuBackend {
  constructor(readonly freeBytes: number) {
    super();
  }

  override memoryInfo(): { free: number; total: number } {
    return { free: this.freeBytes, total: this.freeBytes };
  }
}

/** Token ids 0..n-1 spread over the vocabulary, a prompt of n tokens. */
function prompt(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 37 + 5) % 277);
}

/**
 * Logits of the fp8-cache engine against the bf16-cache engine's.
 *
 * The bound: each attention output has a relative L2 error of about 2^-4 / √3 from E4M3's
 * rounding (argued in tests/ops/kv_fp8_test.ts, where 2^-4 bounds it). In the residual stream
 * that error is scaled down by attention's share of the stream and passes through RMSNorm
 * (scale-free) and the MLP and lm head (linear to first order), two layers deep, so the logits'
 * relative error stays of the same order, below 2^-4; the tiny model measures 0.013 to 0.017. A
 * cache read as bf16 bits, a lost scale or a wrong slot gives errors of order 1.
 */
Deno.test("an fp8 KV cache generates, with logits within 2^-4 of the bf16 cache's", async () => {
  const TOLERANCE = 2 ** -4;
  const bf16 = await Engine.load(TINY, SMALL);
  const fp8 = await Engine.load(TINY, { ...SMALL, kvCacheDtype: "fp8" });
  try {
    assert.equal(bf16.info.kvCacheDtype, "bf16");
    assert.equal(fp8.info.kvCacheDtype, "fp8");
    // 100 tokens: chunked prefill (32 a step) reads its earlier chunks back from the cache.
    const ids = prompt(100);
    const ref = await bf16.lastLogits(ids);
    const got = await fp8.lastLogits(ids);
    const error = relativeError(got, ref);
    assert.ok(error <= TOLERANCE, `prefill logits: relative L2 error ${error} > ${TOLERANCE}`);
    assert.ok(error > 0, "the fp8 cache changed nothing: is it in use?");

    // Generation runs decode steps over the fp8 cache; then the logits of the whole sequence.
    const out: number[] = [];
    for await (const chunk of fp8.generate(ids, { ...GREEDY, maxTokens: 24 })) {
      if (chunk.tokenId >= 0) out.push(chunk.tokenId);
    }
    assert.equal(out.length, 24);
    const all = [...ids, ...out];
    const after = relativeError(await fp8.lastLogits(all), await bf16.lastLogits(all));
    assert.ok(after <= TOLERANCE, `logits after decode: relative L2 error ${after}`);
  } finally {
    await bf16.close();
    await fp8.close();
  }
});

Deno.test("the same memory holds twice the tokens with an fp8 KV cache", async () => {
  // tiny-llama: 2 layers × K and V × 2 KV heads × 16 tokens × head_dim 64 = 8192 elements a
  // block, 16 KiB in bf16 and 8 KiB in fp8; the scales are per layer, on the host, so no more.
  const budget = 64 * 16384;
  const tokens = async (kvCacheDtype: "bf16" | "fp8") => {
    const backend = new FixedMemoryCpu(budget);
    const engine = await Engine.load(TINY, {
      ...SMALL,
      backend,
      kvBlocks: undefined,
      kvFraction: 1,
      kvCacheDtype,
    });
    try {
      // One block of the budget is the graphs' scratch; count it back in.
      return engine.info.kvTokens + SMALL.blockSize!;
    } finally {
      await engine.close();
      backend.close();
    }
  };
  const bf16 = await tokens("bf16"), fp8 = await tokens("fp8");
  assert.equal(bf16, 64 * 16);
  assert.equal(fp8, 2 * bf16);
});

Deno.test("kvCacheDtype takes vLLM's spellings and rejects others, naming the accepted ones", async () => {
  for (const [value, dtype] of [["auto", "bf16"], ["bf16", "bf16"], ["fp8_e4m3", "fp8"]] as const) {
    const engine = await Engine.load(TINY, { ...SMALL, kvCacheDtype: value });
    try {
      assert.equal(engine.info.kvCacheDtype, dtype, value);
    } finally {
      await engine.close();
    }
  }
  await assert.rejects(
    Engine.load(TINY, { ...SMALL, kvCacheDtype: "fp16" as "fp8" }),
    (e: Error) =>
      e instanceof RangeError &&
      e.message ===
        'EngineOptions.kvCacheDtype "fp16" is not supported; use one of auto, bf16, fp8, fp8_e4m3',
  );
  assert.throws(
    () => resolveKvCacheDtype("fp8_e5m2", "--kv-cache-dtype"),
    /--kv-cache-dtype "fp8_e5m2" is not supported \(Denali stores FP8 as E4M3 only\); use one of auto, bf16, fp8, fp8_e4m3/,
  );
});

Deno.test("serve.ts rejects a bad --kv-cache-dtype before loading, naming the values", async () => {
  const lines: string[] = [];
  const error = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    assert.equal(await main(["--kv-cache-dtype", "int8", "--port", "0"]), 2);
  } finally {
    console.error = error;
  }
  assert.match(
    lines.join("\n"),
    /--kv-cache-dtype "int8" is not supported; use one of auto, bf16, fp8, fp8_e4m3/,
  );
});

Deno.test("a GPU backend (the fake driver) loads an fp8 KV cache: the refusal is gone", async () => {
  const path = buildFakeDriver();
  const fake = openFakeControl(path);
  fake.reset();
  const gpu = openCuda({ libraryPath: path });
  try {
    const engine = await Engine.load(TINY, { ...SMALL, backend: gpu, kvCacheDtype: "fp8" });
    await engine.close();
  } finally {
    gpu.close();
    fake.reset();
    fake.close();
  }
});
