// Linear layers: out[M, N] = x[M, K] · W[N, K]ᵀ, bf16 in and out, fp32 accumulation.
//
// Kernels (ops/gpu/linear.ts picks one per call):
//   linear_gemv_t{8,16}_r{16,8} and linear_gemv_t{8,16}_r{16,8}_s2
//     Decode (M <= 16): weight-bandwidth-bound. Each warp streams W rows with 16-byte loads and
//     feeds them straight from registers into tensor-core mma (no shared memory, no bf16→f32
//     conversions); t8/t16 = up to 8/16 tokens, r16/r8 = 16/8 W rows per warp, _s2 = two steps
//     of W in flight per warp instead of one. On sm_90 they support programmatic dependent
//     launch: weight loads start before the previous kernel of the stream has finished.
//   linear_gemv_t8_r16_s2_silu, linear_gemv_t16_r16_silu
//     The same GEMVs over a gate/up weight [2N, K], with SiLU-and-multiply applied before the
//     store (mma.h's gemv_w_row and gemv_mma_store): out[M, N], the gate/up rows never written.
//   linear_gemv_t8_r16_s2_norm, linear_gemv_t8_r8_s2_norm
//     The t8 GEMVs with the pre-norm step in their prologue (linearRmsNorm): each block
//     normalises x (plus the residual) into shared memory itself, and writes its share of the
//     residual sum to a second buffer, so the layer launches no rmsNorm kernel.
//   linear_gemm_128x128, linear_gemm_64x64, linear_gemm_128x256
//     Prefill (M > 16): mma.sync m16n8k16 with ldmatrix and a cp.async multi-stage pipeline;
//     block tile BM×BN, 4 warps (8 for 128×256).
//   linear_gemm_fma
//     Portable tiled FMA GEMM for any K and alignment; also the HIP kernel for M > 16.
// The vector kernels need K % 8 == 0 and 16-byte-aligned x and W (every row then starts on a
// 16-byte boundary); the host checks this and falls back to linear_gemm_fma otherwise.
//
// Under HIP the GEMV kernels keep their launch geometry but run a portable FMA body, and the
// mma GEMM kernels trap (the host never launches them there).
#include "compat.h"
#include "gemm_mma.h"
#include "gemm_tiles.h"
#include "mma.h"
#include "gemv_norm.h"
#include "pdl.h"

// ---------------------------------------------------------------------------------------------
// Shared pieces.

#define LINEAR_WARPS 8  // warps per GEMV block (256 threads)

#ifndef DENALI_HIP

// A weight load: read once, so it skips L1 (leaving L1 to x, which every row block re-reads) and
// asks L2 to fetch the whole 256-byte span the warp is about to read.
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// ---------------------------------------------------------------------------------------------
// GEMV on tensor cores (CUDA).
//
// One mma computes C[16 rows of W][8 tokens] += A[16 rows][16 k] · B[16 k][8 tokens]. The sum
// over k does not care which k sits in which slot, as long as A and B agree, so each thread uses
// the 8 consecutive k of one 16-byte load: thread (g = lane / 4, t = lane % 4) loads W[row g] and
// W[row g + 8] at chunk c, and x[token g] at the same chunk. Its A registers {.x, .y} and B
// registers {.x, .y} then fill the k slots {2t, 2t+1, 2t+8, 2t+9} of one mma, and {.z, .w} those
// of a second. W goes from global memory to the tensor cores with no shuffles and no shared
// memory, and the accumulators need no cross-lane reduction.
//
// A block has 8 warps in groups of `ksplit` (1, 2, 4 or 8) that split K between them; each group
// owns one block of ROWS rows of W. A warp step covers ROWS rows × (32 · CH) k, i.e. 4 KiB of W
// per warp, and group members take steps round-robin so the block reads each row in long
// contiguous runs. Partial sums meet in shared memory at the end.
//
// Each warp keeps S steps of W in flight: S register slots, each refilled with the step S ahead
// as soon as its mmas have been issued. S = 1 loads each step's x with its W (load, multiply,
// load, ...); S = 2 loads x just before the mmas that use it (L1 or L2 hits), to hold one step of
// x rather than two.
//
// Programmatic dependent launch (sm_90+): launched with programmatic stream serialization, the
// kernel may start while the previous kernel of its stream still runs. It issues the loads of
// its first S weight steps at once (no kernel writes weights), then waits in griddepcontrol.wait
// until that kernel has completed and its writes are visible, and only then reads x and, at the
// end, writes out. Its first instruction, griddepcontrol.launch_dependents, lets the next such
// launch start early in turn. Launched plainly, both instructions do nothing.
//
// Rows past N read row N - 1 and tokens past M read token M - 1 (valid memory, results
// discarded), so only the K tail needs predication.

