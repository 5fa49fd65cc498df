/**
 * Reading operator results back from a backend in tests.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../../backends/backend.ts";
import { decodeBf16 } from "../../backends/bf16.ts";

/** The first `count` bf16 values of a device buffer, as f32 (a blocking copy). */
export function readBf16(
  backend: Pick<Backend, "copyToHost">,
  buffer: DeviceBuffer,
  count: number,
): Float32Array {
  const bits = new Uint16Array(count);
  backend.copyToHost(bits, buffer);
  return decodeBf16(bits);
}
