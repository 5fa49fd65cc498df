/**
 * A checkpoint's `quantization_config` (config.json), as far as Denali runs it: FP8 E4M3
 * weights with per-channel or per-tensor scales, in the two layouts the Hub uses:
 * - `quant_method: "compressed-tensors"`, `format: "float-quantized"` (llm-compressor's FP8,
 *   FP8_DYNAMIC schemes): per Linear `weight` (F8_E4M3) and `weight_scale` ([out, 1] for the
 *   `channel` strategy, a scalar for `tensor`);
 * - `quant_method: "fp8"` (AutoFP8, vLLM, transformers' FP8 without `weight_block_size`):
 *   `weight` and a scalar (or per-channel) `weight_scale`.
 *
 * Activations always stay bf16 (W8A16): a checkpoint that asks for FP8 activations (dynamic
 * per-token or static per-tensor `input_scale`) runs with bf16 ones, which is at least as
 * accurate; its input scales are not read. A compressed-tensors `kv_cache_scheme` of static
 * per-tensor FP8 scales is read (models/weights.ts loads each layer's k_scale and v_scale for an
 * FP8 KV cache). Everything else (block-wise or group scales, integer weights or activations,
 * FP8 output activations, other KV-cache schemes) is refused with a ConfigError naming the key
 * and what to use instead.
 *
 * @module
 */

import { type Int4Checkpoint, parseAwqConfig, parseGptqConfig } from "./quantization_int4.ts";

export type { Int4Checkpoint } from "./quantization_int4.ts";

/** An FP8 checkpoint's scheme, as parsed from config.json. */
export interface Fp8Checkpoint {
  /** The layout: compressed-tensors, or the `fp8` method. */
  readonly method: "compressed-tensors" | "fp8";
  /** The declared weight-scale strategy; the loader accepts either shape whatever it says. */
  readonly strategy: "channel" | "tensor";
  /** What the checkpoint asked for its activations; Denali runs them in bf16 in every case. */
  readonly activations: "bf16" | "fp8-dynamic" | "fp8-static";
  /**
   * Whether the checkpoint carries static per-tensor FP8 KV-cache scales (compressed-tensors
   * `kv_cache_scheme`): `self_attn.k_scale` and `v_scale` per layer, which an FP8 KV cache
   * (`--kv-cache-dtype fp8`) then uses instead of 1.
   */
  readonly kvCacheScales: boolean;
}

/** A quantization_config Denali cannot run; `message` names the key and the remedy. */
export type QuantizationFail = (message: string) => never;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const REMEDY = "Denali runs FP8 (E4M3) weights with per-channel or per-tensor scales; use " +
  "such a checkpoint (llm-compressor's FP8 or FP8_DYNAMIC scheme), or the model's unquantized " +
  "bf16 release with --quantization fp8";

/** The input_activations of a compressed-tensors group: null, or FP8 that runs as bf16. */
function activations(
  value: unknown,
  at: string,
  fail: QuantizationFail,
): Fp8Checkpoint["activations"] {
  if (value === undefined || value === null) return "bf16";
  if (!isObject(value)) fail(`${at} must be an object or null`);
  if (value.type !== "float" || value.num_bits !== 8) {
    fail(
      `${at} (${value.type} ${value.num_bits}-bit activations) is not supported; Denali keeps ` +
        `activations in bf16 and accepts only FP8 activation schemes (which it runs as bf16). ${REMEDY}`,
    );
  }
  return value.dynamic === true ? "fp8-dynamic" : "fp8-static";
}

function compressedTensors(config: Json, fail: QuantizationFail): Fp8Checkpoint {
  if (config.format !== "float-quantized") {
    fail(
      `quantization_config.format ${JSON.stringify(config.format)} is not supported; Denali ` +
        `loads "float-quantized" (FP8) compressed-tensors checkpoints. ${REMEDY}`,
    );
  }
  const groups = config.config_groups;
  if (!isObject(groups) || Object.keys(groups).length === 0) {
    fail("quantization_config.config_groups must be an object of one or more groups");
  }
  let strategy: Fp8Checkpoint["strategy"] | null = null;
  let acts: Fp8Checkpoint["activations"] = "bf16";
  for (const [name, group] of Object.entries(groups)) {
    const at = `quantization_config.config_groups.${name}`;
    if (!isObject(group)) fail(`${at} must be an object`);
    const weights = group.weights;
    if (!isObject(weights)) fail(`${at}.weights must be an object`);
    if (weights.type !== "float" || weights.num_bits !== 8) {
      fail(
        `${at}.weights (${weights.type} ${weights.num_bits}-bit) is not supported; ${REMEDY}`,
      );
    }
    if (weights.symmetric === false) {
      fail(`${at}.weights.symmetric false (zero points) is not supported; ${REMEDY}`);
    }
    if (weights.dynamic === true) {
      fail(`${at}.weights.dynamic true (scales computed at run time) is not supported; ${REMEDY}`);
    }
    if (weights.strategy !== "channel" && weights.strategy !== "tensor") {
      const detail = weights.strategy === "block"
        ? ` with block_structure ${JSON.stringify(weights.block_structure)}`
        : weights.strategy === "group"
        ? ` with group_size ${JSON.stringify(weights.group_size)}`
        : "";
      fail(
        `${at}.weights.strategy ${JSON.stringify(weights.strategy)}${detail} is not supported ` +
          `(block-wise and group scales need kernels Denali lacks); ${REMEDY}`,
      );
    }
    if (group.output_activations !== undefined && group.output_activations !== null) {
      fail(`${at}.output_activations (quantized outputs) is not supported; ${REMEDY}`);
    }
    const a = activations(group.input_activations, `${at}.input_activations`, fail);
    if (a !== "bf16") acts = a;
    strategy = strategy === "channel" ? "channel" : weights.strategy;
  }
  return {
    method: "compressed-tensors",
    strategy: strategy!,
    activations: acts,
    kvCacheScales: kvCacheScheme(config.kv_cache_scheme, fail),
  };
}

