// 4-bit group-quantized weights (AWQ, GPTQ), bf16 activations (W4A16), in Denali's layout
// (backends/awq.ts): codes u32 [N, K / 8] with word j holding k = 8j + 2i in nibble i and
// 8j + 2i + 1 in nibble i + 4 (AutoAWQ's interleave, along k), zeros u8 [N, K / group], scales
// f32 [N, K / group]; W[n, k] = (q - zeros[n, k / group]) · scales[...].
//
// Kernels (ops/gpu/awq.ts picks one per call):
//   linear_awq_gemv_t8_r16_s2, linear_awq_gemv_t8_r8_s2, linear_awq_gemv_t16_r16,
//   linear_awq_gemv_t16_r8 (CUDA)
//     Decode (M <= 16) on tensor cores: out[m, n] = bf16(Σ_k x[m, k] · bf16((q - z) · s)). The
//     geometry of linear_fp8.cu's GEMVs (warp groups of 16 or 8 rows splitting K, 2 KiB of codes
//     per warp a step, t8 with two steps in flight), each code word widened in registers to
//     four bf16 pairs for the bf16 mma. Needs K % 32 == 0 (every supported group size gives it)
//     and 16-byte-aligned x and codes; other calls take the dequantize path. Under HIP these
//     names trap: ops/gpu/awq.ts never launches them there.
//   linear_awq_gemv_t4
//     Decode (M <= 4) on CUDA cores, the portable GEMV (HIP): out[m, n] = bf16(Σ_k x[m, k] ·
//     W[n, k]), the weights unpacked in registers and the sums in f32. Same requirements.
//   linear_awq_gemm_64x64 (CUDA, opt-in: ops/gpu/awq.ts gemmMaxM)
//     Past the GEMVs' rows: the bf16 64×64 tensor-core GEMM (gemm_mma.h) with its W tiles
//     unpacked from the codes into shared memory, so no dequantized weight is written or read.
//     Slower than dequantize + GEMM on an H100 so far (one tile ahead in registers is too little
//     to hide the code loads and the unpacking; 64 blocks on N = 4096 at M <= 64).
//   linear_awq_dequantize
//     out[n, k] (bf16) = bf16((q - z) · s): past the GEMVs' rows a weight is dequantized into a
//     scratch buffer and the bf16 GEMM runs on it, once for all M rows.
//
// Portable code (no warp shuffles, so a 64-wide HIP wavefront is fine); the only inline PTX is
// pdl.h's, which HIP and pre-sm_90 builds compile to plain loads and no-ops.
#include "compat.h"
#include "gemm_mma.h"
#include "mma.h"
#include "pdl.h"

#define AWQ_ROWS 8        // output rows per GEMV block
#define AWQ_LANES 32      // threads per output row

// 128 + q as an f32, for a nibble q at bits 16..19 of `bits`: 0x43000000 is 128.0f, whose
// mantissa unit is 1 at bit 16, so OR-ing the nibble in adds it exactly. This replaces an
// int-to-float conversion, which issues at a quarter of the FMA rate and bounded the GEMV.
__device__ __forceinline__ float biased_nibble(uint32_t bits) {
  return __uint_as_float((bits & 0x000F0000u) | 0x43000000u);
}

// q - z for the 8 k of one code word, w[c] for k offset c (nibble i holds offset 2i, nibble
// i + 4 offset 2i + 1), exact small integers in f32: (128 + q) - (128 + z). The scale is applied
// by the caller, once a chunk in the GEMV.
__device__ __forceinline__ void unpack8(uint32_t word, float bz, float w[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t v = word >> (4 * i);
    w[2 * i] = biased_nibble(v << 16) - bz;
    w[2 * i + 1] = biased_nibble(v) - bz;
  }
}

// Code loads. The codes are weights no kernel writes, read once: the non-coherent path, not kept
// in L1. The _early one is issued before pdl_wait (volatile, so it stays there).
DENALI_LD16(awq_ld_w, ".nc.L1::no_allocate.L2::256B")
DENALI_LD16(awq_ld_w_early, ".nc.L1::no_allocate.L2::256B")
// An x load. x may have been written by the kernel pdl_wait waited for, which ran while this one
// had already started, so not the non-coherent path (as linear.cu's ld_x): a plain load, cached
// in L1 where the block's other rows find it, and kept after the wait.
DENALI_LD16(awq_ld_x, "")