// A weight load for before pdl_wait (ld_stream, kept on that side).
DENALI_LD16(ld_stream_early, ".nc.L1::no_allocate.L2::256B")

// An x load. x may have been written by the kernel pdl_wait waited for, which ran while this
// one had already started, so not the non-coherent path: a plain load (cached in L1, where the
// block's other row groups find it), kept after the wait.
DENALI_LD16(ld_x, "")

// One step of R rows (W, or x tokens) from chunk c0: thread t takes chunks c0 + t + 4j, given
// p[r] = row r's start + t. In the K tail, chunks past the row end count as zeros; out-of-range
// lanes load their row's first chunk (always valid, so nothing depends on the compiler not
// speculating a load) and then drop it. Zeroing both W and x keeps a NaN in either from
// reaching the sums.
// KIND: 0 weight, 1 weight before the wait, 2 x, 3 x in shared memory (the normed x of the
// _norm GEMVs).
template <int R, int CH, int KIND>
__device__ __forceinline__ void load_step(uint4 (&v)[R][CH], const uint4* const (&p)[R], int c0,
                                          int t, int kc) {
  auto load = [](const uint4* q) {
    return KIND == 0 ? ld_stream(q) : KIND == 1 ? ld_stream_early(q) : KIND == 2 ? ld_x(q) : *q;
  };
  if (c0 + 4 * CH <= kc) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) v[r][j] = load(p[r] + c0 + 4 * j);
    }
  } else {
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const bool in = c0 + t + 4 * j < kc;
      const int off = in ? c0 + 4 * j : -t;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint4 loaded = load(p[r] + off);
        v[r][j] = in ? loaded : zero;
      }
    }
  }
}

// NORM: x is the pre-norm input (see gemv_norm_prologue; M <= 8, so MT == 1), normalised into
// dynamic shared memory after the wait; residual, residualOut, gamma and eps are its arguments.
template <int MT, int RH, int S, bool SILU = false, bool NORM = false>
__device__ __forceinline__ void gemv_mma(uint16_t* __restrict__ out, const uint16_t* __restrict__ x,
                                         const uint16_t* __restrict__ w, int M, int N, int K,
                                         int ksplit,
                                         const uint16_t* __restrict__ residual = nullptr,
                                         uint16_t* __restrict__ residualOut = nullptr,
                                         const uint16_t* __restrict__ gamma = nullptr,
                                         float eps = 0.f) {
  static_assert(!NORM || MT == 1, "the norm prologue holds at most 8 tokens");
  extern __shared__ uint4 gemv_xs[];
  constexpr int ROWS = 8 * RH;    // W rows per warp group
  constexpr int CH = 8 / RH;      // 16-byte chunks per row per thread per step
  constexpr int STEP = 4 * CH;    // chunks per row per step (the 4 threads of a group)
  __shared__ float red[LINEAR_WARPS][MT][4][32];
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int groups = LINEAR_WARPS / ksplit;
  const int part = warp % ksplit;
  const int group = blockIdx.x * groups + warp / ksplit;
  const int kc = K >> 3;  // 16-byte chunks per row
  const int steps = (kc + STEP - 1) / STEP;
  // This warp's steps are part, part + ksplit, ...: `mine` of them.
  const int mine = part < steps ? (steps - 1 - part) / ksplit + 1 : 0;

  const uint4* wr[RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    const int row = gemv_w_row<ROWS, SILU>(group, g, h, N);
    wr[h] = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * K) + t;
  }
  const uint4* xr[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tok = min(g + 8 * mt, M - 1);
    xr[mt] = NORM ? gemv_xs + static_cast<size_t>(tok) * kc + t
                  : reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok) * K) + t;
  }

  uint4 wv[S][RH][CH], xv[MT][CH];
