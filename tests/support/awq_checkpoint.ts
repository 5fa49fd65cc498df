/**
 * Tiny 4-bit checkpoints for tests: checkpoints/tiny-llama with its linear weights quantized
 * per group on the host (power-of-two scales, so (q − z)·s is exact in bf16) and packed as
 * AutoAWQ's GEMM layout or GPTQ's, from the formats' descriptions; or, for comparison, the
 * dequantized weights as a plain bf16 checkpoint.
 *
 * @module
 */

import { join } from "node:path";
import { packAwq } from "../../backends/awq.ts";
import { encodeBf16, fromBf16Bits } from "../../backends/bf16.ts";
import { readSafetensorsHeader, readTensor } from "../../models/safetensors.ts";
import { safetensorsBytes, type SafetensorsTensor } from "./safetensors.ts";

const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;
const LINEAR = /\.(q|k|v|o|gate|up|down)_proj\.weight$/;
/** An AWQ quantization_config (group size 64: tiny-llama's hidden size is 128). */
export const AWQ = {
  quant_method: "awq",
  bits: 4,
  group_size: 64,
  zero_point: true,
  version: "gemm",
};
/** A GPTQ quantization_config (asymmetric, in-order groups). */
export const GPTQ = { quant_method: "gptq", bits: 4, group_size: 64, desc_act: false, sym: false };

/** A linear weight [n, k] quantized per group of g along k: q, zeros and scales [n, k / g]. */
export interface Quantized {
  n: number;
  k: number;
  q: Uint8Array;
  zeros: Uint8Array;
  scales: Float32Array;
}

/** Asymmetric 4-bit group quantization with power-of-two scales. */
export function quantize(values: Float64Array, n: number, k: number, g: number): Quantized {
  const groups = k / g;
  const q = new Uint8Array(n * k), zeros = new Uint8Array(n * groups);
  const scales = new Float32Array(n * groups);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < groups; j++) {
      let lo = 0, hi = 0;
      for (let c = j * g; c < (j + 1) * g; c++) {
        lo = Math.min(lo, values[r * k + c]);
        hi = Math.max(hi, values[r * k + c]);
      }
      const s = 2 ** Math.ceil(Math.log2(Math.max(hi - lo, 1e-6) / 15));
      const z = Math.min(15, Math.round(-lo / s));
      scales[r * groups + j] = s;
      zeros[r * groups + j] = z;
      for (let c = j * g; c < (j + 1) * g; c++) {
        q[r * k + c] = Math.max(0, Math.min(15, Math.round(values[r * k + c] / s) + z));
      }
    }
  }
  return { n, k, q, zeros, scales };
}

/** W[n, k] = (q − z)·s, as the test computes it. */
export function dequantized({ n, k, q, zeros, scales }: Quantized): Float64Array {
  const groups = zeros.length / n, g = k / groups;
  const out = new Float64Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const at = r * groups + Math.floor(c / g);
      out[r * k + c] = (q[r * k + c] - zeros[at]) * scales[at];
    }
  }
  return out;
}

/** [rows, cols] → [cols, rows]. */
function transpose<T extends Uint8Array | Float32Array>(values: T, rows: number, cols: number): T {
  const out = values.slice() as T;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  }
  return out;
}