// One 32-k chunk of one output row (one group, so one scale s and zero z): 4 code words against
// the T rows of x. The chunk's Σ x·(q - z) is kept apart and scaled once, acc += s · Σ, which
// saves the per-weight multiply.
template <int T>
__device__ __forceinline__ void gemv_awq_chunk(float acc[T], const uint4 q, int c,
                                               const uint16_t* __restrict__ x, int M, int K,
                                               float s, float bz) {
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  float part[T];
#pragma unroll
  for (int m = 0; m < T; ++m) part[m] = 0.f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float wf[8];
    unpack8(words[j], bz, wf);
#pragma unroll
    for (int m = 0; m < T; ++m) {
      if (m < M) {
        // The 8 x values of k = 32c + 8j .. + 7: one 16-byte load.
        const uint4 xv = awq_ld_x(x + static_cast<size_t>(m) * K + (c << 5) + 8 * j);
        float a = part[m];
        a = fmaf(wf[0], bf16_lo(xv.x), a);
        a = fmaf(wf[1], bf16_hi(xv.x), a);
        a = fmaf(wf[2], bf16_lo(xv.y), a);
        a = fmaf(wf[3], bf16_hi(xv.y), a);
        a = fmaf(wf[4], bf16_lo(xv.z), a);
        a = fmaf(wf[5], bf16_hi(xv.z), a);
        a = fmaf(wf[6], bf16_lo(xv.w), a);
        a = fmaf(wf[7], bf16_hi(xv.w), a);
        part[m] = a;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < T; ++m) acc[m] = fmaf(s, part[m], acc[m]);
}


// The two chunks c and c + 32 of a row (zeros past the row end, never loaded).
template <bool EARLY>
__device__ __forceinline__ void awq_load_pair(uint4& q, uint4& q2, const uint4* w, int c,
                                              int chunks) {
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  q = c < chunks ? (EARLY ? awq_ld_w_early(w + c) : awq_ld_w(w + c)) : zero;
  q2 = c + AWQ_LANES < chunks ? (EARLY ? awq_ld_w_early(w + c + AWQ_LANES) : awq_ld_w(w + c + AWQ_LANES))
                              : zero;
}

// 256 threads; grid ceil(N / 8). Thread (r = tid / 32, lane = tid % 32) owns output row
// blockIdx.x · 8 + r and walks it in chunks of 32 k (one 16-byte load of codes), lane, lane + 32,
// ...; a chunk never straddles a group, since group sizes are multiples of 32. Chunks go in
// pairs, and the next pair's loads are issued before the current pair is used, so each thread
// keeps two to four loads in flight. Each thread keeps one partial sum per row of x (T of them,
// M <= T); the 32 partials of a row are added in shared memory.
//
// Programmatic dependent launch (sm_90+), as linear.cu's GEMVs: the kernel may start while the
// previous kernel of its stream still runs. It loads its first pair of codes, then waits in
// pdl_wait until that kernel has completed, and only then reads x, scales, zeros and writes out.
// Launched plainly, or on HIP, both PDL calls do nothing.
template <int T>
__device__ __forceinline__ void gemv_awq(uint16_t* __restrict__ out, const uint16_t* __restrict__ x,
                                         const uint32_t* __restrict__ codes,
                                         const uint8_t* __restrict__ zeros,
                                         const float* __restrict__ scales, int M, int N, int K,
                                         int group) {
  __shared__ float red[T][AWQ_ROWS * AWQ_LANES];
  pdl_launch_dependents();
  const int r = threadIdx.x / AWQ_LANES, lane = threadIdx.x % AWQ_LANES;
  const int n = blockIdx.x * AWQ_ROWS + r;
  const bool row_in = n < N;
  const int chunks = row_in ? K >> 5 : 0, groups = K / group;
  const uint4* w = reinterpret_cast<const uint4*>(codes + static_cast<size_t>(row_in ? n : 0) * (K >> 3));
  uint4 q, q2;
  awq_load_pair<true>(q, q2, w, lane, chunks);
  pdl_wait();
  float acc[T];
#pragma unroll
  for (int m = 0; m < T; ++m) acc[m] = 0.f;
  const float* row_scales = scales + static_cast<size_t>(row_in ? n : 0) * groups;
  const uint8_t* row_zeros = zeros + static_cast<size_t>(row_in ? n : 0) * groups;
  for (int c = lane; c < chunks; c += 2 * AWQ_LANES) {
    uint4 next, next2;
    awq_load_pair<false>(next, next2, w, c + 2 * AWQ_LANES, chunks);
    const int c2 = c + AWQ_LANES;
    const int g = (c << 5) / group;
    gemv_awq_chunk<T>(acc, q, c, x, M, K, row_scales[g], 128.f + static_cast<float>(row_zeros[g]));
    if (c2 < chunks) {
      const int g2 = (c2 << 5) / group;
      gemv_awq_chunk<T>(acc, q2, c2, x, M, K, row_scales[g2], 128.f + static_cast<float>(row_zeros[g2]));
    }
    q = next;
    q2 = next2;
  }
#pragma unroll
  for (int m = 0; m < T; ++m) red[m][threadIdx.x] = acc[m];
  __syncthreads();
  for (int i = threadIdx.x; i < AWQ_ROWS * M; i += blockDim.x) {
    const int row = i % AWQ_ROWS, tok = i / AWQ_ROWS;
    const int col = blockIdx.x * AWQ_ROWS + row;
    float sum = 0.f;
    for (int p = 0; p < AWQ_LANES; ++p) sum += red[tok][row * AWQ_LANES + p];
    if (col < N) out[static_cast<size_t>(tok) * N + col] = f32_to_bf16(sum);
  }
}

#ifndef DENALI_HIP
// ---------------------------------------------------------------------------------------------
// GEMV on tensor cores (CUDA).
//
// The CUDA-core GEMV above spends about six instructions per weight (unpack, convert, one FMA
// per token), which held it to 35-45% of the read bandwidth on an H100 (bench/results/
// 2026-12-05-s7-benches-h100.md). Here a code word costs about two per weight, and the tokens
// ride along in the mma's N dimension for free:
//
// Word w of a 16-byte chunk holds k = 8w + 2i in nibble i and 8w + 2i + 1 in nibble i + 4.
// (w >> 4i) & 0x000f000f puts nibbles i and i + 4 at the bottom of each 16-bit half; OR 0x4300
// makes each the bf16 128 + q (bf16 128 has a mantissa unit of 1, and 128..143 are exact). One
// bf16x2 fma by 1 adds -(128 + z), exactly, and one by the group's scale (rounded to bf16) gives
// the weight pair, rounded once: the dequantize kernel's value to within a bf16 ulp. Pair i =
// (k 8w + 2i, 8w + 2i + 1): the pair x holds in its 32-bit word i, so x needs no reordering.
//
// Thread (g, t) loads the same chunk c of rows g and g + 8 and of x's token g. Pairs 0 and 1
// feed one mma as a0/a2 (row g) and a1/a3 (row g + 8), against x's words 0 and 1 (k 0-3 of the
// code word); pairs 2 and 3 feed a second mma with x's words 2 and 3. Which k sits in which mma
// slot does not matter as long as A and B agree, and every (row, k) is summed once over the
// quad's four threads.
//
// The scale and zero of a chunk's group are loaded with its codes (weights: allowed before
// pdl_wait) and applied at use.

#define AWQ_WARPS 8  // warps per mma GEMV block (256 threads)

// -(128 + z) as a bf16 pair: the bf16 -128 with z in the low mantissa bits, exact.
__device__ __forceinline__ uint32_t awq_neg_biased_zero(uint32_t z) {
  return (0xC300u | z) * 0x00010001u;
}

// Pair i of one code word, unscaled: (q - z) of k 8w + 2i and 8w + 2i + 1, exact small integers
// in bf16 (see above).
__device__ __forceinline__ uint32_t awq_pair_unscaled(uint32_t word, int i, uint32_t nz2) {
  const uint32_t biased = ((word >> (4 * i)) & 0x000F000Fu) | 0x43004300u;
  return fma_bf16x2(biased, 0x3F803F80u, nz2);
}

// The four pairs of one code word unscaled, for the post-scaled variant, which multiplies a
// chunk's sums by the group scale in f32 instead of every weight.
__device__ __forceinline__ void awq_pairs_unscaled(uint32_t word, uint32_t nz2, uint32_t (&p)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = awq_pair_unscaled(word, i, nz2);
}

// The four weight pairs of one code word, rows scaled by `s2` (a bf16 pair).
__device__ __forceinline__ void awq_pairs(uint32_t word, uint32_t nz2, uint32_t s2,
                                          uint32_t (&p)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) p[i] = fma_bf16x2(awq_pair_unscaled(word, i, nz2), s2, 0x80008000u);
}

