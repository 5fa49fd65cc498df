// Global → shared copies of the tensor-core GEMMs (linear.cu's mma.sync kernels, linear_sm90.cu's
// wgmma kernels): cp.async of 16-byte chunks into [rows][64] bf16 tiles (128-byte rows) whose
// chunk index is XORed by row % 8. That is the hardware's 128-byte swizzle, which wgmma reads
// directly, and it spreads the 8 rows an ldmatrix phase reads over 8 bank groups. CUDA only.
#pragma once
#include "compat.h"

#ifndef DENALI_HIP

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared, bypassing L1; src_bytes = 0 writes zeros (out-of-range rows and k).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Copies rows [r0, r0 + ROWS) × k [k0, k0 + 64) of a row-major [R, K] matrix into the swizzled
// tile at shared address `tile`, THREADS threads sharing the chunks, zero-filling past R and K
// (K % 8 == 0, so a chunk is either all in or all out).
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(uint32_t tile, const uint16_t* __restrict__ src, int r0,
                                          int R, int k0, int K) {
#pragma unroll
  for (int i = 0; i < ROWS * 8 / THREADS; ++i) {
    const int e = threadIdx.x + i * THREADS;
    const int row = e >> 3, ch = e & 7;
    const int gr = r0 + row, gk = k0 + ch * 8;
    const bool in = gr < R && gk < K;
    const uint16_t* p = in ? src + static_cast<size_t>(gr) * K + gk : src;
    cp_async16(tile + row * 128 + ((ch ^ (row & 7)) << 4), p, in ? 16 : 0);
  }
}

#endif  // !DENALI_HIP
