// The tensor-core GEMM of the prefill linears (CUDA): out[M, N] = x[M, K] · Wᵀ, bf16 in and out,
// fp32 accumulation; block tile BM × BN × 64, warp tile WM × WN, STAGES-deep cp.async pipeline for
// x, one barrier per k tile, register fragments double-buffered across the 4 k16 steps.
// Shared-memory tiles are swizzled [rows][64] bf16 (gemm_tiles.h).
//
// Where the W tiles come from is the LoadB policy's business, so one pipeline serves bf16
// weights (CopyB: cp.async, linear.cu) and quantized ones (linear_awq.cu: codes unpacked in
// registers and stored as bf16 tiles). A policy has
//   ahead(n0, k0): start fetching W rows [n0, n0 + BN) × k [k0, k0 + 64) (into registers, or
//                  nothing), called in k order once for every tile, before its stage();
//   stage(tile, n0, k0): put that W tile into the shared tile at `tile` (its ahead() came first;
//                  cp.async copies join x's commit group, plain stores are visible after the next
//                  barrier, before the tile's first use).
#pragma once
#include "compat.h"
#include "gemm_tiles.h"
#include "mma.h"

#ifndef DENALI_HIP

extern __shared__ uint4 linear_smem[];

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <int BM, int BN, int WM, int WN, int STAGES, class LoadB>
__device__ __forceinline__ void gemm_mma(uint16_t* __restrict__ out, const uint16_t* __restrict__ x,
                                         LoadB& loadB, int M, int N, int K) {
  constexpr int BK = 64;
  constexpr int WARPS_N = BN / WN;
  constexpr int THREADS = (BM / WM) * WARPS_N * 32;
  constexpr int MI = WM / 16, NI = WN / 8;
  constexpr int STAGE_ELEMS = (BM + BN) * BK;
  const int2 origin = tile_origin<BM, BN>(blockIdx.x, M, N);
  const int m0 = origin.x, n0 = origin.y;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const uint32_t base = smem_addr(linear_smem);
  const int kTiles = (K + BK - 1) / BK;

  auto stage_a = [&](int s) { return base + s * STAGE_ELEMS * 2; };
  auto stage_b = [&](int s) { return base + (s * STAGE_ELEMS + BM * BK) * 2; };
  auto load_stage = [&](int s, int kt) {
    load_tile<BM, THREADS>(stage_a(s), x, m0, M, kt * BK, K);
    loadB.stage(stage_b(s), n0, kt * BK);
  };

  // ldmatrix lane roles: lane l supplies the address of row l % 8 of matrix l / 8.
  const int q = lane >> 3, r8 = lane & 7;
  // A: matrices (rows 0-7, k lo), (rows 8-15, k lo), (rows 0-7, k hi), (rows 8-15, k hi).
  const int aRow = wm * WM + r8 + ((q & 1) << 3), aHi = q >> 1;
  // B: matrices (n 0-7, k lo), (n 0-7, k hi), (n 8-15, k lo), (n 8-15, k hi).
  const int bRow = wn * WN + r8 + ((q >> 1) << 3), bHi = q & 1;

  auto load_frags = [&](uint32_t (&af)[MI][4], uint32_t (&bf)[NI][2], int s, int kk) {
    const uint32_t ta = stage_a(s), tb = stage_b(s);
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      const int row = aRow + mi * 16, ch = kk * 2 + aHi;
      ldmatrix_x4(af[mi], ta + (row * 64 + ((ch ^ (row & 7)) << 3)) * 2);
    }
#pragma unroll
    for (int ni = 0; ni < NI; ni += 2) {
      const int row = bRow + ni * 8, ch = kk * 2 + bHi;
      uint32_t r[4];
      ldmatrix_x4(r, tb + (row * 64 + ((ch ^ (row & 7)) << 3)) * 2);
      bf[ni][0] = r[0];
      bf[ni][1] = r[1];
      bf[ni + 1][0] = r[2];
      bf[ni + 1][1] = r[3];
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.f;
  }

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < kTiles) {
      loadB.ahead(n0, s * BK);
      load_stage(s, s);
    }
    cp_async_commit();
  }
  if (STAGES - 1 < kTiles) loadB.ahead(n0, (STAGES - 1) * BK);

  for (int kt = 0; kt < kTiles; ++kt) {
    // Tile kt has landed (for this thread's copies; the barrier makes everyone's visible), and
    // every warp is done with tile kt - 1, whose buffer the next copy reuses.
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int next = kt + STAGES - 1;
    if (next < kTiles) load_stage(next % STAGES, next);
    cp_async_commit();
    if (next + 1 < kTiles) loadB.ahead(n0, (next + 1) * BK);

    const int s = kt % STAGES;
    uint32_t af[2][MI][4], bf[2][NI][2];
    load_frags(af[0], bf[0], s, 0);
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      if (kk + 1 < BK / 16) load_frags(af[(kk + 1) & 1], bf[(kk + 1) & 1], s, kk + 1);
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const uint32_t(&a)[4] = af[kk & 1][mi];
          mma_bf16_16816(acc[mi][ni], a[0], a[1], a[2], a[3], bf[kk & 1][ni][0], bf[kk & 1][ni][1]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // C fragment: acc[mi][ni] = rows g and g + 8, columns 2t and 2t + 1 of its 16×8 tile.
  const int g = lane >> 2, t = lane & 3;
  const bool pairs = (N & 1) == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int col = n0 + wn * WN + ni * 8 + 2 * t;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm * WM + mi * 16 + g + 8 * h;
        if (row < M) store_bf16_pair(out, row, col, N, acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1], pairs);
      }
    }
  }
}


// LoadB for a bf16 W[N, K]: rows straight to shared memory with cp.async; nothing ahead.
template <int BN, int THREADS>
struct CopyB {
  const uint16_t* __restrict__ w;
  int N, K;
  __device__ __forceinline__ void ahead(int, int) {}
  __device__ __forceinline__ void stage(uint32_t tile, int n0, int k0) {
    load_tile<BN, THREADS>(tile, w, n0, N, k0, K);
  }
};

#endif  // !DENALI_HIP
