/**
 * CPU FP8 weight ops, the reference the kernels of kernels/src/linear_fp8.cu are tested against:
 * per-row quantization of a bf16 weight, dequantization back to bf16, the W8A16 product
 * `linear` runs on an FP8 weight (out = bf16(scale[n] · Σ x · e4m3(W)), summed in double), and
 * the W8A8 product the GPU runs on FP8 tensor cores where it is faster (x quantized per token
 * first), for the GPU tests.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { e4m3Table, quantizeE4m3, rowScale } from "../../backends/fp8.ts";
import { checkFp8Args } from "../checks/linear.ts";
import type { Fp8Weight } from "../linear_weight.ts";
import type { Fp8Ops } from "../ops.ts";
import { lutDot } from "./lut_dot.ts";

function host(buffer: DeviceBuffer, op: string): Uint8Array {
  if (!buffer.host) throw new TypeError(`${op}: the CPU ops need CPU backend buffers (with .host)`);
  return buffer.host;
}

function f32View(buffer: DeviceBuffer, count: number, op: string): Float32Array {
  const bytes = host(buffer, op);
  return new Float32Array(bytes.buffer, bytes.byteOffset, count);
}

function bf16View(buffer: DeviceBuffer, count: number, op: string): Uint16Array {
  const bytes = host(buffer, op);
  return new Uint16Array(bytes.buffer, bytes.byteOffset, count);
}

/**
 * out[m, n] (bf16) = bf16(scales[n] · Σ_k x[m, k] · e4m3(W[n, k])), x already decoded to f32:
 * the W8A16 product, exact up to the double sum and the one rounding to bf16.
 */
export function fp8LinearRows(
  ob: Uint16Array,
  xf: Float32Array,
  weight: Fp8Weight,
  m: number,
  n: number,
  k: number,
): void {
  const codes = host(weight.data, "linear");
  const scales = f32View(weight.scales, n, "linear");
  const lut = e4m3Table();
  for (let j = 0; j < n; j++) {
    const base = j * k, scale = scales[j];
    for (let r = 0; r < m; r++) {
      ob[r * n + j] = toBf16Bits(scale * lutDot(xf, r * k, lut, codes, base, k));
    }
  }
}

/**
 * Quantizes `k` bf16 values from `values[base]` as one row, into `codes[base..]`, and returns the
 * row's scale: amax / 448 (`rowScale`), each code e4m3(value / scale). The weight quantizer and
 * the per-token activation quantizer of W8A8 are this same arithmetic.
 */
export function quantizeRowE4m3(
  values: Uint16Array,
  codes: Uint8Array,
  base: number,
  k: number,
): number {
  const value = new Float32Array(1), bits = new Uint32Array(value.buffer);
  let amax = 0;
  for (let i = 0; i < k; i++) {
    bits[0] = (values[base + i] & 0x7fff) << 16;
    // `>` passes NaN over, as the device's fmaxf does.
    if (value[0] > amax) amax = value[0];
  }
  const scale = rowScale(amax);
  for (let i = 0; i < k; i++) {
    bits[0] = values[base + i] << 16;
    codes[base + i] = quantizeE4m3(value[0], scale);
  }
  return scale;
}

/**
 * The W8A8 product: each row of x (bf16 [m, k]) quantized as `quantizeRowE4m3` quantizes a
 * weight row, then out[m, n] (bf16) = bf16(xScale[m] · scales[n] · Σ_k e4m3(xq[m, k]) ·
 * e4m3(W[n, k])), the sum exact in double (products of two E4M3 values are exact). The GPU's
 * quantizer writes the same codes and scales; its fp32 sum differs only in order.
 */
export function fp8W8a8Rows(
  ob: Uint16Array,
  x: Uint16Array,
  weight: Fp8Weight,
  m: number,
  n: number,
  k: number,
): void {
  const codes = host(weight.data, "linear");
  const scales = f32View(weight.scales, n, "linear");
  const lut = e4m3Table();
  const xCodes = new Uint8Array(m * k), xValues = new Float32Array(m * k);
  const xScales = new Float64Array(m);
  for (let r = 0; r < m; r++) xScales[r] = quantizeRowE4m3(x, xCodes, r * k, k);
  for (let i = 0; i < m * k; i++) xValues[i] = lut[xCodes[i]];
  for (let j = 0; j < n; j++) {
    for (let r = 0; r < m; r++) {
      const dot = lutDot(xValues, r * k, lut, codes, j * k, k);
      ob[r * n + j] = toBf16Bits(xScales[r] * scales[j] * dot);
    }
  }
}

/** The FP8 weight ops on the CPU backend. */
export function cpuFp8Ops(): Fp8Ops {
  return {
    quantizeFp8(out, weight, n, k) {
      checkFp8Args("quantizeFp8", weight, out, n, k);
      const w = bf16View(weight, n * k, "quantizeFp8");
      const codes = host(out.data, "quantizeFp8");
      const scales = f32View(out.scales, n, "quantizeFp8");
      for (let j = 0; j < n; j++) scales[j] = quantizeRowE4m3(w, codes, j * k, k);
    },

    dequantizeFp8(out, weight, n, k) {
      checkFp8Args("dequantizeFp8", out, weight, n, k);
      const codes = host(weight.data, "dequantizeFp8");
      const scales = f32View(weight.scales, n, "dequantizeFp8");
      const o = bf16View(out, n * k, "dequantizeFp8");
      const lut = e4m3Table();
      for (let j = 0; j < n; j++) {
        const base = j * k, scale = scales[j];
        // The product of a 4-bit and a 24-bit significand is exact in double; fround gives the
        // f32 product the device computes, then one rounding to bf16.
        for (let i = 0; i < k; i++) {
          o[base + i] = toBf16Bits(Math.fround(scale * lut[codes[base + i]]));
        }
      }
    },

    fp8ScratchBytes() {
      return 0; // the CPU multiplies FP8 weights directly, whatever the row count
    },
  };
}
