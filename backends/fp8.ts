/**
 * FP8 E4M3 on the host, bit for bit as torch's `float8_e4m3fn` (and CUDA's `__nv_fp8_e4m3`):
 * 1 sign, 4 exponent (bias 7) and 3 mantissa bits; no infinities; 0x7f and 0xff are NaN; the
 * largest finite value is 448 and the smallest subnormal 2^-9.
 *
 * Encoding rounds the value's f32 to the nearest code, ties to even, and saturates: anything at
 * or beyond ±448, infinities included, becomes ±448 (CUDA's `satfinite`, and what quantizers get
 * from clamping before torch's cast); NaN stays NaN with its sign (torch writes `0x7f | sign`).
 * The weight loader, the CPU reference ops and the tests use these; the kernels' device
 * versions (kernels/src/fp8.h) follow the same rules.
 *
 * @module
 */

/** The largest finite E4M3 value. */
export const E4M3_MAX = 448;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** f32 bits of 2^-6, the smallest normal E4M3 value. */
const MIN_NORMAL_BITS = 121 << 23;
/** f32 bits of 448. */
const MAX_BITS = 0x43e00000;

/** The E4M3 code nearest to `value` (after rounding it to f32), ties to even, saturating. */
export function toE4m3Bits(value: number): number {
  f32[0] = value;
  const bits = u32[0];
  const sign = (bits >>> 24) & 0x80;
  const magnitude = bits & 0x7fffffff;
  if (magnitude > 0x7f800000) return sign | 0x7f;
  if (magnitude >= MAX_BITS) return sign | 0x7e;
  if (magnitude >= MIN_NORMAL_BITS) {
    // Rebias the exponent (127 → 7) and round the 23 mantissa bits to 3, ties to even: adding
    // 0x7ffff plus the kept lowest bit carries exactly when the dropped 20 bits exceed half, or
    // equal it with the kept bit odd. A carry out of the mantissa bumps the exponent, as it should.
    const odd = (magnitude >>> 20) & 1;
    return sign | ((magnitude - (120 << 23) + 0x7ffff + odd) >>> 20);
  }
  // Subnormal (or zero): a multiple of 2^-9, rounded ties to even; 8 · 2^-9 is the smallest
  // normal, whose code is 8 as well.
  const scaled = Math.abs(f32[0]) * 512; // exact: an f32 below 2^-6 times a power of two
  let code = Math.floor(scaled);
  const rest = scaled - code;
  if (rest > 0.5 || (rest === 0.5 && (code & 1) === 1)) code++;
  return sign | code;
}

/** The value of E4M3 code `bits` (0..255); NaN for 0x7f and 0xff. */
export function fromE4m3Bits(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exponent = (bits >>> 3) & 0xf, mantissa = bits & 7;
  if (exponent === 0xf && mantissa === 7) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * (1 + mantissa / 8) * 2 ** (exponent - 7);
}

let table: Float32Array | null = null;

/** The value of every E4M3 code, indexed by code (built on first use). */
export function e4m3Table(): Float32Array {
  if (!table) {
    table = new Float32Array(256);
    for (let i = 0; i < 256; i++) table[i] = fromE4m3Bits(i);
  }
  return table;
}

/** Encodes values as E4M3 codes (see {@link toE4m3Bits}). */
export function encodeE4m3(
  values: ArrayLike<number>,
  out: Uint8Array = new Uint8Array(values.length),
): Uint8Array {
  for (let i = 0; i < values.length; i++) out[i] = toE4m3Bits(values[i]);
  return out;
}

/** Decodes E4M3 codes to f32 values. */
export function decodeE4m3(
  codes: Uint8Array,
  out: Float32Array = new Float32Array(codes.length),
): Float32Array {
  const values = e4m3Table();
  for (let i = 0; i < codes.length; i++) out[i] = values[codes[i]];
  return out;
}

/**
 * The per-output-channel scale Denali quantizes a weight row with: amax / 448 in f32, so the
 * row's largest magnitude maps to 448; 1 for an all-zero row. NaNs are passed over when taking
 * the maximum, as the device's fmaxf does. The GPU quantize kernel computes the same bits.
 */
export function rowScale(amax: number): number {
  return amax > 0 ? Math.fround(Math.fround(amax) / E4M3_MAX) : 1;
}

/**
 * The code of `value` quantized with `scale`: E4M3 of the f32 quotient value / scale (the
 * double quotient of two f32s rounds to the same f32 as an f32 division would).
 */
export function quantizeE4m3(value: number, scale: number): number {
  return toE4m3Bits(Math.fround(value / scale));
}
