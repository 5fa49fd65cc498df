/**
 * The dot product the CPU linear ops share for a weight row stored as codes: bf16 bit patterns
 * (ops/cpu/linear.ts) or FP8 E4M3 codes (ops/cpu/fp8.ts), each decoded through a table.
 *
 * @module
 */

/**
 * Σ_{i<k} xf[xo + i] · lut[codes[base + i]] in double, as two interleaved sums (two independent
 * add chains instead of one) added at the end; the caller rounds the result once.
 */
export function lutDot(
  xf: Float32Array,
  xo: number,
  lut: Float32Array,
  codes: Uint16Array | Uint8Array,
  base: number,
  k: number,
): number {
  let s0 = 0, s1 = 0;
  let i = 0;
  for (; i + 2 <= k; i += 2) {
    s0 += xf[xo + i] * lut[codes[base + i]];
    s1 += xf[xo + i + 1] * lut[codes[base + i + 1]];
  }
  if (i < k) s0 += xf[xo + i] * lut[codes[base + i]];
  return s0 + s1;
}