/**
 * A compressed-tensors `kv_cache_scheme`: absent or null (false), or static per-tensor FP8
 * scales (true), the one scheme vLLM's FP8 KV cache reads; anything else is refused.
 */
function kvCacheScheme(value: unknown, fail: QuantizationFail): boolean {
  if (value === undefined || value === null) return false;
  const at = "quantization_config.kv_cache_scheme";
  if (!isObject(value)) fail(`${at} must be an object or null`);
  const remedy = "Denali reads static per-tensor FP8 K/V scales (num_bits 8, type float, " +
    "strategy tensor, dynamic false); remove kv_cache_scheme from config.json to run with a " +
    "bf16 KV cache, or with --kv-cache-dtype fp8 and scales of 1";
  if (value.type !== "float" || value.num_bits !== 8) {
    fail(`${at} (${value.type} ${value.num_bits}-bit) is not supported; ${remedy}`);
  }
  if (value.strategy !== undefined && value.strategy !== "tensor") {
    fail(`${at}.strategy ${JSON.stringify(value.strategy)} is not supported; ${remedy}`);
  }
  if (value.dynamic === true) {
    fail(`${at}.dynamic true (scales computed at run time) is not supported; ${remedy}`);
  }
  if (value.symmetric === false) {
    fail(`${at}.symmetric false (zero points) is not supported; ${remedy}`);
  }
  return true;
}

function fp8Method(config: Json, fail: QuantizationFail): Fp8Checkpoint {
  const block = config.weight_block_size;
  if (block !== undefined && block !== null) {
    fail(
      `quantization_config.weight_block_size ${JSON.stringify(block)} (block-wise FP8 scales) ` +
        `is not supported; ${REMEDY}`,
    );
  }
  if (config.fmt !== undefined && config.fmt !== "e4m3") {
    fail(
      `quantization_config.fmt ${JSON.stringify(config.fmt)} is not supported; Denali reads E4M3`,
    );
  }
  const scheme = config.activation_scheme ?? "dynamic";
  if (scheme !== "dynamic" && scheme !== "static") {
    fail(
      `quantization_config.activation_scheme ${JSON.stringify(scheme)} is not supported; ` +
        `expected "dynamic" or "static" (both run with bf16 activations)`,
    );
  }
  return {
    method: "fp8",
    strategy: "tensor",
    activations: scheme === "dynamic" ? "fp8-dynamic" : "fp8-static",
    kvCacheScales: false,
  };
}

/**
 * Parses config.json's `quantization_config` (null when absent): FP8, or 4-bit AWQ/GPTQ
 * (models/quantization_int4.ts). `fail` throws the caller's error (a ConfigError naming
 * config.json).
 */
export function parseQuantizationConfig(
  value: unknown,
  fail: QuantizationFail,
): Fp8Checkpoint | Int4Checkpoint | null {
  if (value === undefined || value === null) return null;
  if (!isObject(value)) fail("quantization_config must be an object");
  const method = value.quant_method;
  if (method === "compressed-tensors") return compressedTensors(value, fail);
  if (method === "fp8") return fp8Method(value, fail);
  if (method === "awq") return parseAwqConfig(value, fail);
  if (method === "gptq") return parseGptqConfig(value, fail);
  return fail(
    `quantization_config.quant_method ${JSON.stringify(method)} is not supported; Denali loads ` +
      `FP8 checkpoints ("compressed-tensors" float-quantized, or "fp8") and 4-bit "awq" or ` +
      `"gptq" ones; otherwise use the ` +
      "model's unquantized bf16/f16 release (add --quantization fp8 to quantize it at load)",
  );
}
