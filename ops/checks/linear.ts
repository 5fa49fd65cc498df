/**
 * The linear family's argument checks, shared by the CPU reference (ops/cpu/linear.ts) and the GPU launchers
 * (ops/gpu/linear.ts), so every implementation rejects the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";

const INT32_MAX = 0x7fffffff;

function checkDim(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0 || value > INT32_MAX) {
    throw new RangeError(`${op}: ${name} = ${value} must be an integer in 1..2^31-1`);
  }
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

/**
 * Validates a linear call: m, n and k positive int32, and out, x and weight big enough for
 * [m, n], [m, k] and [n, k] bf16. Throws a RangeError naming the op, the argument and the sizes;
 * allocates nothing when the arguments are good.
 */
export function checkLinearArgs(
  op: string,
  out: DeviceBuffer,
  x: DeviceBuffer,
  weight: DeviceBuffer,
  m: number,
  n: number,
  k: number,
): void {
  checkDim(op, "m", m);
  checkDim(op, "n", n);
  checkDim(op, "k", k);
  checkBytes(op, "x", x, m, k, "[m, k]");
  checkBytes(op, "weight", weight, n, k, "[n, k]");
  checkBytes(op, "out", out, m, n, "[m, n]");
}

/** Validates prepareLinear's shapes: each m, n and k a positive int32. */
export function checkLinearShapes(
  op: string,
  shapes: readonly { m: number; n: number; k: number }[],
): void {
  for (const { m, n, k } of shapes) {
    checkDim(op, "m", m);
    checkDim(op, "n", n);
    checkDim(op, "k", k);
  }
}
