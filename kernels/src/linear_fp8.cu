// FP8 (E4M3) weights with per-output-row f32 scales, bf16 activations (W8A16).
//
// Kernels (ops/gpu/fp8.ts picks one per call):
//   linear_fp8_gemv_t8_r16_s2, linear_fp8_gemv_t8_r8_s2, linear_fp8_gemv_t16_r16,
//   linear_fp8_gemv_t16_r8
//     Decode (M <= 16): out[m, n] = bf16(scales[n] · Σ_k x[m, k] · e4m3(W[n, k])). The bf16
//     GEMV of linear.cu with one-byte weights: the same launch geometry, warp groups splitting
//     K, steps of 4 KiB of W per warp, two steps in flight for t8, programmatic launch on sm_90.
//     Weights are widened to bf16 in registers and fed to the same bf16 tensor-core mma.
//   linear_fp8_gemv_t8_r16_s2_norm, linear_fp8_gemv_t8_r8_s2_norm
//     The t8 GEMVs with the pre-norm step in their prologue (gemv_norm.h, linearRmsNorm).
//   linear_fp8_dequantize
//     out[n, k] (bf16) = bf16(scales[n] · e4m3(W[n, k])): the prefill path (M > 16) dequantizes
//     a weight into a scratch buffer and runs the bf16 GEMM on it, on any GPU (sm_80 included).
//   linear_fp8_quantize
//     Per-row quantization of a bf16 weight at load: scale = amax / 448, codes = e4m3(w / scale).
// The GEMVs need K % 16 == 0 and 16-byte-aligned x and W; other shapes take the dequantize path.
//
// Under HIP the GEMVs keep their launch geometry but run a portable FMA body.
#include "compat.h"
#include "fp8.h"
#include "gemv_norm.h"
#include "mma.h"
#include "pdl.h"

#define FP8_WARPS 8  // warps per GEMV block (256 threads)

// ---------------------------------------------------------------------------------------------
// GEMV on tensor cores (CUDA).
//
// The layout argument of linear.cu's gemv_mma carries over: an mma's sum over k does not care
// which k sits in which slot, as long as A and B agree. Thread (g = lane / 4, t = lane % 4)
// loads 16 codes (16 consecutive k) of W rows g and g + 8 per 16-byte chunk, and the same 16 k
// of x (32 bytes) for token g. Each 32-bit word q of codes (k 4i .. 4i + 3) widens to two bf16
// pairs: (k 4i, 4i + 2) and (k 4i + 1, 4i + 3), because moving the high byte of each 16-bit half
// into bf16 position is one shift and one mask. The x pairs are permuted to match with one prmt
// each, and one mma consumes the word: slots {2t, 2t+1, 2t+8, 2t+9} = k {4i, 4i+2, 4i+1, 4i+3}.
//
// Widening: code s.eeee.mmm placed at bf16 bits s.0000eeee.mmm0000 is the code's value times
// 2^-120 (bias 7 vs 127), subnormal codes included (they become bf16 subnormals); a bf16x2 fma by
// 2^120 restores the value exactly. The fp32 accumulators then hold true magnitudes.
//
// Programmatic launch as in linear.cu: the first S steps of W are loaded before pdl_wait (no
// kernel writes weights); x, the scales' use and out come after.

// Weight loads, read once (see linear.cu's ld_stream); the _early one is kept before pdl_wait.
DENALI_LD16(fp8_ld_w, ".nc.L1::no_allocate.L2::256B")
DENALI_LD16(fp8_ld_w_early, ".nc.L1::no_allocate.L2::256B")
// x may have been written by the kernel pdl_wait waited for: a plain coherent load.
DENALI_LD16(fp8_ld_x, "")

#ifndef DENALI_HIP

