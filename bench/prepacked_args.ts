/**
 * Arguments packed once into a kernelParams array, for the "raw FFI call" floor of the launch
 * benchmarks: the same layout the generated launchers use (kernels/signature.ts `packLayout`),
 * written ahead of time so the timed call only crosses FFI.
 *
 * @module
 */

import { type KernelSignature, packLayout } from "../kernels/signature.ts";

/** A packed argument buffer and the kernelParams pointer array into it. */
export interface PrepackedArgs {
  /** Pointer to the array of per-parameter pointers (`void**`). */
  readonly kernelParams: Deno.PointerValue;
  /** The buffers the pointers refer to; keep this object alive while launching. */
  readonly keepAlive: readonly ArrayBuffer[];
}

/** Packs `values` (pointers and integers as numbers, f32 as numbers) for `signature`. */
export function prepackArgs(signature: KernelSignature, values: readonly number[]): PrepackedArgs {
  const { offsets, size } = packLayout(signature.params);
  const packed = new ArrayBuffer(Math.max(8, Math.ceil(size / 8) * 8));
  const view = new DataView(packed);
  signature.params.forEach((param, i) => {
    const at = offsets[i];
    const value = values[i];
    if (param.type === "ptr" || param.type === "u64") view.setBigUint64(at, BigInt(value), true);
    else if (param.type === "i64") view.setBigInt64(at, BigInt(value), true);
    else if (param.type === "i32") view.setInt32(at, value, true);
    else if (param.type === "u32") view.setUint32(at, value, true);
    else if (param.type === "f32") view.setFloat32(at, value, true);
    else view.setUint16(at, value, true);
  });
  const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(packed)));
  const slots = new BigUint64Array(offsets.map((offset) => base + BigInt(offset)));
  return { kernelParams: Deno.UnsafePointer.of(slots), keepAlive: [packed, slots.buffer] };
}