#pragma unroll
  for (int u = 0; u < S; ++u) {
    if (u < mine) load_step<RH, CH, 1>(wv[u], wr, (part + u * ksplit) * STEP, t, kc);
  }
  if (NORM) gemv_norm_warm<LINEAR_WARPS>(gamma, K);
  pdl_wait();
  constexpr int XKIND = NORM ? 3 : 2;
  if (NORM) gemv_norm_prologue<LINEAR_WARPS>(gemv_xs, x, residual, residualOut, gamma, M, K, eps);
  if (S == 1 && mine > 0) load_step<MT, CH, XKIND>(xv, xr, part * STEP, t, kc);

  // Two accumulator sets, one per half of each 16-byte chunk, halve the chain of dependent mmas.
  float acc[MT][2][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[mt][0][r] = acc[mt][1][r] = 0.f;
  }

  for (int i0 = 0; i0 < mine; i0 += S) {
#pragma unroll
    for (int u = 0; u < S; ++u) {
      const int i = i0 + u;
      if (i < mine) {
        if (S > 1) load_step<MT, CH, XKIND>(xv, xr, (part + i * ksplit) * STEP, t, kc);
#pragma unroll
        for (int j = 0; j < CH; ++j) {
          const uint4 lo = wv[u][0][j];
          const uint4 hi = RH == 2 ? wv[u][RH - 1][j] : make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint4 b = xv[mt][j];
            mma_bf16_16816(acc[mt][0], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
            mma_bf16_16816(acc[mt][1], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
          }
        }
        if (i + S < mine) {
          const int c0 = (part + (i + S) * ksplit) * STEP;
          load_step<RH, CH, 0>(wv[u], wr, c0, t, kc);
          if (S == 1) load_step<MT, CH, XKIND>(xv, xr, c0, t, kc);
        }
      }
    }
  }

  gemv_mma_store<MT, ROWS, LINEAR_WARPS, false, SILU>(red, acc, out, nullptr, M, N, groups, ksplit);
}

// ---------------------------------------------------------------------------------------------
// GEMM on tensor cores (CUDA): gemm_mma.h's pipeline over bf16 W tiles copied with cp.async.

template <int BM, int BN, int WM, int WN, int STAGES>
__device__ __forceinline__ void gemm_bf16(uint16_t* __restrict__ out, const uint16_t* __restrict__ x,
                                          const uint16_t* __restrict__ w, int M, int N, int K) {
  CopyB<BN, (BM / WM) * (BN / WN) * 32> loadB{w, N, K};
  gemm_mma<BM, BN, WM, WN, STAGES>(out, x, loadB, M, N, K);
}

#endif  // !DENALI_HIP