// POST: the mma runs on q - z, into a chunk's own accumulators, which are then scaled by the
// group's scale and added to the sums (4 instead of 8 instructions a code word's pair, and the
// scale applied in f32 rather than rounded into each bf16 weight).
template <int MT, int RH, int S, bool PERSIST, bool POST = false, bool SILU = false>
__device__ __forceinline__ void gemv_awq_mma(uint16_t* __restrict__ out,
                                             const uint16_t* __restrict__ x,
                                             const uint32_t* __restrict__ codes,
                                             const uint8_t* __restrict__ zeros,
                                             const float* __restrict__ scales, int M, int N,
                                             int K, int group, int ksplit) {
  constexpr int ROWS = 8 * RH;  // W rows per warp group
  // 16-byte chunks per row per thread per step: 2 KiB of codes a warp. 4 KiB measured slower on
  // every Llama-3-8B shape (bench/results/2026-12-06-s9-w8a8-awq-h200.md).
  constexpr int CH = 4 / RH;
  constexpr int STEP = 4 * CH;  // chunks per row per step
  __shared__ float red[AWQ_WARPS][MT][4][32];
  pdl_launch_dependents();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int groups = AWQ_WARPS / ksplit;
  const int part = warp % ksplit;
  const int kc = K >> 5;  // 32-k chunks (16 bytes of codes) per row
  const int ng = K / group;
  const int steps = (kc + STEP - 1) / STEP;
  const int mine = part < steps ? (steps - 1 - part) / ksplit + 1 : 0;
  // Row blocks of the whole weight; a persistent block takes blockIdx.x, + gridDim.x, ...
  constexpr int COLS = GEMV_GROUP_COLS<ROWS, SILU>;  // output columns a group writes
  const int row_blocks = (N + groups * COLS - 1) / (groups * COLS);

  const uint4* wr[RH];
  const uint8_t* zr[RH];
  const float* sr[RH];
  auto set_rows = [&](int block) {
    const int group = block * groups + warp / ksplit;
#pragma unroll
    for (int h = 0; h < RH; ++h) {
      const int row = gemv_w_row<ROWS, SILU>(group, g, h, N);
      wr[h] = reinterpret_cast<const uint4*>(codes + static_cast<size_t>(row) * (K >> 3));
      zr[h] = zeros + static_cast<size_t>(row) * ng;
      sr[h] = scales + static_cast<size_t>(row) * ng;
    }
  };
  int block = blockIdx.x;
  set_rows(block);
  const uint4* xr[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int tok = min(g + 8 * mt, M - 1);
    xr[mt] = reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok) * K);
  }

  // Codes, zero and scale of one step: chunk c0 + t + 4j of each row. Past the row end: zero
  // codes with chunk 0's group (finite weights), against zero x, so they add nothing.
  auto load_w = [&](uint4 (&v)[RH][CH], uint32_t (&z)[RH][CH], float (&sc)[RH][CH], int c0,
                    bool early) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c = c0 + t + 4 * j;
      const bool in = c < kc;
      const int cc = in ? c : 0;
      const int gi = (cc << 5) / group;
