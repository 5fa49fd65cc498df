/**
 * The linear family's argument checks, shared by the CPU reference (ops/cpu/linear.ts) and the GPU launchers
 * (ops/gpu/linear.ts), so every implementation rejects the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { type Fp8Weight, isFp8Weight, type LinearWeight } from "../linear_weight.ts";
import { type AwqWeight, isAwqWeight } from "../linear_weight.ts";
import { checkAwqWeight } from "./awq.ts";
import { checkBuffer } from "./common.ts";
import { checkEps } from "./elementwise.ts";

const INT32_MAX = 0x7fffffff;

function checkDim(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0 || value > INT32_MAX) {
    throw new RangeError(`${op}: ${name} = ${value} must be an integer in 1..2^31-1`);
  }
}

/** m, n and k of an [m, k] · [n, k]ᵀ product, each a positive int32. */
function checkMnk(op: string, m: number, n: number, k: number): void {
  checkDim(op, "m", m);
  checkDim(op, "n", n);
  checkDim(op, "k", k);
}

function checkBytes(
  op: string,
  name: string,
  buffer: DeviceBuffer,
  rows: number,
  cols: number,
  dims: string,
): void {
  if (buffer.bytes < 2 * rows * cols) {
    throw new RangeError(
      `${op}: ${name} holds ${buffer.bytes} bytes, but ${dims} = ${rows}×${cols} bf16 needs ${
        2 * rows * cols
      }`,
    );
  }
}

/** Validates an FP8 weight of [n, k]: codes of n·k bytes and n f32 scales. */
export function checkFp8Weight(op: string, weight: Fp8Weight, n: number, k: number): void {
  if (weight.data.bytes < n * k) {
    throw new RangeError(
      `${op}: the FP8 weight's data holds ${weight.data.bytes} bytes, but [n, k] = ${n}×${k} ` +
        `E4M3 needs ${n * k}`,
    );
  }
  if (weight.scales.bytes < 4 * n) {
    throw new RangeError(
      `${op}: the FP8 weight's scales hold ${weight.scales.bytes} bytes, but ${n} rows need ` +
        `${4 * n} (one f32 each)`,
    );
  }
}

/**
 * Validates a linear call: m, n and k positive int32, and out, x and weight big enough for
 * [m, n], [m, k] and [n, k] (bf16, or FP8 codes and per-row scales). Throws a RangeError naming
 * the op, the argument and the sizes; allocates nothing when the arguments are good.
 */
export function checkLinearArgs(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: LinearWeight,
  m: number,
  n: number,
  k: number,
): void {
  checkProduct(op, out, x, weight, m, n, k, n, "[n, k]");
}

/** m, n, k, then x [m, k], a weight of `rows` × k (its shape named `dims`) and out [m, n]. */
function checkProduct(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: LinearWeight,
  m: number,
  n: number,
  k: number,
  rows: number,
  dims: string,
): void {
  checkMnk(op, m, n, k);
  checkBytes(op, "x", x, m, k, "[m, k]");
  checkWeight(op, weight, rows, k, dims);
  checkBytes(op, "out", out, m, n, "[m, n]");
}

/** A weight of `rows` × k in any format `linear` takes. */
function checkWeight(op: string, weight: LinearWeight, rows: number, k: number, dims: string) {
  if (isFp8Weight(weight)) checkFp8Weight(op, weight, rows, k);
  else if (isAwqWeight(weight)) checkAwqWeight(op, weight, rows, k);
  else checkBytes(op, "weight", weight, rows, k, dims);
}

/**
 * Validates a linearSiluMul call as checkLinearArgs does a linear one, for a gate/up weight of
 * [2n, k] and out of [m, n]; 2n must stay a positive int32 too.
 */
export function checkLinearSiluMulArgs(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: LinearWeight,
  m: number,
  n: number,
  k: number,
): void {
  checkDim(op, "n", n);
  if (2 * n > INT32_MAX) {
    throw new RangeError(`${op}: n = ${n} makes 2n gate/up rows, past 2^31-1`);
  }
  checkProduct(op, out, x, weight, m, n, k, 2 * n, "[2n, k]");
}

