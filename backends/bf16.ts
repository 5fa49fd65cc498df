/**
 * bf16 on the host: conversions between f32 values and bf16 bit patterns, rounding as the GPU
 * does (round to nearest, ties to even; NaN stays NaN). The CPU backend emulates bf16 storage
 * with these, and tests use them to build inputs.
 *
 * @module
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bf16 bit pattern nearest to `value` (ties to even). */
export function toBf16Bits(value: number): number {
  f32[0] = value;
  const bits = u32[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40; // quiet NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The f32 value of a bf16 bit pattern. */
export function fromBf16Bits(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** `value` rounded to the nearest bf16, as an f32 number. */
export function roundBf16(value: number): number {
  return fromBf16Bits(toBf16Bits(value));
}

/** Encodes f32 values as bf16 bit patterns. */
export function encodeBf16(
  values: ArrayLike<number>,
  out: Uint16Array = new Uint16Array(values.length),
): Uint16Array {
  for (let i = 0; i < values.length; i++) out[i] = toBf16Bits(values[i]);
  return out;
}

/** Decodes bf16 bit patterns to f32 values. */
export function decodeBf16(
  bits: Uint16Array,
  out: Float32Array = new Float32Array(bits.length),
): Float32Array {
  const wide = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) wide[i] = bits[i] << 16;
  return out;
}
