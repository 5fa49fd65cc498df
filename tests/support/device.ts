/**
 * Writing operator inputs to a backend and reading results back, in tests.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { decodeBf16, encodeBf16 } from "../../backends/bf16.ts";

/** The first bytes of a device buffer into `out`, its raw bits (a blocking copy); returns `out`. */
export function readInto<T extends ArrayBufferView>(
  backend: Pick<Backend, "copyToHost">,
  buffer: DeviceBuffer,
  out: T,
): T {
  backend.copyToHost(out, buffer);
  return out;
}

/** The first `count` bf16 values of a device buffer, as f32 (a blocking copy). */
export function readBf16(
  backend: Pick<Backend, "copyToHost">,
  buffer: DeviceBuffer,
  count: number,
): Float32Array {
  return decodeBf16(readInto(backend, buffer, new Uint16Array(count)));
}

/** A new device buffer holding `values` rounded to bf16 (a blocking copy). */
export function writeBf16(
  backend: Pick<Backend, "alloc" | "copyToDevice">,
  values: ArrayLike<number>,
): DeviceBuffer {
  const buffer = backend.alloc(2 * values.length);
  backend.copyToDevice(buffer, encodeBf16(values));
  return buffer;
}

/** A new device buffer holding `data`'s bytes (a blocking copy). */
export function upload(
  backend: Pick<Backend, "alloc" | "copyToDevice">,
  data: Uint8Array | Uint16Array | Uint32Array | Float32Array,
): DeviceBuffer {
  const buffer = backend.alloc(data.byteLength);
  backend.copyToDevice(buffer, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return buffer;
}