// ---------------------------------------------------------------------------------------------
// Portable GEMV (HIP), with the launch geometry of the mma GEMV: 256 threads own
// (8 / ksplit) groups of ROWS rows; each group is done by all threads in turn, ROWS rows ×
// (256 / ROWS) threads per row, each thread striding over K in 16-byte chunks.
template <int T, int ROWS>
__device__ __forceinline__ void gemv_portable(uint16_t* __restrict__ out,
                                              const uint16_t* __restrict__ x,
                                              const uint16_t* __restrict__ w, int M, int N, int K,
                                              int ksplit) {
  constexpr int TPR = 256 / ROWS;
  __shared__ float red[T][256];
  const int groups = LINEAR_WARPS / ksplit;
  const int r = threadIdx.x / TPR, sub = threadIdx.x % TPR;
  const int kc = K >> 3;
  for (int grp = 0; grp < groups; ++grp) {
    const int nb = (blockIdx.x * groups + grp) * ROWS;
    const int n = min(nb + r, N - 1);
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(n) * K);
    float acc[T];
#pragma unroll
    for (int j = 0; j < T; ++j) acc[j] = 0.f;
    for (int c = sub; c < kc; c += TPR) {
      const uint4 wv = wr[c];
      const float w0 = bf16_lo(wv.x), w1 = bf16_hi(wv.x), w2 = bf16_lo(wv.y), w3 = bf16_hi(wv.y);
      const float w4 = bf16_lo(wv.z), w5 = bf16_hi(wv.z), w6 = bf16_lo(wv.w), w7 = bf16_hi(wv.w);
#pragma unroll
      for (int j = 0; j < T; ++j) {
        if (j < M) {
          const uint4 xv = reinterpret_cast<const uint4*>(x + static_cast<size_t>(j) * K)[c];
          float a = acc[j];
          a = fmaf(w0, bf16_lo(xv.x), a);
          a = fmaf(w1, bf16_hi(xv.x), a);
          a = fmaf(w2, bf16_lo(xv.y), a);
          a = fmaf(w3, bf16_hi(xv.y), a);
          a = fmaf(w4, bf16_lo(xv.z), a);
          a = fmaf(w5, bf16_hi(xv.z), a);
          a = fmaf(w6, bf16_lo(xv.w), a);
          a = fmaf(w7, bf16_hi(xv.w), a);
          acc[j] = a;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < T; ++j) red[j][threadIdx.x] = acc[j];
    __syncthreads();
    for (int i = threadIdx.x; i < ROWS * T; i += blockDim.x) {
      const int row = i % ROWS, tok = i / ROWS;
      float sum = 0.f;
      for (int p = 0; p < TPR; ++p) sum += red[tok][row * TPR + p];
      if (nb + row < N && tok < M) out[static_cast<size_t>(tok) * N + nb + row] = f32_to_bf16(sum);
    }
    __syncthreads();  // red is reused by the next group
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points. Geometry of every GEMV kernel: 256 threads; grid ceil(N / (ROWS · 8 / ksplit));
// ksplit ∈ {1, 2, 4, 8}; t8 needs M <= 8, t16 M <= 16; r16/r8: ROWS = 16/8 W rows per warp
// group; no suffix / _s2: S = 1 / 2 steps in flight per warp.

#ifndef DENALI_HIP
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r16(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t16_r16(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r8(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t16_r8(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r16_s2(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t16_r16_s2(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r8_s2(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t16_r8_s2(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r16_s2_silu(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t16_r16_silu(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r16_s2_norm(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, const uint16_t*, uint16_t*, const uint16_t*, float);
extern "C" __global__ void __launch_bounds__(256) linear_gemv_t8_r8_s2_norm(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, const uint16_t*, uint16_t*, const uint16_t*, float);
extern "C" __global__ void __launch_bounds__(128, 2) linear_gemm_128x128(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(128) linear_gemm_64x64(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t);
extern "C" __global__ void __launch_bounds__(256, 1) linear_gemm_128x256(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t);
#define GEMV_BODY(T, RH, S) gemv_mma<(T) / 8, RH, S>(out, x, w, M, N, K, ksplit)
#define GEMV_SILU_BODY(T, S) gemv_mma<(T) / 8, 2, S, true>(out, x, w, M, N, K, ksplit)
#define GEMV_NORM_BODY(RH) \
  gemv_mma<1, RH, 2, false, true>(out, x, w, M, N, K, ksplit, residual, residualOut, gamma, eps)
#else
// HIP has no griddepcontrol and keeps no steps in flight by hand: S does not apply.
#define GEMV_BODY(T, RH, S) gemv_portable<T, 8 * (RH)>(out, x, w, M, N, K, ksplit)
// linear.ts never launches the fused SiLU GEMVs on HIP.
#define GEMV_SILU_BODY(T, S) denali_trap()
// Nor the norm-prologue GEMVs.
#define GEMV_NORM_BODY(RH) denali_trap()
#endif

extern "C" __global__ void linear_gemv_t8_r16(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(8, 2, 1);
}

extern "C" __global__ void linear_gemv_t16_r16(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(16, 2, 1);
}

extern "C" __global__ void linear_gemv_t8_r8(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(8, 1, 1);
}

extern "C" __global__ void linear_gemv_t16_r8(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(16, 1, 1);
}

extern "C" __global__ void linear_gemv_t8_r16_s2(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(8, 2, 2);
}

extern "C" __global__ void linear_gemv_t16_r16_s2(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(16, 2, 2);
}

extern "C" __global__ void linear_gemv_t8_r8_s2(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(8, 1, 2);
}

extern "C" __global__ void linear_gemv_t16_r8_s2(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_BODY(16, 1, 2);
}

// SiLU-and-multiply in the epilogue (mma.h's gemv_w_row, gemv_mma_store): w is gate/up stacked,
// [2N, K], gate rows first; out[M, N] = silu_mul(bf16(x · gate), bf16(x · up)). Geometry of the
// r16 GEMVs over 2N rows: grid ceil(N / (8 · 8 / ksplit)).
extern "C" __global__ void linear_gemv_t8_r16_s2_silu(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_SILU_BODY(8, 2);
}

extern "C" __global__ void linear_gemv_t16_r16_silu(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  GEMV_SILU_BODY(16, 1);
}

// The pre-norm step in the prologue (gemv_norm_prologue): out[M, N] = rmsnorm(x (+ residual)) ·
// W[N, K]ᵀ for M <= 8, the plain t8 GEMVs' geometry with 2 steps in flight, M · K · 2 bytes of
// dynamic shared memory. With a residual, what is normalised is bf16(x + residual), which goes to
// residualOut (residual is left as it was); residual null normalises x alone.
extern "C" __global__ void linear_gemv_t8_r16_s2_norm(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit, const uint16_t* residual, uint16_t* residualOut, const uint16_t* gamma, float eps) {
  GEMV_NORM_BODY(2);
}

extern "C" __global__ void linear_gemv_t8_r8_s2_norm(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t ksplit, const uint16_t* residual, uint16_t* residualOut, const uint16_t* gamma, float eps) {
  GEMV_NORM_BODY(1);
}

// 128 threads (4 warps of 64×64), 3 stages: 98304 bytes of dynamic shared memory; 1-D grid of
// ceil(M / 128) · ceil(N / 128) blocks.
extern "C" __global__ void linear_gemm_128x128(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K) {
#ifndef DENALI_HIP
  gemm_bf16<128, 128, 64, 64, 3>(out, x, w, M, N, K);
#else
  __builtin_trap();  // linear.ts launches linear_gemm_fma on HIP
#endif
}

// 128 threads (4 warps of 32×32), 4 stages: 65536 bytes of dynamic shared memory; 1-D grid of
// ceil(M / 64) · ceil(N / 64) blocks. For shapes with too few 128×128 tiles to fill the GPU.
extern "C" __global__ void linear_gemm_64x64(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K) {
#ifndef DENALI_HIP
  gemm_bf16<64, 64, 32, 32, 4>(out, x, w, M, N, K);
#else
  __builtin_trap();  // linear.ts launches linear_gemm_fma on HIP
#endif
}

// 256 threads (8 warps of 64×64), 3 stages: 147456 bytes; grid ceil(M / 128) · ceil(N / 256).
// Each x tile feeds twice the W rows; 2-4% faster than 128×128 at M = 4096 on the H100
// (bench/results/2026-11-25-s2-gemm-tiles-h100.md), slower below (fewer, larger tiles).
extern "C" __global__ void linear_gemm_128x256(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K) {
#ifndef DENALI_HIP
  gemm_bf16<128, 256, 64, 64, 3>(out, x, w, M, N, K);
#else
  __builtin_trap();  // linear.ts launches linear_gemm_fma on HIP
#endif
}

// Portable tiled FMA GEMM for any K and any (2-byte) alignment: 16×16 threads, a 64×64 output
// tile per block (4×4 per thread), K in steps of 16 through shared memory. Grid
// (ceil(N / 64), ceil(M / 64)).
extern "C" __global__ void linear_gemm_fma(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K) {
  __shared__ float xs[16][64 + 1];  // [k][m]
  __shared__ float ws[16][64 + 1];  // [k][n]
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
  const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }
  for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * 256;
      const int r = e >> 4, kk = e & 15;  // 16 threads read 16 consecutive k of one row
      const int gk = k0 + kk;
      const int gm = m0 + r, gn = n0 + r;
      xs[kk][r] = gm < M && gk < K ? bf16_to_f32(x[static_cast<size_t>(gm) * K + gk]) : 0.f;
      ws[kk][r] = gn < N && gk < K ? bf16_to_f32(w[static_cast<size_t>(gn) * K + gk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n < N) out[static_cast<size_t>(m) * N + n] = f32_to_bf16(acc[i][j]);
    }
  }
}