#pragma unroll
      for (int h = 0; h < RH; ++h) {
        const uint4 loaded = early ? awq_ld_w_early(wr[h] + cc) : awq_ld_w(wr[h] + cc);
        v[h][j] = in ? loaded : make_uint4(0, 0, 0, 0);
        z[h][j] = zr[h][gi];
        sc[h][j] = sr[h][gi];
      }
    }
  };
  // x of one step: 32 k of each chunk, four 16-byte loads.
  auto load_x = [&](uint4 (&v)[MT][CH][4], int c0) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      const int c = c0 + t + 4 * j;
      const bool in = c < kc;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          const uint4 loaded = awq_ld_x(xr[mt] + 4 * (in ? c : 0) + w);
          v[mt][j][w] = in ? loaded : make_uint4(0, 0, 0, 0);
        }
      }
    }
  };

  uint4 wv[S][RH][CH], xv[MT][CH][4];
  uint32_t zv[S][RH][CH];
  float sv[S][RH][CH];
#pragma unroll
  for (int u = 0; u < S; ++u) {
    if (u < mine) load_w(wv[u], zv[u], sv[u], (part + u * ksplit) * STEP, true);
  }
  pdl_wait();

  for (;;) {
  // Two accumulator sets (pairs 0-1 and 2-3) halve the chain of dependent mmas.
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
          uint32_t nz[RH], s2[RH];
#pragma unroll
          for (int h = 0; h < RH; ++h) {
            nz[h] = awq_neg_biased_zero(zv[u][h][j]);
            s2[h] = static_cast<uint32_t>(f32_to_bf16(sv[u][h][j])) * 0x00010001u;
          }
          const uint4 lv = wv[u][0][j];
          const uint4 hv = RH == 2 ? wv[u][RH - 1][j] : make_uint4(0, 0, 0, 0);
          const uint32_t lo[4] = {lv.x, lv.y, lv.z, lv.w};
          const uint32_t hi[4] = {hv.x, hv.y, hv.z, hv.w};
          float tmp[MT][2][4];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int r = 0; r < 4; ++r) tmp[mt][0][r] = tmp[mt][1][r] = 0.f;
          }
          float (&dst)[MT][2][4] = POST ? tmp : acc;
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            uint32_t pg[4], ph[4] = {0u, 0u, 0u, 0u};
            if (POST) {
              awq_pairs_unscaled(lo[w], nz[0], pg);
              if (RH == 2) awq_pairs_unscaled(hi[w], nz[RH - 1], ph);
            } else {
              awq_pairs(lo[w], nz[0], s2[0], pg);
              if (RH == 2) awq_pairs(hi[w], nz[RH - 1], s2[RH - 1], ph);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              // x's (k 0, 1) (2, 3) (4, 5) (6, 7) of word w: pairs 0 .. 3 as they are.
              const uint4 xs = xv[mt][j][w];
              mma_bf16_16816(dst[mt][0], pg[0], ph[0], pg[1], ph[1], xs.x, xs.y);
              mma_bf16_16816(dst[mt][1], pg[2], ph[2], pg[3], ph[3], xs.z, xs.w);
            }
          }
          if (POST) {
            // C registers 0, 1 are row g, 2, 3 row g + 8.
            const float slo = sv[u][0][j], shi = sv[u][RH - 1][j];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                acc[mt][h][0] = fmaf(slo, tmp[mt][h][0], acc[mt][h][0]);
                acc[mt][h][1] = fmaf(slo, tmp[mt][h][1], acc[mt][h][1]);
                acc[mt][h][2] = fmaf(shi, tmp[mt][h][2], acc[mt][h][2]);
                acc[mt][h][3] = fmaf(shi, tmp[mt][h][3], acc[mt][h][3]);
              }
            }
          }
        }
        if (i + S < mine) load_w(wv[u], zv[u], sv[u], (part + (i + S) * ksplit) * STEP, false);
      }
    }
  }

  // A persistent block issues the next row block's first steps before it reduces this one, so
  // its warps' code loads stay in flight across the reduction.
  const int next = block + gridDim.x;
  const bool more = PERSIST && next < row_blocks;
  if (more) {
    set_rows(next);
#pragma unroll
    for (int u = 0; u < S; ++u) {
      if (u < mine) load_w(wv[u], zv[u], sv[u], (part + u * ksplit) * STEP, false);
    }
  }
  gemv_mma_store<MT, ROWS, AWQ_WARPS, false, SILU>(red, acc, out, nullptr, M, N, groups, ksplit,
                                                   block);
  if (!more) break;
  __syncthreads();  // every thread has read `red` before the next block's partials overwrite it
  block = next;
  }
}

