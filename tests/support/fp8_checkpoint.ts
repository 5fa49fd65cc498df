/**
 * FP8 checkpoints written for tests: checkpoints/tiny-llama with its linear weights quantized per
 * row (or per tensor) on the host in the compressed-tensors layout, and the pieces tests vary.
 *
 * @module
 */

import { join } from "node:path";
import { fromBf16Bits } from "../../backends/bf16.ts";
import { quantizeE4m3, rowScale } from "../../backends/fp8.ts";
import { readSafetensorsHeader, readTensor } from "../../models/safetensors.ts";
import { safetensorsBytes, type SafetensorsTensor } from "./safetensors.ts";

/** The tiny Llama checkpoint the FP8 ones are written from. */
export const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;

const LINEAR = /\.(q|k|v|o|gate|up|down)_proj\.weight$/;

/** llm-compressor's FP8 weights (per channel) with dynamic FP8 activations. */
export const COMPRESSED_TENSORS = {
  quant_method: "compressed-tensors",
  format: "float-quantized",
  config_groups: {
    group_0: {
      targets: ["Linear"],
      weights: { num_bits: 8, type: "float", strategy: "channel", symmetric: true, dynamic: false },
      input_activations: { num_bits: 8, type: "float", strategy: "token", dynamic: true },
    },
  },
  ignore: ["lm_head"],
};

/** llm-compressor's FP8 KV-cache scheme: static per-tensor scales. */
export const KV_SCHEME = {
  num_bits: 8,
  type: "float",
  strategy: "tensor",
  dynamic: false,
  symmetric: true,
};

/**
 * Writes tiny-llama with its linear weights quantized per row (F8_E4M3 + F32 weight_scale
 * [out, 1], or a per-tensor scalar with `perTensor`), `edit` applied to the tensors last.
 */
export async function writeFp8Checkpoint(
  quantizationConfig: unknown,
  options: { perTensor?: boolean; edit?: (tensors: Map<string, SafetensorsTensor>) => void } = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "denali-fp8-" });
  const header = await readSafetensorsHeader(join(TINY, "model.safetensors"));
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, info] of header.tensors) {
    const data = await readTensor(header, name);
    if (!LINEAR.test(name)) {
      tensors.set(name, { dtype: info.dtype, shape: [...info.shape], data });
      continue;
    }
    const [rows, cols] = info.shape;
    const bits = new Uint16Array(data.buffer, data.byteOffset, rows * cols);
    const values = Float64Array.from(bits, fromBf16Bits);
    const codes = new Uint8Array(rows * cols);
    const amaxOf = (from: number, to: number) => {
      let m = 0;
      for (let i = from; i < to; i++) m = Math.max(m, Math.abs(values[i]));
      return m;
    };
    const tensorScale = rowScale(amaxOf(0, rows * cols));
    const scales = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      scales[r] = options.perTensor ? tensorScale : rowScale(amaxOf(r * cols, (r + 1) * cols));
      for (let c = 0; c < cols; c++) {
        codes[r * cols + c] = quantizeE4m3(values[r * cols + c], scales[r]);
      }
    }
    tensors.set(name, { dtype: "F8_E4M3", shape: [rows, cols], data: codes });
    tensors.set(name.replace(/weight$/, "weight_scale"), {
      dtype: "F32",
      shape: options.perTensor ? [] : [rows, 1],
      data: new Uint8Array((options.perTensor ? Float32Array.of(tensorScale) : scales).buffer),
    });
  }
  options.edit?.(tensors);
  Deno.writeFileSync(join(dir, "model.safetensors"), safetensorsBytes(tensors));
  const config = JSON.parse(await Deno.readTextFile(join(TINY, "config.json")));
  config.quantization_config = quantizationConfig;
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  for (const file of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    await Deno.copyFile(join(TINY, file), join(dir, file));
  }
  return dir;
}

/**
 * An `edit` for writeFp8Checkpoint adding each layer's scalar F32 `self_attn.k_scale` and
 * `v_scale` (the tensors a `kv_cache_scheme` checkpoint carries).
 */
export function withKvScales(
  k: readonly number[],
  v: readonly number[],
): (tensors: Map<string, SafetensorsTensor>) => void {
  const scalar = (value: number): SafetensorsTensor => ({
    dtype: "F32",
    shape: [],
    data: new Uint8Array(Float32Array.of(value).buffer),
  });
  return (tensors) => {
    k.forEach((value, l) => {
      tensors.set(`model.layers.${l}.self_attn.k_scale`, scalar(value));
      tensors.set(`model.layers.${l}.self_attn.v_scale`, scalar(v[l]));
    });
  };
}