// Codes in the high byte of each 16-bit half of q, as bf16 pairs of their values (see above).
__device__ __forceinline__ uint32_t widen_high_bytes(uint32_t q) {
  const uint32_t scaled = (q & 0x80008000u) | ((q >> 4) & 0x07f007f0u);
  // bf16x2 multiply by 2^120 (0x7b80), as an fma with -0 (an exact product stays exact).
  return fma_bf16x2(scaled, 0x7b807b80u, 0x80008000u);
}

// NORM: x is the input before the norm, normalised into dynamic shared memory after the wait
// (gemv_norm.h; M <= 8, so MT == 1); residual, residualOut, gamma and eps are its arguments.
template <int MT, int RH, int S, bool SILU = false, bool NORM = false>
__device__ __forceinline__ void gemv_fp8_mma(uint16_t* __restrict__ out,
                                             const uint16_t* __restrict__ x,
                                             const uint8_t* __restrict__ w,
                                             const float* __restrict__ scales, int M, int N,
                                             int K, int ksplit,
                                             const uint16_t* __restrict__ residual = nullptr,
                                             uint16_t* __restrict__ residualOut = nullptr,
                                             const uint16_t* __restrict__ gamma = nullptr,
                                             float eps = 0.f) {
  static_assert(!NORM || MT == 1, "the norm prologue holds at most 8 tokens");
  extern __shared__ uint4 fp8_gemv_xs[];
  constexpr int ROWS = 8 * RH;  // W rows per warp group
  constexpr int CH = 8 / RH;    // 16-byte chunks per row per thread per step (4 KiB per warp)
  constexpr int STEP = 4 * CH;  // chunks per row per step
  __shared__ float red[FP8_WARPS][MT][4][32];
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int groups = FP8_WARPS / ksplit;
  const int part = warp % ksplit;
  const int group = blockIdx.x * groups + warp / ksplit;
  const int kc = K >> 4;  // 16-code chunks per row
  const int steps = (kc + STEP - 1) / STEP;
  const int mine = part < steps ? (steps - 1 - part) / ksplit + 1 : 0;

  const uint4* wr[RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    const int row = gemv_w_row<ROWS, SILU>(group, g, h, N);
    wr[h] = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * K);
  }
  const uint4* xr[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tok = min(g + 8 * mt, M - 1);
    xr[mt] = NORM ? fp8_gemv_xs + static_cast<size_t>(tok) * (K >> 3)
                  : reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok) * K);
  }

  // W of one step: chunk c0 + t + 4j of each row; past the row end, zeros (loaded from the
  // row's first chunk, always valid, then dropped), so a NaN beyond K never reaches the sums.
  auto load_w = [&](uint4 (&v)[RH][CH], int c0, bool early) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c = c0 + t + 4 * j;
      const bool in = c < kc;
#pragma unroll
      for (int h = 0; h < RH; ++h) {
        const uint4 loaded = early ? fp8_ld_w_early(wr[h] + (in ? c : 0)) : fp8_ld_w(wr[h] + (in ? c : 0));
        v[h][j] = in ? loaded : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // x of one step: the same chunks, two 16-byte loads each.
  auto load_x = [&](uint4 (&v)[MT][CH][2], int c0) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c = c0 + t + 4 * j;
      const bool in = c < kc;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint4 lo, hi;
        if (NORM) {  // the normalised x, in shared memory
          lo = xr[mt][2 * (in ? c : 0)];
          hi = xr[mt][2 * (in ? c : 0) + 1];
        } else {
          lo = fp8_ld_x(xr[mt] + 2 * (in ? c : 0));
          hi = fp8_ld_x(xr[mt] + 2 * (in ? c : 0) + 1);
        }
        v[mt][j][0] = in ? lo : make_uint4(0, 0, 0, 0);
        v[mt][j][1] = in ? hi : make_uint4(0, 0, 0, 0);
      }
    }
  };

  uint4 wv[S][RH][CH], xv[MT][CH][2];
