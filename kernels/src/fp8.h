// E4M3 (torch float8_e4m3fn) conversions shared by the FP8 weight kernels (linear_fp8.cu) and
// the FP8 KV cache (attention.cu), so both agree with backends/fp8.ts through one converter.
#pragma once
#include "compat.h"

// E4M3 code → f32, exact (torch float8_e4m3fn: 0x7f and 0xff are NaN). Matches backends/fp8.ts.
__device__ __forceinline__ float e4m3_to_f32(uint32_t code) {
  const uint32_t sign = (code & 0x80u) << 24;
  const uint32_t magnitude = code & 0x7fu;
  if (magnitude == 0x7fu) return __uint_as_float(sign | 0x7fc00000u);
  if (magnitude < 8u) return __uint_as_float(sign | __float_as_uint(magnitude * 0.001953125f));
  return __uint_as_float(sign | ((magnitude << 20) + (120u << 23)));
}

// f32 → E4M3, round to nearest even, saturating to ±448 (infinities too); NaN stays NaN with
// its sign. Matches toE4m3Bits in backends/fp8.ts.
__device__ __forceinline__ uint8_t f32_to_e4m3(float value) {
  const uint32_t bits = __float_as_uint(value);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  if (magnitude >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);
  if (magnitude >= (121u << 23)) {
    const uint32_t odd = (magnitude >> 20) & 1u;
    return static_cast<uint8_t>(sign | ((magnitude - (120u << 23) + 0x7ffffu + odd) >> 20));
  }
  // Subnormal: |value| · 512 is exact; rintf rounds it to nearest even.
  return static_cast<uint8_t>(sign | static_cast<uint32_t>(rintf(__uint_as_float(magnitude) * 512.f)));
}

// The E4M3 codes of the 8 bf16 in a 16-byte word (the low half of each 32-bit word first) over
// `scale`, in order, as one 8-byte word: e4m3(f32(x) / scale), the IEEE f32 quotient. The FP8
// KV cache's writes (attention.cu) and the FP8 quantizer (linear_fp8.cu) both store this.
__device__ __forceinline__ uint2 bf16x8_to_e4m3(uint4 v, float scale) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
  uint32_t packed[2] = {0u, 0u};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t lo = f32_to_e4m3(bf16_to_f32(static_cast<uint16_t>(words[q] & 0xffffu)) / scale);
    const uint32_t hi = f32_to_e4m3(bf16_to_f32(static_cast<uint16_t>(words[q] >> 16)) / scale);
    packed[q >> 1] |= (lo | (hi << 8)) << (16 * (q & 1));
  }
  return make_uint2(packed[0], packed[1]);
}
