// One source, two compilers: nvcc builds these kernels to PTX, hipcc (HIP_PLATFORM=amd) to
// HSACO. This header hides the few spellings that differ, so kernel files never branch on it.
#pragma once
#include <stdint.h>

#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
#include <hip/hip_runtime.h>
#define DENALI_HIP 1
// Nanosecond wall clock: AMD exposes a fixed-frequency counter (100 MHz on CDNA/RDNA).
__device__ inline uint64_t denali_wall_ns() { return wall_clock64() * 10ull; }
// Aborts the kernel (a kernel the host must never launch on this target).
__device__ inline void denali_trap() { __builtin_trap(); }
#else
__device__ inline void denali_trap() { __trap(); }
// Nanosecond wall clock, independent of the SM clock frequency (unlike clock64()).
__device__ inline uint64_t denali_wall_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif

// A load through L2, skipping the SM's L1: what another block wrote before a fence is seen,
// never a stale L1 line. (HIP: a plain load; this block never read the address before, so its
// vL1D holds no copy of it.)
#ifdef DENALI_HIP
template <typename T>
__device__ __forceinline__ T denali_ld_l2(const T* p) { return *p; }
#else
template <typename T>
__device__ __forceinline__ T denali_ld_l2(const T* p) { return __ldcg(p); }
#endif

// Half-precision scalars cross the launch boundary as raw 16-bit patterns. Distinct typedef
// names tell kernels/build.ts which of the two formats a parameter holds.
typedef uint16_t f16_bits;
typedef uint16_t bf16_bits;

// bf16 is stored as raw 16-bit patterns and converted by hand, so neither compiler's bf16
// header (cuda_bf16.h, hip_bf16.h) is needed and both round identically.
__device__ __forceinline__ float bf16_to_f32(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN. Matches backends/bf16.ts.
__device__ __forceinline__ uint16_t f32_to_bf16(float value) {
  const uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Two bf16 in one 32-bit word (the low half is the element at the lower address): each as f32
// (a bf16 is the top half of an f32), and two f32 rounded into such a word.
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ uint32_t bf16_pack2(float lo, float hi) {
  return static_cast<uint32_t>(f32_to_bf16(lo)) | (static_cast<uint32_t>(f32_to_bf16(hi)) << 16);
}

// Butterfly exchange inside a logical 32-lane warp (T: float or int). Masks stay below 32, so on
// AMD's 64-lane wavefronts each half reduces on its own, exactly like a CUDA warp.
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
#ifdef DENALI_HIP
  return __shfl_xor(v, mask);
#else
  return __shfl_xor_sync(0xffffffffu, v, mask);
#endif
}