#pragma unroll
  for (int u = 0; u < S; ++u) {
    if (u < mine) load_w(wv[u], (part + u * ksplit) * STEP, true);
  }
  if (NORM) gemv_norm_warm<FP8_WARPS>(gamma, K);
  pdl_wait();
  if (NORM) gemv_norm_prologue<FP8_WARPS>(fp8_gemv_xs, x, residual, residualOut, gamma, M, K, eps);

  // Two accumulator sets (even and odd words) halve the chain of dependent mmas.
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
        load_x(xv, (part + i * ksplit) * STEP);
#pragma unroll
        for (int j = 0; j < CH; ++j) {
          const uint32_t lo[4] = {wv[u][0][j].x, wv[u][0][j].y, wv[u][0][j].z, wv[u][0][j].w};
          const uint4 hv = RH == 2 ? wv[u][RH - 1][j] : make_uint4(0, 0, 0, 0);
          const uint32_t hi[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            // Row g: (k 4q, 4q+2) and (k 4q+1, 4q+3); row g + 8 likewise (zeros for r8).
            const uint32_t a0 = widen_high_bytes(lo[q] << 8), a2 = widen_high_bytes(lo[q]);
            const uint32_t a1 = RH == 2 ? widen_high_bytes(hi[q] << 8) : 0u;
            const uint32_t a3 = RH == 2 ? widen_high_bytes(hi[q]) : 0u;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              // x words 2q (k 4q, 4q+1) and 2q+1 (k 4q+2, 4q+3) of the chunk's 8.
              const uint4 xs = xv[mt][j][q >> 1];
              const uint32_t x0 = (q & 1) ? xs.z : xs.x, x1 = (q & 1) ? xs.w : xs.y;
              const uint32_t even = prmt(x0, x1, 0x5410), odd = prmt(x0, x1, 0x7632);
              mma_bf16_16816(acc[mt][q & 1], a0, a1, a2, a3, even, odd);
            }
          }
        }
        if (i + S < mine) load_w(wv[u], (part + (i + S) * ksplit) * STEP, false);
      }
    }
  }

  gemv_mma_store<MT, ROWS, FP8_WARPS, true, SILU>(red, acc, out, scales, M, N, groups, ksplit);
}

#endif  // !DENALI_HIP

