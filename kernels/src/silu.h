// SiLU-and-multiply as HF computes it on bf16 tensors: bf16(silu(g)) · u, for g and u already
// bf16 values; the caller rounds the product to bf16. One definition for elementwise.cu's
// silu_mul_bf16 and the GEMVs that apply it in their epilogue (mma.h), so the fused and the
// separate path write the same bits.
#pragma once
#include "compat.h"

__device__ __forceinline__ float silu_mul(float g, float u) {
  return bf16_to_f32(f32_to_bf16(g / (1.0f + expf(-g)))) * u;
}
