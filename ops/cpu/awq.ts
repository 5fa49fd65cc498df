/**
 * CPU 4-bit weight ops, the reference the kernels of kernels/src/linear_awq.cu are tested
 * against: dequantization to bf16, and the W4A16 product `linear` runs on an {@link AwqWeight}
 * (out = bf16(Σ_k x · (q - z) · s), summed in double over the exact f32 weights).
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { codeAt } from "../../backends/awq.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import { checkAwqArgs } from "../checks/linear.ts";
import type { AwqWeight } from "../linear_weight.ts";
import type { AwqOps } from "../ops.ts";

function host(buffer: DeviceBuffer, op: string): Uint8Array {
  if (!buffer.host) throw new TypeError(`${op}: the CPU ops need CPU backend buffers (with .host)`);
  return buffer.host;
}

/**
 * Row `row` of a 4-bit weight [_, k] as f32 values into `out`: (q - z) · s, exact in f32 (a
 * 5-bit integer times an f32 scale that came from f16).
 */
export function awqRow(weight: AwqWeight, row: number, k: number, out: Float32Array): void {
  const codeBytes = host(weight.codes, "linear");
  const codes = new Uint32Array(codeBytes.buffer, codeBytes.byteOffset + row * k / 2, k / 8);
  const groups = k / weight.groupSize;
  const zeroBytes = host(weight.zeros, "linear");
  const scaleBytes = host(weight.scales, "linear");
  const scales = new Float32Array(
    scaleBytes.buffer,
    scaleBytes.byteOffset + 4 * row * groups,
    groups,
  );
  for (let i = 0; i < k; i++) {
    const g = Math.floor(i / weight.groupSize);
    const q = codeAt(codes, k, 0, i);
    out[i] = Math.fround((q - zeroBytes[row * groups + g]) * scales[g]);
  }
}

/** out[m, n] (bf16) = bf16(Σ_k x[m, k] · W[n, k]) for a 4-bit W, x already decoded to f32. */
export function awqLinearRows(
  ob: Uint16Array,
  xf: Float32Array,
  weight: AwqWeight,
  m: number,
  n: number,
  k: number,
): void {
  const w = new Float32Array(k);
  for (let j = 0; j < n; j++) {
    awqRow(weight, j, k, w);
    for (let r = 0; r < m; r++) {
      const xo = r * k;
      let sum = 0;
      for (let i = 0; i < k; i++) sum += xf[xo + i] * w[i];
      ob[r * n + j] = toBf16Bits(sum);
    }
  }
}

/** The 4-bit weight ops on the CPU backend. */
export function cpuAwqOps(): AwqOps {
  return {
    dequantizeAwq(out, weight, n, k) {
      checkAwqArgs("dequantizeAwq", out, weight, n, k);
      const o = host(out, "dequantizeAwq");
      const bits = new Uint16Array(o.buffer, o.byteOffset, n * k);
      const w = new Float32Array(k);
      for (let j = 0; j < n; j++) {
        awqRow(weight, j, k, w);
        for (let i = 0; i < k; i++) bits[j * k + i] = toBf16Bits(w[i]);
      }
    },

    awqScratchBytes() {
      return 0; // the CPU multiplies 4-bit weights directly, whatever the row count
    },
  };
}