// Portable GEMV (HIP), with the launch geometry of the mma GEMV: (8 / ksplit) groups of ROWS
// rows, each done by all 256 threads in turn, ROWS rows × (256 / ROWS) threads per row, each
// thread striding over K in chunks of 16 codes.
template <int T, int ROWS>
__device__ __forceinline__ void gemv_fp8_portable(uint16_t* __restrict__ out,
                                                  const uint16_t* __restrict__ x,
                                                  const uint8_t* __restrict__ w,
                                                  const float* __restrict__ scales, int M, int N,
                                                  int K, int ksplit) {
  constexpr int TPR = 256 / ROWS;
  __shared__ float red[T][256];
  const int groups = FP8_WARPS / ksplit;
  const int r = threadIdx.x / TPR, sub = threadIdx.x % TPR;
  const int kc = K >> 4;
  for (int grp = 0; grp < groups; ++grp) {
    const int nb = (blockIdx.x * groups + grp) * ROWS;
    const int n = min(nb + r, N - 1);
    const uint8_t* wr = w + static_cast<size_t>(n) * K;
    float acc[T];
#pragma unroll
    for (int j = 0; j < T; ++j) acc[j] = 0.f;
    for (int c = sub; c < kc; c += TPR) {
      float wf[16];
#pragma unroll
      for (int e = 0; e < 16; ++e) wf[e] = e4m3_to_f32(wr[16 * c + e]);
#pragma unroll
      for (int j = 0; j < T; ++j) {
        if (j < M) {
          const uint16_t* xj = x + static_cast<size_t>(j) * K + 16 * c;
          float a = acc[j];
#pragma unroll
          for (int e = 0; e < 16; ++e) a = fmaf(wf[e], bf16_to_f32(xj[e]), a);
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
      if (nb + row < N && tok < M) {
        out[static_cast<size_t>(tok) * N + nb + row] = f32_to_bf16(sum * scales[nb + row]);
      }
    }
    __syncthreads();  // red is reused by the next group
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points. Every GEMV: 256 threads; grid ceil(N / (ROWS · 8 / ksplit)); ksplit ∈ {1, 2, 4,
// 8}; t8 needs M <= 8, t16 M <= 16; r16/r8: ROWS = 16/8; _s2: two steps of W in flight.

#ifndef DENALI_HIP
#define FP8_GEMV_BODY(T, RH, S) gemv_fp8_mma<(T) / 8, RH, S>(out, x, w, scales, M, N, K, ksplit)
#define FP8_GEMV_SILU_BODY(T, S) gemv_fp8_mma<(T) / 8, 2, S, true>(out, x, w, scales, M, N, K, ksplit)
#define FP8_GEMV_NORM_BODY(RH) \
  gemv_fp8_mma<1, RH, 2, false, true>(out, x, w, scales, M, N, K, ksplit, residual, residualOut, gamma, eps)
#else
#define FP8_GEMV_BODY(T, RH, S) gemv_fp8_portable<T, 8 * (RH)>(out, x, w, scales, M, N, K, ksplit)
// fp8.ts never launches the fused SiLU GEMVs on HIP.
#define FP8_GEMV_SILU_BODY(T, S) denali_trap()
// Nor the norm-prologue GEMVs.
#define FP8_GEMV_NORM_BODY(RH) denali_trap()
#endif

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t8_r16_s2(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_BODY(8, 2, 2);
}

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t8_r8_s2(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_BODY(8, 1, 2);
}

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t16_r16(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_BODY(16, 2, 1);
}

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t16_r8(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_BODY(16, 1, 1);
}

// SiLU-and-multiply in the epilogue, as linear.cu's _silu GEMVs: w (and scales) gate/up stacked,
// [2N, K] (2N scales), gate rows first; out[M, N]. Grid ceil(N / (8 · 8 / ksplit)).
extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t8_r16_s2_silu(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_SILU_BODY(8, 2);
}

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t16_r16_silu(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit) {
  FP8_GEMV_SILU_BODY(16, 1);
}

// The pre-norm step in the prologue (gemv_norm.h), as linear.cu's _norm GEMVs: out[M, N] =
// rmsnorm(x (+ residual)) · dequant(W)ᵀ for M <= 8, the t8 geometry with 2 steps in flight, M · K ·
// 2 bytes of dynamic shared memory; with a residual, bf16(x + residual) goes to residualOut.
extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t8_r16_s2_norm(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit, const uint16_t* residual, uint16_t* residualOut, const uint16_t* gamma, float eps) {
  FP8_GEMV_NORM_BODY(2);
}

extern "C" __global__ void __launch_bounds__(256) linear_fp8_gemv_t8_r8_s2_norm(uint16_t* out, const uint16_t* x, const uint8_t* w, const float* scales, int32_t M, int32_t N, int32_t K, int32_t ksplit, const uint16_t* residual, uint16_t* residualOut, const uint16_t* gamma, float eps) {
  FP8_GEMV_NORM_BODY(1);
}

// 256 threads; grid min(N, 65535) blocks, each taking rows blockIdx.x, + gridDim.x, ... With
// K % 16 == 0 and 16-byte-aligned W and out (`vector` 1) a thread widens 16 codes per step
// (one 16-byte load, two 16-byte stores); otherwise one element at a time.
extern "C" __global__ void __launch_bounds__(256) linear_fp8_dequantize(uint16_t* out, const uint8_t* w, const float* scales, int32_t N, int32_t K, int32_t vector) {
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    const float scale = scales[row];
    const size_t base = static_cast<size_t>(row) * K;
    if (vector) {
      const uint4* src = reinterpret_cast<const uint4*>(w + base);
      uint4* dst = reinterpret_cast<uint4*>(out + base);
      for (int c = threadIdx.x; c < (K >> 4); c += blockDim.x) {
        const uint4 codes = src[c];
        const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
        uint32_t pairs[8];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float v0 = scale * e4m3_to_f32((words[q] >> (16 * e)) & 0xffu);
            const float v1 = scale * e4m3_to_f32((words[q] >> (16 * e + 8)) & 0xffu);
            pairs[2 * q + e] = f32_to_bf16(v0) | (static_cast<uint32_t>(f32_to_bf16(v1)) << 16);
          }
        }
        dst[2 * c] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
        dst[2 * c + 1] = make_uint4(pairs[4], pairs[5], pairs[6], pairs[7]);
      }
    } else {
      for (int i = threadIdx.x; i < K; i += blockDim.x) {
        out[base + i] = f32_to_bf16(scale * e4m3_to_f32(w[base + i]));
      }
    }
  }
}

// The largest |x| of the 8 bf16 in a 16-byte word and `amax` (NaNs passed over, as by fmaxf).
__device__ __forceinline__ float bf16x8_amax(uint4 v, float amax) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    amax = fmaxf(amax, fabsf(bf16_to_f32(static_cast<uint16_t>(words[q] & 0xffffu))));
    amax = fmaxf(amax, fabsf(bf16_to_f32(static_cast<uint16_t>(words[q] >> 16))));
  }
  return amax;
}

