/**
 * Loading FP8 weights: a compressed-tensors (and an `fp8`-method) checkpoint the test writes from
 * checkpoints/tiny-llama by per-row quantization on the host, against the same bf16 checkpoint
 * quantized at load (`quantization: "fp8"`), which must give bit-identical codes, scales and
 * logits; the FP8 model's logits against the bf16 model's; and every refusal naming the tensor
 * or key and the remedy.
 *
 * Tolerance of FP8 against bf16 logits: per-channel E4M3 keeps 3 mantissa bits, a relative
 * weight error of at most 2^-4 (about 2^-4/√3 ≈ 3.6% RMS, uniform rounding); through two layers
 * of random weights the logits move by a few percent of their norm. 0.15 leaves room for that
 * while a wrong scale (a factor of 448, or another row's) or a mis-decoded code moves them by
 * far more (a missing scale multiplies every projection by ~100).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../../backends/cpu.ts";
import { Engine } from "../../engine/engine.ts";
import { ConfigError, loadModelConfig, parseModelConfig } from "../../models/config.ts";
import { loadWeights, WeightsError } from "../../models/weights.ts";
import { isFp8Weight } from "../../ops/linear_weight.ts";
import { loadOps } from "../../ops/load.ts";
import {
  COMPRESSED_TENSORS,
  KV_SCHEME,
  TINY,
  withKvScales,
  writeFp8Checkpoint,
} from "../support/fp8_checkpoint.ts";
import { relativeError } from "../support/numeric.ts";
import type { SafetensorsTensor } from "../support/safetensors.ts";

const PROMPT = [277, 40, 41, 42, 43, 100, 101, 7, 8, 9, 200, 201, 5, 6];

async function lastLogits(
  dir: string,
  quantization: "fp8" | null = null,
  kvCacheDtype: "bf16" | "fp8" = "bf16",
): Promise<Float32Array> {
  const engine = await Engine.load(dir, {
    backend: "cpu",
    log: () => {},
    quantization,
    kvCacheDtype,
  });
  try {
    // The step profile's roofline counts linear bytes by this (engine/roofline.ts).
    const fp8 = quantization === "fp8" || dir !== TINY;
    assert.equal(engine.info.weightFormat, fp8 ? "fp8" : "bf16");
    return await engine.lastLogits(PROMPT);
  } finally {
    await engine.close();
  }
}

const base = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...base,
  name: "FP8 checkpoint (compressed-tensors, per channel) equals the bf16 one quantized at load",
}, async () => {
  const dir = await writeFp8Checkpoint(COMPRESSED_TENSORS);
  try {
    const backend = new CpuBackend();
    const ops = await loadOps(backend);
    const fromFile = await loadWeights(dir, await loadModelConfig(dir), backend, { ops });
    const atLoad = await loadWeights(TINY, await loadModelConfig(TINY), backend, {
      ops,
      quantization: "fp8",
    });
    assert.equal(fromFile.format, "fp8");
    assert.equal(atLoad.format, "fp8");
    for (const key of ["0.qkvProj", "0.oProj", "1.gateUpProj", "1.downProj"]) {
      const a = fromFile.linear(key), b = atLoad.linear(key);
      assert.ok(isFp8Weight(a) && isFp8Weight(b), `${key} is FP8 both ways`);
      assert.deepEqual(a.data.host, b.data.host, `${key}: codes`);
      assert.deepEqual(a.scales.host, b.scales.host, `${key}: scales`);
    }
    assert.throws(() => fromFile.get("0.qkvProj"), /held in FP8; read it with linear\(\)/);
    assert.ok(!isFp8Weight(fromFile.linear("lmHead")), "the lm head stays bf16");
    // Codes take a byte, bf16 two: the FP8 model is smaller.
    const bf16 = await loadWeights(TINY, await loadModelConfig(TINY), backend);
    assert.ok(fromFile.bytes < bf16.bytes, `${fromFile.bytes} < ${bf16.bytes}`);
    for (const w of [fromFile, atLoad, bf16]) w.free();

    const fp8Logits = await lastLogits(dir);
    assert.deepEqual(
      fp8Logits,
      await lastLogits(TINY, "fp8"),
      "identical weights, identical logits",
    );
    const error = relativeError(fp8Logits, await lastLogits(TINY));
    console.log(`FP8 (per channel) vs bf16 logits: relative error ${error.toExponential(2)}`);
    assert.ok(error > 0 && error < 0.15, `relative error ${error}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  { ...base, name: "FP8 checkpoint (fp8 method, per-tensor scalar scales) loads and runs" },
  async () => {
    const dir = await writeFp8Checkpoint(
      { quant_method: "fp8", activation_scheme: "dynamic" },
      { perTensor: true },
    );
    try {
      const error = relativeError(await lastLogits(dir), await lastLogits(TINY));
      console.log(`FP8 (per tensor) vs bf16 logits: relative error ${error.toExponential(2)}`);
      assert.ok(error > 0 && error < 0.25, `relative error ${error}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test({
  ...base,
  name: "FP8 checkpoints: bad tensors are refused naming the tensor and the remedy",
}, async () => {
  const scale = "model.layers.0.self_attn.k_proj.weight_scale";
  const cases: [string, (t: Map<string, SafetensorsTensor>) => void, RegExp][] = [
    [
      "a scale of the wrong shape",
      (t) => t.set(scale, { dtype: "F32", shape: [64, 2], data: new Uint8Array(64 * 2 * 4) }),
      /k_proj\.weight_scale': shape \[64, 2\] is not a scale Denali supports for the \[128, 128\] weight: expected \[128, 1\] \(per output channel\) or \[\] \(per tensor\)/,
    ],
    [
      "a missing scale",
      (t) => t.delete(scale),
      /k_proj\.weight_scale': missing: the F8_E4M3 weight .* needs its scale/,
    ],
    [
      "a NaN code",
      (t) => t.get("model.layers.1.mlp.down_proj.weight")!.data[5] = 0xff,
      /down_proj\.weight': element 5 is NaN \(E4M3 code 0xff\): the checkpoint is corrupt/,
    ],
    [
      "FP8 beside bf16 in one fused weight",
      (t) => {
        const q = t.get("model.layers.0.self_attn.v_proj.weight")!;
        t.set("model.layers.0.self_attn.v_proj.weight", {
          dtype: "BF16",
          shape: q.shape,
          data: new Uint8Array(q.data.length * 2),
        });
      },
      /v_proj\.weight': dtype BF16, but the other parts of '0\.qkvProj' are F8_E4M3/,
    ],
    [
      "an FP8 embedding",
      (t) => {
        const e = t.get("model.embed_tokens.weight")!;
        t.set("model.embed_tokens.weight", {
          dtype: "F8_E4M3",
          shape: e.shape,
          data: new Uint8Array(e.data.length / 2),
        });
      },
      /embed_tokens\.weight': dtype F8_E4M3 is supported only for the decoder layers' linear weights/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    const dir = await writeFp8Checkpoint(COMPRESSED_TENSORS, { edit });
    try {
      await assert.rejects(
        loadWeights(dir, await loadModelConfig(dir), new CpuBackend(), {
          ops: await loadOps(new CpuBackend()),
        }),
        (e: Error) => e instanceof WeightsError && message.test(e.message),
        what,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  // F8 tensors without a quantization_config: nothing says how they are scaled.
  const dir = await writeFp8Checkpoint(null);
  try {
    await assert.rejects(
      loadWeights(dir, await loadModelConfig(dir), new CpuBackend(), {
        ops: await loadOps(new CpuBackend()),
      }),
      /dtype F8_E4M3, but config.json has no quantization_config/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  ...base,
  name:
    "FP8 checkpoint with kv_cache_scheme: each layer's k_scale and v_scale reach the FP8 KV cache",
}, async () => {
  // Scales far from 1 and from each other, and not powers of two (which round exactly as 1
  // does): used, they move the logits off the scale-1 FP8 cache's, while staying within FP8
  // rounding of the bf16 cache's (under 0.02 on this model, README). The weights carry the exact
  // values; how the kernels apply a shape's scales is tests/ops/kv_fp8_test.ts's business.
  const kScales = [0.37, 0.61], vScales = [0.45, 1.3];
  const withScales = (drop?: string, bad?: string) => (tensors: Map<string, SafetensorsTensor>) => {
    withKvScales(kScales, vScales)(tensors);
    if (drop) tensors.delete(drop);
    if (bad) tensors.set(bad, { dtype: "F32", shape: [2], data: new Uint8Array(8) });
  };
  const config = { ...COMPRESSED_TENSORS, kv_cache_scheme: KV_SCHEME };
  const dir = await writeFp8Checkpoint(config, { edit: withScales() });
  const plain = await writeFp8Checkpoint(COMPRESSED_TENSORS);
  try {
    const backend = new CpuBackend();
    const weights = await loadWeights(dir, await loadModelConfig(dir), backend, {
      ops: await loadOps(backend),
    });
    assert.deepEqual([...weights.kvScales!.k], kScales.map(Math.fround));
    assert.deepEqual([...weights.kvScales!.v], vScales.map(Math.fround));
    weights.free();
    // An `fp8`-method checkpoint (AutoFP8) carries them with no config key: read when present.
    const autoFp8 = await writeFp8Checkpoint(
      { quant_method: "fp8", activation_scheme: "static" },
      { perTensor: true, edit: withKvScales(kScales, vScales) },
    );
    try {
      const carried = await loadWeights(autoFp8, await loadModelConfig(autoFp8), backend, {
        ops: await loadOps(backend),
      });
      assert.deepEqual([...carried.kvScales!.v], vScales.map(Math.fround));
      carried.free();
    } finally {
      await Deno.remove(autoFp8, { recursive: true });
    }
    const none = await loadWeights(plain, await loadModelConfig(plain), backend, {
      ops: await loadOps(backend),
    });
    assert.equal(none.kvScales, null, "no scales, no kv_cache_scheme: scales of 1");
    none.free();

    const scaled = await lastLogits(dir, null, "fp8");
    const unscaled = await lastLogits(plain, null, "fp8");
    const bf16Cache = await lastLogits(plain);
    assert.notDeepEqual(scaled, unscaled, "the checkpoint's scales are used");
    const error = relativeError(scaled, bf16Cache);
    console.log(
      `FP8 KV cache with the checkpoint's scales vs a bf16 cache: ${error.toExponential(2)}`,
    );
    assert.ok(error < 0.05, `relative error ${error}`);
    // A bf16 cache has no use for them: the same logits as without the scheme.
    assert.deepEqual(await lastLogits(dir), bf16Cache);
    // The load says which scales the FP8 cache took.
    for (const [from, says] of [[dir, "from the checkpoint"], [plain, "scales 1 per layer"]]) {
      const lines: string[] = [];
      const engine = await Engine.load(from, {
        backend: "cpu",
        kvCacheDtype: "fp8",
        log: (line) => lines.push(line),
      });
      await engine.close();
      assert.ok(lines.some((l) => l.startsWith("KV cache: fp8") && l.includes(says)), from);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(plain, { recursive: true });
  }
  for (
    const [drop, bad, message] of [
      [
        "model.layers.1.self_attn.v_scale",
        undefined,
        /self_attn\.v_scale': missing: the checkpoint has FP8 KV-cache scales/,
      ],
      [
        undefined,
        "model.layers.0.self_attn.k_scale",
        /k_scale': F32 \[2\] is not a KV-cache scale/,
      ],
    ] as const
  ) {
    const broken = await writeFp8Checkpoint(config, { edit: withScales(drop, bad) });
    try {
      const backend = new CpuBackend();
      await assert.rejects(
        loadWeights(broken, await loadModelConfig(broken), backend, {
          ops: await loadOps(backend),
        }),
        (e: Error) => e instanceof WeightsError && message.test(e.message),
      );
    } finally {
      await Deno.remove(broken, { recursive: true });
    }
  }
});

Deno.test("FP8 quantization_config: unsupported schemes are refused naming the key", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(TINY, "config.json")));
  const group = COMPRESSED_TENSORS.config_groups.group_0;
  const withGroup = (g: Record<string, unknown>) => ({
    ...COMPRESSED_TENSORS,
    config_groups: { group_0: { ...group, ...g } },
  });
  const cases: [string, unknown, RegExp][] = [
    [
      "block-wise weights",
      withGroup({ weights: { ...group.weights, strategy: "block", block_structure: [128, 128] } }),
      /weights\.strategy "block" with block_structure \[128,128\] is not supported/,
    ],
    [
      "group weights",
      withGroup({ weights: { ...group.weights, strategy: "group", group_size: 128 } }),
      /strategy "group" with group_size 128 is not supported/,
    ],
    [
      "int8 activations",
      withGroup({ input_activations: { num_bits: 8, type: "int", dynamic: true } }),
      /input_activations \(int 8-bit activations\) is not supported/,
    ],
    [
      "FP8 outputs",
      withGroup({ output_activations: { num_bits: 8, type: "float" } }),
      /output_activations \(quantized outputs\) is not supported/,
    ],
    [
      "int4 weights",
      { ...COMPRESSED_TENSORS, format: "pack-quantized" },
      /format "pack-quantized" is not supported/,
    ],
    [
      "dynamic KV-cache scales",
      { ...COMPRESSED_TENSORS, kv_cache_scheme: { ...KV_SCHEME, dynamic: true } },
      /kv_cache_scheme\.dynamic true \(scales computed at run time\) is not supported; Denali reads static per-tensor FP8 K\/V scales/,
    ],
    [
      "per-head KV-cache scales",
      { ...COMPRESSED_TENSORS, kv_cache_scheme: { ...KV_SCHEME, strategy: "attn_head" } },
      /kv_cache_scheme\.strategy "attn_head" is not supported/,
    ],
    [
      "an int8 KV cache",
      { ...COMPRESSED_TENSORS, kv_cache_scheme: { ...KV_SCHEME, type: "int" } },
      /kv_cache_scheme \(int 8-bit\) is not supported; .*remove kv_cache_scheme/,
    ],
    [
      "block-wise fp8 method",
      { quant_method: "fp8", weight_block_size: [128, 128] },
      /weight_block_size \[128,128\] \(block-wise FP8 scales\) is not supported/,
    ],
    [
      "bitsandbytes",
      { quant_method: "bitsandbytes" },
      /quant_method "bitsandbytes" is not supported.*unquantized/,
    ],
  ];
  for (const [what, quantization, message] of cases) {
    assert.throws(
      () => parseModelConfig({ ...config, quantization_config: quantization }),
      (e: Error) => e instanceof ConfigError && message.test(e.message),
      what,
    );
  }
  const parsed = parseModelConfig({ ...config, quantization_config: COMPRESSED_TENSORS });
  assert.deepEqual(parsed.quantization, {
    method: "compressed-tensors",
    strategy: "channel",
    activations: "fp8-dynamic",
    kvCacheScales: false,
  });
  const withKv = { ...COMPRESSED_TENSORS, kv_cache_scheme: KV_SCHEME };
  const kv = parseModelConfig({ ...config, quantization_config: withKv }).quantization;
  assert.ok(kv?.method === "compressed-tensors" && kv.kvCacheScales, "kv_cache_scheme read");
});
