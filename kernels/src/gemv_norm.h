// The pre-norm step in a GEMV's prologue (linearRmsNorm), shared by the bf16 and FP8 GEMVs
// (linear.cu, linear_fp8.cu): after the wait, every block normalises up to 8 rows of its input
// into shared memory itself and writes its share of the residual sum, so the layer needs no
// rmsNorm kernel and no block waits for another. CUDA only (the HIP copies of those GEMVs trap).
#pragma once
#include "compat.h"
#include "pdl.h"
#include "rms.h"

#ifndef DENALI_HIP

// The input, the residual and the norm's weight: plain coherent 16-byte loads (cached in L1),
// the input and the residual after the wait since the kernel before may have written them.
DENALI_LD16(gemv_norm_ld, "")

// Before the wait: the norm's weight never changes, so reading it now leaves the prologue's loads
// of it to hit L1.
template <int WARPS>
__device__ __forceinline__ void gemv_norm_warm(const uint16_t* __restrict__ gamma, int K) {
  for (int c = threadIdx.x; c < (K >> 3); c += WARPS * 32) {
    (void)gemv_norm_ld(reinterpret_cast<const uint4*>(gamma) + c);
  }
}

// The _norm GEMVs' x: bf16(gamma · bf16(s · inv)) with s = bf16(x + residual) (s = x without a
// residual) and inv = rms_scale(Σ s², K, eps) per token, as rms_norm_row computes it (only the
// order of the fp32 sum differs), for M <= 8 tokens of K (K % 8 == 0) into `xs` [M][K / 8]. Every
// block of the grid does this for itself (8 KiB a token, read from L2), and writes s to
// residualOut, each 16-byte chunk by one block (chunk i by block i % gridDim.x), so no block reads
// a residual another is updating and none waits for another.
template <int WARPS>
__device__ __forceinline__ void gemv_norm_prologue(uint4* __restrict__ xs,
                                                   const uint16_t* __restrict__ x,
                                                   const uint16_t* __restrict__ residual,
                                                   uint16_t* __restrict__ residualOut,
                                                   const uint16_t* __restrict__ gamma, int M,
                                                   int K, float eps) {
  __shared__ float sums[WARPS][8];
  const int kc = K >> 3, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int blocks = static_cast<int>(gridDim.x), block = static_cast<int>(blockIdx.x);
  float ss[8];
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    ss[m] = 0.f;
    if (m < M) {
      const uint4* xm = reinterpret_cast<const uint4*>(x + static_cast<size_t>(m) * K);
      const uint4* rm = reinterpret_cast<const uint4*>(residual + static_cast<size_t>(m) * K);
      for (int c = threadIdx.x; c < kc; c += WARPS * 32) {
        uint4 v = gemv_norm_ld(xm + c);
        if (residual != nullptr) {
          const uint4 r = gemv_norm_ld(rm + c);
          uint32_t* vw = reinterpret_cast<uint32_t*>(&v);
          const uint32_t* rw = reinterpret_cast<const uint32_t*>(&r);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            vw[i] = bf16_pack2(bf16_lo(vw[i]) + bf16_lo(rw[i]), bf16_hi(vw[i]) + bf16_hi(rw[i]));
          }
          if ((m * kc + c) % blocks == block) {
            reinterpret_cast<uint4*>(residualOut)[m * kc + c] = v;
          }
        }
        const uint32_t* vw = reinterpret_cast<const uint32_t*>(&v);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float lo = bf16_lo(vw[i]), hi = bf16_hi(vw[i]);
          ss[m] += lo * lo + hi * hi;
        }
        xs[m * kc + c] = v;
      }
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) ss[m] += shfl_xor(ss[m], off);
    if (lane == 0) sums[warp][m] = ss[m];
  }
  __syncthreads();
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    if (m < M) {
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < WARPS; ++i) sum += sums[i][m];
      const float inv = rms_scale(sum, static_cast<float>(K), eps);
      for (int c = threadIdx.x; c < kc; c += WARPS * 32) {
        uint4 v = xs[m * kc + c];
        const uint4 g = gemv_norm_ld(reinterpret_cast<const uint4*>(gamma) + c);
        uint32_t* vw = reinterpret_cast<uint32_t*>(&v);
        const uint32_t* gw = reinterpret_cast<const uint32_t*>(&g);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float lo = bf16_to_f32(f32_to_bf16(bf16_lo(vw[i]) * inv));
          const float hi = bf16_to_f32(f32_to_bf16(bf16_hi(vw[i]) * inv));
          vw[i] = bf16_pack2(bf16_lo(gw[i]) * lo, bf16_hi(gw[i]) * hi);
        }
        xs[m * kc + c] = v;
      }
    }
  }
  __syncthreads();
}

#endif  // !DENALI_HIP
