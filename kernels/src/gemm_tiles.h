// Pieces the tiled tensor-core kernels share (linear.cu's mma.sync GEMMs, linear_sm90.cu's wgmma
// GEMMs; attention.cu's prefill uses the copies). CUDA only.
// - Global → shared copies: cp.async of 16-byte chunks into [rows][64] bf16 tiles (128-byte rows)
//   whose chunk index is XORed by row % 8. That is the hardware's 128-byte swizzle, which wgmma
//   reads directly, and it spreads the 8 rows an ldmatrix phase reads over 8 bank groups.
// - The grouped raster order of output tiles, and the bf16 stores of accumulator pairs.
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

// Grouped raster order: consecutive blocks walk down GROUP_M row tiles before moving right, so
// the blocks resident at once share a few MB of x and W in L2. Returns tile `pid`'s first row
// and column.
template <int BM, int BN>
__device__ __forceinline__ int2 tile_origin(int pid, int M, int N) {
  constexpr int GROUP_M = 16;
  const int tilesM = (M + BM - 1) / BM, tilesN = (N + BN - 1) / BN;
  const int inGroup = GROUP_M * tilesN;
  const int firstM = (pid / inGroup) * GROUP_M;
  const int groupM = min(tilesM - firstM, GROUP_M);
  return make_int2((firstM + (pid % inGroup) % groupM) * BM, ((pid % inGroup) / groupM) * BN);
}

// out[row, col] and out[row, col + 1] = bf16(lo), bf16(hi) of a row-major [., N] output: one
// 4-byte store where `pairs` (N even and out 4-byte aligned) and both columns exist, else each
// column below N on its own.
__device__ __forceinline__ void store_bf16_pair(uint16_t* __restrict__ out, int row, int col, int N,
                                                float lo, float hi, bool pairs) {
  const uint16_t l = f32_to_bf16(lo), h = f32_to_bf16(hi);
  uint16_t* o = out + static_cast<size_t>(row) * N + col;
  if (pairs && col + 1 < N) {
    *reinterpret_cast<uint32_t*>(o) = static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
  } else {
    if (col < N) o[0] = l;
    if (col + 1 < N) o[1] = h;
  }
}

#endif  // !DENALI_HIP