export function i32(values: Int32Array | Uint32Array): SafetensorsTensor["data"] {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function f16(values: Float32Array): Uint8Array {
  return new Uint8Array(Float16Array.from(values).buffer);
}

/** AutoAWQ's tensors for one linear: qweight [k, n/8], qzeros [k/g, n/8], scales [k/g, n]. */
function awqTensors(w: Quantized, groups: number): [string, SafetensorsTensor][] {
  return [
    ["qweight", {
      dtype: "I32",
      shape: [w.k, w.n / 8],
      data: i32(packAwq(transpose(w.q, w.n, w.k), w.k, w.n)),
    }],
    ["qzeros", {
      dtype: "I32",
      shape: [groups, w.n / 8],
      data: i32(packAwq(transpose(w.zeros, w.n, groups), groups, w.n)),
    }],
    ["scales", { dtype: "F16", shape: [groups, w.n], data: f16(transpose(w.scales, w.n, groups)) }],
  ];
}

/**
 * GPTQ's tensors: qweight [k/8, n] packed along k in plain nibble order, qzeros [k/g, n/8]
 * packed along n in plain order and stored minus one (checkpoint_format "gptq"), g_idx [k].
 */
function gptqTensors(
  w: Quantized,
  groups: number,
  gIdx?: Int32Array,
): [string, SafetensorsTensor][] {
  const qweight = new Uint32Array(w.k / 8 * w.n);
  for (let r = 0; r < w.n; r++) {
    for (let c = 0; c < w.k; c++) qweight[(c >> 3) * w.n + r] |= w.q[r * w.k + c] << (4 * (c & 7));
  }
  const qzeros = new Uint32Array(groups * w.n / 8);
  for (let r = 0; r < w.n; r++) {
    for (let j = 0; j < groups; j++) {
      qzeros[j * (w.n / 8) + (r >> 3)] |= ((w.zeros[r * groups + j] - 1) & 15) << (4 * (r & 7));
    }
  }
  const g = w.k / groups;
  return [
    ["qweight", { dtype: "I32", shape: [w.k / 8, w.n], data: i32(qweight) }],
    ["qzeros", { dtype: "I32", shape: [groups, w.n / 8], data: i32(qzeros) }],
    ["scales", { dtype: "F16", shape: [groups, w.n], data: f16(transpose(w.scales, w.n, groups)) }],
    ["g_idx", {
      dtype: "I32",
      shape: [w.k],
      data: i32(gIdx ?? Int32Array.from({ length: w.k }, (_, i) => Math.floor(i / g))),
    }],
  ];
}

export interface Written {
  dir: string;
  /** The quantized weights by HF name (`...q_proj.weight`). */
  weights: Map<string, Quantized>;
}

/**
 * Writes tiny-llama with its linear weights 4-bit in `format` ("bf16": the dequantized weights
 * as a plain checkpoint), `edit` applied to the tensors last.
 */
export async function writeCheckpoint(
  format: "awq" | "gptq" | "bf16",
  options: {
    config?: Record<string, unknown>;
    edit?: (tensors: Map<string, SafetensorsTensor>) => void;
    gIdx?: Int32Array;
  } = {},
): Promise<Written> {
  const dir = await Deno.makeTempDir({ prefix: `denali-${format}-` });
  const header = await readSafetensorsHeader(join(TINY, "model.safetensors"));
  const tensors = new Map<string, SafetensorsTensor>();
  const weights = new Map<string, Quantized>();
  const quantization = options.config ?? (format === "gptq" ? GPTQ : AWQ);
  const g = quantization.group_size as number;
  for (const [name, info] of header.tensors) {
    const data = await readTensor(header, name);
    if (!LINEAR.test(name)) {
      tensors.set(name, { dtype: info.dtype, shape: [...info.shape], data });
      continue;
    }
    const [n, k] = info.shape;
    const bits = new Uint16Array(data.buffer, data.byteOffset, n * k);
    const w = quantize(Float64Array.from(bits, fromBf16Bits), n, k, g);
    weights.set(name, w);
    const prefix = name.replace(/\.weight$/, "");
    if (format === "bf16") {
      tensors.set(name, {
        dtype: "BF16",
        shape: [n, k],
        data: new Uint8Array(encodeBf16(dequantized(w)).buffer),
      });
      continue;
    }
    const parts = format === "awq" ? awqTensors(w, k / g) : gptqTensors(w, k / g, options.gIdx);
    for (const [suffix, tensor] of parts) tensors.set(`${prefix}.${suffix}`, tensor);
  }
  options.edit?.(tensors);
  Deno.writeFileSync(join(dir, "model.safetensors"), safetensorsBytes(tensors));
  const config = JSON.parse(await Deno.readTextFile(join(TINY, "config.json")));
  if (format !== "bf16") config.quantization_config = quantization;
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  for (const file of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    await Deno.copyFile(join(TINY, file), join(dir, file));
  }
  return { dir, weights };
}