/**
 * Validates a linearRmsNorm call: the product as checkLinearArgs checks it (x [m, k] being the
 * input before the norm), eps, the norm's weight [k], the residual and the buffer its sum goes to
 * (both [m, k], or both null), and that out and that buffer overlap none of the inputs: every
 * block of the kernels reads x and the residual whole while others write.
 */
export function checkLinearRmsNormArgs(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  residual: DeviceBuffer | null,
  residualOut: DeviceBuffer | null,
  normWeight: DeviceBuffer,
  weight: LinearWeight,
  m: number,
  n: number,
  k: number,
  eps: number,
): void {
  checkLinearArgs(op, out, x, weight, m, n, k);
  checkEps(op, eps);
  checkBuffer(op, "normWeight", normWeight, 2 * k, 2, "k bf16");
  if ((residual === null) !== (residualOut === null)) {
    throw new RangeError(
      `${op}: residual and residualOut go together (the sum goes to residualOut); give both or neither`,
    );
  }
  if (residual !== null) checkBuffer(op, "residual", residual, 2 * m * k, 2, "[m, k] bf16");
  if (residualOut !== null) {
    checkBuffer(op, "residualOut", residualOut, 2 * m * k, 2, "[m, k] bf16");
  }
  // Each written region apart from every other region (pair by pair: called per layer on
  // eager steps, so nothing is allocated).
  const mn = 2 * m * n, mk = 2 * m * k;
  checkApart(op, "out", out, mn, "residualOut", residualOut, mk);
  checkApart(op, "out", out, mn, "x", x, mk);
  checkApart(op, "out", out, mn, "residual", residual, mk);
  checkApart(op, "residualOut", residualOut, mk, "x", x, mk);
  checkApart(op, "residualOut", residualOut, mk, "residual", residual, mk);
}

/** Throws unless the first `aBytes` of `a` and the first `bBytes` of `b` (where given) are apart. */
function checkApart(
  op: string,
  aName: string,
  a: DeviceBuffer | null,
  aBytes: number,
  bName: string,
  b: DeviceBuffer | null,
  bBytes: number,
): void {
  if (a === null || b === null) return;
  if (a.ptr < b.ptr + bBytes && b.ptr < a.ptr + aBytes) {
    throw new RangeError(`${op}: ${aName} overlaps ${bName}; give each its own buffer`);
  }
}

/** n and k of a (de)quantize call, and its bf16 weight [n, k]. */
function checkBf16Side(op: string, bf16: DeviceBuffer, n: number, k: number): void {
  checkDim(op, "n", n);
  checkDim(op, "k", k);
  checkBytes(op, "the bf16 weight", bf16, n, k, "[n, k]");
}

/** Validates a quantizeFp8 or dequantizeFp8 call: the bf16 side [n, k] and the FP8 side. */
export function checkFp8Args(
  op: string,
  bf16: DeviceBuffer,
  fp8: Fp8Weight,
  n: number,
  k: number,
): void {
  checkBf16Side(op, bf16, n, k);
  checkFp8Weight(op, fp8, n, k);
}

/** Validates a dequantizeAwq call: the bf16 side [n, k] and the 4-bit weight. */
export function checkAwqArgs(
  op: string,
  bf16: DeviceBuffer,
  weight: AwqWeight,
  n: number,
  k: number,
): void {
  checkBf16Side(op, bf16, n, k);
  checkAwqWeight(op, weight, n, k);
}

/** Validates prepareLinear's shapes: each m, n and k a positive int32, `fp8` a boolean if set. */
export function checkLinearShapes(
  op: string,
  shapes: readonly { m: number; n: number; k: number; fp8?: boolean }[],
): void {
  for (const { m, n, k, fp8 } of shapes) {
    checkMnk(op, m, n, k);
    if (fp8 !== undefined && typeof fp8 !== "boolean") {
      throw new TypeError(`${op}: a shape's fp8 must be a boolean when given, got ${typeof fp8}`);
    }
  }
}