#define AWQ_MMA_BODY(T, RH, S) \
  gemv_awq_mma<(T) / 8, RH, S, false>(out, x, codes, zeros, scales, M, N, K, group, ksplit)
#define AWQ_MMA_PERSIST_BODY(T, RH, S) \
  gemv_awq_mma<(T) / 8, RH, S, true>(out, x, codes, zeros, scales, M, N, K, group, ksplit)
#define AWQ_MMA_POST_BODY(T, RH, S) \
  gemv_awq_mma<(T) / 8, RH, S, false, true>(out, x, codes, zeros, scales, M, N, K, group, ksplit)
#define AWQ_MMA_SILU_BODY(T, S, POST) \
  gemv_awq_mma<(T) / 8, 2, S, false, POST, true>(out, x, codes, zeros, scales, M, N, K, group, ksplit)

// The W4A16 GEMM's W tiles (gemm_mma.h's LoadB): each thread owns half a row of the 64 × 64 tile,
// 32 k = four code words = one 16-byte load, fetched one tile ahead into registers with its
// group's zero and scale, then unpacked into four bf16 chunks exactly as linear_awq_dequantize
// writes them (bf16((q - z) · s)) and stored into the swizzled tile. Needs K % 32 == 0 and
// group % 32 == 0 (a half row lies in one group) and 16-byte-aligned codes. Rows past N repeat
// row N - 1 (their columns are never stored); k past K is zeros, as x's.
struct AwqTileB {
  const uint32_t* __restrict__ codes;
  const uint8_t* __restrict__ zeros;
  const float* __restrict__ scales;
  int N, K, group;
  uint4 words;
  float bz, scale;
  bool in;
  __device__ __forceinline__ void ahead(int n0, int k0) {
    const int row = threadIdx.x >> 1, k = k0 + 32 * (threadIdx.x & 1);
    const int n = min(n0 + row, N - 1);
    in = k < K;
    if (!in) return;
    const int g = k / group;
    const size_t at = static_cast<size_t>(n) * (K / group) + g;
    words = awq_ld_w(reinterpret_cast<const uint4*>(codes + static_cast<size_t>(n) * (K >> 3) + (k >> 3)));
    bz = 128.f + static_cast<float>(zeros[at]);
    scale = scales[at];
  }
  __device__ __forceinline__ void stage(uint32_t tile, int, int) {
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
    const uint32_t w4[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      uint32_t packed[4] = {0u, 0u, 0u, 0u};
      if (in) {
        float w[8];
        unpack8(w4[c], bz, w);
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          packed[p] = static_cast<uint32_t>(f32_to_bf16(w[2 * p] * scale)) |
                      (static_cast<uint32_t>(f32_to_bf16(w[2 * p + 1] * scale)) << 16);
        }
      }
      const int ch = 4 * half + c;
      const uint32_t dst = tile + row * 128 + ((ch ^ (row & 7)) << 4);
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(packed[0]),
                   "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
                   : "memory");
    }
  }
};
#else
#define AWQ_MMA_BODY(T, RH, S) denali_trap()
#define AWQ_MMA_PERSIST_BODY(T, RH, S) denali_trap()
#define AWQ_MMA_POST_BODY(T, RH, S) denali_trap()
#define AWQ_MMA_SILU_BODY(T, S, POST) denali_trap()
#endif  // !DENALI_HIP

