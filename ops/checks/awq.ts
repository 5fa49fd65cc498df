/**
 * The 4-bit weight's own check, shared by `linear` and `dequantizeAwq` on the CPU (ops/cpu/) and
 * the GPU (ops/gpu/), so both reject the same weights with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { AWQ_GROUP_SIZES } from "../../backends/awq.ts";
import type { AwqWeight } from "../linear_weight.ts";

/**
 * Validates a 4-bit weight of [n, k]: a supported group size that divides k, and codes, zeros
 * and scales big enough. Throws a RangeError naming the op, the part and the sizes.
 */
export function checkAwqWeight(op: string, weight: AwqWeight, n: number, k: number): void {
  const g = weight.groupSize;
  if (!AWQ_GROUP_SIZES.includes(g)) {
    throw new RangeError(
      `${op}: the 4-bit weight's group size ${g} is not supported; expected one of ` +
        AWQ_GROUP_SIZES.join(", "),
    );
  }
  if (k % g !== 0) {
    throw new RangeError(`${op}: k = ${k} is not a multiple of the group size ${g}`);
  }
  const groups = n * (k / g);
  const parts: [string, DeviceBuffer, number, string][] = [
    ["codes", weight.codes, n * k / 2, "4 bits a weight"],
    ["zeros", weight.zeros, groups, "one u8 a group"],
    ["scales", weight.scales, 4 * groups, "one f32 a group"],
  ];
  for (const [name, buffer, bytes, what] of parts) {
    if (buffer.bytes < bytes) {
      throw new RangeError(
        `${op}: the 4-bit weight's ${name} hold ${buffer.bytes} bytes, but [n, k] = ${n}×${k} ` +
          `with group size ${g} needs ${bytes} (${what})`,
      );
    }
  }
}