// 256 threads, one block per row (grid min(N, 65535), striding): the row's amax, then its
// codes. scale = amax / 448 (1 for an all-zero row); NaNs are passed over by fmaxf. Besides
// weights at load it quantizes the activations of every W8A8 product per token, so rows of 8-byte
// multiples move 16 bytes a load and 8 codes a store, and the block's max takes warp shuffles and
// one barrier: the scalar two-pass form took 12.4 us for 256 rows of 4096 (ncu, H100,
// bench/results/2026-12-07-s22-fp8-w8a8-ncu-h100.md). The second read of the row hits L1/L2.
extern "C" __global__ void __launch_bounds__(256) linear_fp8_quantize(uint8_t* data, float* scales, const uint16_t* w, int32_t N, int32_t K) {
  __shared__ float group_max[32];  // one per 32-lane group
  const bool vector = (K & 7) == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0 &&
                      (reinterpret_cast<uintptr_t>(data) & 7) == 0;
  const int groups = (blockDim.x + 31) >> 5;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    const size_t base = static_cast<size_t>(row) * K;
    const uint4* src = reinterpret_cast<const uint4*>(w + base);
    float amax = 0.f;
    if (vector) {
      for (int c = threadIdx.x; c < (K >> 3); c += blockDim.x) amax = bf16x8_amax(src[c], amax);
    } else {
      for (int i = threadIdx.x; i < K; i += blockDim.x) amax = fmaxf(amax, fabsf(bf16_to_f32(w[base + i])));
    }
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, shfl_xor(amax, off));
    if ((threadIdx.x & 31) == 0) group_max[threadIdx.x >> 5] = amax;
    __syncthreads();
    float top = group_max[0];
    for (int g = 1; g < groups; ++g) top = fmaxf(top, group_max[g]);
    const float scale = top > 0.f ? top / 448.f : 1.f;
    if (threadIdx.x == 0) scales[row] = scale;
    if (vector) {
      uint2* dst = reinterpret_cast<uint2*>(data + base);
      for (int c = threadIdx.x; c < (K >> 3); c += blockDim.x) dst[c] = bf16x8_to_e4m3(src[c], scale);
    } else {
      for (int i = threadIdx.x; i < K; i += blockDim.x) data[base + i] = f32_to_e4m3(bf16_to_f32(w[base + i]) / scale);
    }
    __syncthreads();  // group_max is reused by the next row
  }
}