// Entry points of the mma GEMVs: 256 threads; grid ceil(N / (ROWS · 8 / ksplit)); ksplit ∈ {1,
// 2, 4, 8}; t8 needs M <= 8, t16 M <= 16; r16/r8: ROWS = 16/8; _s2: two steps in flight.
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t8_r16_s2(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_BODY(8, 2, 2);
}
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t8_r16_s3(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_BODY(8, 2, 3);
}
// Post-scaled (_ps): see gemv_awq_mma's POST.
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t8_r16_s2_ps(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_POST_BODY(8, 2, 2);
}
// Persistent (_p): a grid of at most 2 blocks an SM (the launch bounds hold a thread to 128
// registers, so 2 fit), each looping over row blocks blockIdx.x, + gridDim.x, ...
extern "C" __global__ void __launch_bounds__(256, 2) linear_awq_gemv_t8_r16_s2_p(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_PERSIST_BODY(8, 2, 2);
}
extern "C" __global__ void __launch_bounds__(256, 2) linear_awq_gemv_t8_r16_s3_p(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_PERSIST_BODY(8, 2, 3);
}
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t8_r8_s2(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_BODY(8, 1, 2);
}
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t16_r16(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_BODY(16, 2, 1);
}
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t16_r8(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_BODY(16, 1, 1);
}
// SiLU-and-multiply in the epilogue, as linear.cu's _silu GEMVs: codes, zeros and scales gate/up
// stacked, [2N, ...], gate rows first; out[M, N]. Grid ceil(N / (8 · 8 / ksplit)). The t8 one is
// the default variant (s2_ps) with this epilogue; the t16 one, t16_r16's.
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t8_r16_s2_ps_silu(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_SILU_BODY(8, 2, true);
}
extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t16_r16_silu(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group, int32_t ksplit) {
  AWQ_MMA_SILU_BODY(16, 1, false);
}

