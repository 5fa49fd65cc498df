/**
 * Argument checks shared by the CPU ops (ops/cpu/) and the GPU ops (ops/gpu/), so every
 * implementation rejects the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";

/** Throws unless `value` is a positive safe integer. */
export function checkPositive(op: string, name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`${op}: ${name} must be a positive integer, got ${value}`);
  }
}

/** Throws unless `buffer` holds at least `bytes` bytes and starts on an `align`-byte boundary. */
export function checkBuffer(
  op: string,
  name: string,
  buffer: DeviceBuffer,
  bytes: number,
  align: number,
  shape: string,
): void {
  if (buffer.bytes < bytes) {
    throw new RangeError(`${op}: ${name} holds ${buffer.bytes} bytes but ${shape} needs ${bytes}`);
  }
  if (buffer.ptr % align !== 0) {
    throw new RangeError(`${op}: ${name} must be ${align}-byte aligned (element size)`);
  }
}
