/**
 * CPU linear ops: out[M, N] = x[M, K] · W[N, K]ᵀ over bf16 host buffers, the reference the GPU
 * kernels are tested against (FP8 weights go to ops/cpu/fp8.ts). Sums are accumulated in double precision (at least as accurate as
 * the GPU's fp32) and each output is rounded once to bf16, as the GPU stores it.
 *
 * Four W rows are done per pass over an x row: one x load feeds four independent sums, which
 * keeps the loop out of the add-latency chain. With one or two x rows (decode), W is read
 * through a 65536-entry bf16 → f32 table, so each weight costs one load and is never written
 * back; with more rows, four W rows at a time are decoded into f32 scratch and reused by every x
 * row.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { toBf16Bits } from "../../backends/bf16.ts";
import {
  checkLinearArgs,
  checkLinearRmsNormArgs,
  checkLinearShapes,
  checkLinearSiluMulArgs,
} from "../checks/linear.ts";
import { isFp8Weight } from "../linear_weight.ts";
import type { LinearOps } from "../ops.ts";
import { fp8LinearRows } from "./fp8.ts";
import { isAwqWeight } from "../linear_weight.ts";
import { awqLinearRows } from "./awq.ts";
import { lutDot } from "./lut_dot.ts";

/** Up to this many x rows, W is read through the bf16 table rather than decoded to scratch. */
const TABLE_ROWS = 2;

let table: Float32Array | null = null;

/** f32 value of every bf16 bit pattern (256 KiB, built on first use). */
function bf16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    const bits = new Uint32Array(table.buffer);
    for (let i = 0; i < 65536; i++) bits[i] = i << 16;
  }
  return table;
}

function bf16View(buffer: DeviceBuffer, count: number): Uint16Array {
  const host = buffer.host;
  if (!host) throw new TypeError("linear: the CPU ops need CPU backend buffers (with .host)");
  return new Uint16Array(host.buffer, host.byteOffset, count);
}

/**
 * Output columns [0, n4) (n4 a multiple of 4), reading W through the bf16 table: one load per
 * weight and no scratch writes, the fastest form when few x rows reuse each weight.
 */
function columnsViaTable(
  ob: Uint16Array,
  xf: Float32Array,
  wb: Uint16Array,
  m: number,
  n: number,
  k: number,
  n4: number,
): void {
  const lut = bf16Table();
  for (let j = 0; j < n4; j += 4) {
    const b0 = j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
    for (let r = 0; r < m; r++) {
      const xo = r * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < k; i++) {
        const v = xf[xo + i];
        s0 += v * lut[wb[b0 + i]];
        s1 += v * lut[wb[b1 + i]];
        s2 += v * lut[wb[b2 + i]];
        s3 += v * lut[wb[b3 + i]];
      }
      const o = r * n + j;
      ob[o] = toBf16Bits(s0);
      ob[o + 1] = toBf16Bits(s1);
      ob[o + 2] = toBf16Bits(s2);
      ob[o + 3] = toBf16Bits(s3);
    }
  }
}

/**
 * Output columns [0, n4), decoding four W rows at a time into `wf` (4·k f32), which every x row
 * then reuses.
 */
function columnsViaScratch(
  ob: Uint16Array,
  xf: Float32Array,
  wb: Uint16Array,
  wf: Float32Array,
  m: number,
  n: number,
  k: number,
  n4: number,
): void {
  const ww = new Uint32Array(wf.buffer, 0, 4 * k);
  const k2 = 2 * k, k3 = 3 * k;
  for (let j = 0; j < n4; j += 4) {
    const base = j * k;
    for (let i = 0; i < 4 * k; i++) ww[i] = wb[base + i] << 16;
    for (let r = 0; r < m; r++) {
      const xo = r * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < k; i++) {
        const v = xf[xo + i];
        s0 += v * wf[i];
        s1 += v * wf[k + i];
        s2 += v * wf[k2 + i];
        s3 += v * wf[k3 + i];
      }
      const o = r * n + j;
      ob[o] = toBf16Bits(s0);
      ob[o + 1] = toBf16Bits(s1);
      ob[o + 2] = toBf16Bits(s2);
      ob[o + 3] = toBf16Bits(s3);
    }
  }
}

/** The last n % 4 output columns, one W row at a time. */
function columnsOneByOne(
  ob: Uint16Array,
  xf: Float32Array,
  wb: Uint16Array,
  m: number,
  n: number,
  k: number,
  j0: number,
): void {
  const lut = bf16Table();
  for (let j = j0; j < n; j++) {
    const base = j * k;
    for (let r = 0; r < m; r++) {
      ob[r * n + j] = toBf16Bits(lutDot(xf, r * k, lut, wb, base, k));
    }
  }
}

/** The linear ops on the CPU backend. */
export function cpuLinearOps(): LinearOps {
  // Scratch reused across calls: x decoded to f32, and four decoded W rows.
  let xf = new Float32Array(0);
  let wf = new Float32Array(0);

  return {
    linear(out, x, weight, m, n, k) {
      checkLinearArgs("linear", out, x, weight, m, n, k);
      const xb = bf16View(x, m * k), ob = bf16View(out, m * n);
      if (xf.length < m * k) xf = new Float32Array(m * k);
      const xw = new Uint32Array(xf.buffer, 0, m * k);
      for (let i = 0; i < m * k; i++) xw[i] = xb[i] << 16;
      if (isFp8Weight(weight)) {
        fp8LinearRows(ob, xf, weight, m, n, k);
        return;
      }
      if (isAwqWeight(weight)) {
        awqLinearRows(ob, xf, weight, m, n, k);
        return;
      }
      const wb = bf16View(weight, n * k);
      if (wf.length < 4 * k) wf = new Float32Array(4 * k);
      const n4 = n - (n % 4);
      if (m <= TABLE_ROWS) columnsViaTable(ob, xf, wb, m, n, k, n4);
      else columnsViaScratch(ob, xf, wb, wf, m, n, k, n4);
      columnsOneByOne(ob, xf, wb, m, n, k, n4);
    },

    linearSiluMul(out, x, weight, m, n, k) {
      // No fused kernel here: the caller runs linear and siluMul, which define the result.
      checkLinearSiluMulArgs("linearSiluMul", out, x, weight, m, n, k);
      return false;
    },

    linearRmsNorm(out, x, res, resOut, gamma, w, m, n, k, eps) {
      // No fused kernel here: the caller runs rmsNorm and linear, which define the result.
      checkLinearRmsNormArgs("linearRmsNorm", out, x, res, resOut, gamma, w, m, n, k, eps);
      return false;
    },

    prepareLinear(shapes) {
      // Nothing to choose between on the CPU; validate so misuse fails the same everywhere.
      checkLinearShapes("prepareLinear", shapes);
    },
  };
}