// The W4A16 GEMM (CUDA, opt-in; past the GEMVs' 16 rows): linear.cu's 64×64 tensor-core GEMM with
// its W tiles unpacked from the codes in registers (AwqTileB) instead of a whole dequantized
// weight in memory. 128 threads (4 warps of 32×32), 4 stages: 65536 bytes of dynamic shared
// memory; 1-D grid of ceil(M / 64) · ceil(N / 64) blocks. K % 32 == 0, group % 32 == 0, codes
// 16-byte aligned, and x as the bf16 GEMM needs it (K % 8 == 0, 16-byte aligned).
extern "C" __global__ void __launch_bounds__(128) linear_awq_gemm_64x64(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group) {
#ifndef DENALI_HIP
  AwqTileB loadB{codes, zeros, scales, N, K, group};
  gemm_mma<64, 64, 32, 32, 4>(out, x, loadB, M, N, K);
#else
  denali_trap();  // ops/gpu/awq.ts dequantizes instead on HIP
#endif
}

extern "C" __global__ void __launch_bounds__(256, 4) linear_awq_gemv_t4(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group) {
  gemv_awq<4>(out, x, codes, zeros, scales, M, N, K, group);
}

// 256 threads; grid min(N, 65535) blocks, each taking rows blockIdx.x, + gridDim.x, ...; a
// thread unpacks one word (8 weights) and writes them with one 16-byte store (the output row
// starts 16-byte aligned: K is a multiple of 32). (q - z) · s is exact in f32 (a 5-bit integer
// times a scale that came from f16), so the one rounding is the bf16 store.
extern "C" __global__ void __launch_bounds__(256) linear_awq_dequantize(uint16_t* out, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t N, int32_t K, int32_t group) {
  const int words = K >> 3, groups = K / group;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    uint4* row_out = reinterpret_cast<uint4*>(out + static_cast<size_t>(row) * K);
    for (int j = threadIdx.x; j < words; j += blockDim.x) {
      const uint32_t word = codes[static_cast<size_t>(row) * words + j];
      const int g = (8 * j) / group;
      const float s = scales[static_cast<size_t>(row) * groups + g];
      float w[8];
      unpack8(word, 128.f + static_cast<float>(zeros[static_cast<size_t>(row) * groups + g]), w);
      uint32_t packed[4];
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        packed[p] = static_cast<uint32_t>(f32_to_bf16(w[2 * p] * s)) |
                    (static_cast<uint32_t>(f32_to_bf16(w[2 * p + 1] * s)) << 16);
      }
      row_out[j] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
  }
}
