// The RMSNorm scale, shared by the norm kernels (elementwise.cu) and the GEMVs that normalise
// their input in the prologue (linear.cu), so both round it alike.
#pragma once
#include "compat.h"

// 1 / sqrt(sum / n + eps) in correctly rounded steps (IEEE divide and sqrt, nothing fused), so
// the CPU reference reproduces it exactly from the same sum.
__device__ __forceinline__ float rms_scale(float sum, float n, float eps) {
  const float mean = sum / n;
  const float shifted = mean + eps;
  return 1.0f / sqrtf(shifted);
}
