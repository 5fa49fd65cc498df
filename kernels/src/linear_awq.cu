// 4-bit group-quantized weights (AWQ, GPTQ), bf16 activations (W4A16), in Denali's layout
// (backends/awq.ts): codes u32 [N, K / 8] with nibble i of word j holding k = 8j + i, zeros u8
// [N, K / group], scales f32 [N, K / group]; W[n, k] = (q - zeros[n, k / group]) · scales[...].
//
// Kernels (ops/gpu/awq.ts picks one per call):
//   linear_awq_gemv_t4
//     Decode (M <= 4): out[m, n] = bf16(Σ_k x[m, k] · W[n, k]), the weights unpacked in
//     registers and the sums in f32. Needs K % 32 == 0 (true for every supported group size)
//     and 16-byte-aligned x and codes; other calls take the dequantize path.
//   linear_awq_dequantize
//     out[n, k] (bf16) = bf16((q - z) · s): for M > 4 a weight is dequantized into a scratch
//     buffer and the bf16 GEMM runs on it (the GEMV's CUDA-core work grows with M; a 16-row
//     variant measured slower than this path from M = 8 on an H100).
//
// Portable code (no warp shuffles, so a 64-wide HIP wavefront is fine); the only inline PTX is
// pdl.h's, which HIP and pre-sm_90 builds compile to plain loads and no-ops.
#include "compat.h"
#include "pdl.h"

#define AWQ_ROWS 8        // output rows per GEMV block
#define AWQ_LANES 32      // threads per output row

// 128 + q as an f32, for a nibble q at bits 16..19 of `bits`: 0x43000000 is 128.0f, whose
// mantissa unit is 1 at bit 16, so OR-ing the nibble in adds it exactly. This replaces an
// int-to-float conversion, which issues at a quarter of the FMA rate and bounded the GEMV.
__device__ __forceinline__ float biased_nibble(uint32_t bits) {
  return __uint_as_float((bits & 0x000F0000u) | 0x43000000u);
}

// q_i - z for the 8 nibbles of one code word (nibble i is k offset i), exact small integers in
// f32: (128 + q) - (128 + z). The scale is applied by the caller, once a chunk in the GEMV.
__device__ __forceinline__ void unpack8(uint32_t word, float bz, float w[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t v = word >> (4 * i);
    w[i] = biased_nibble(v << 16) - bz;
    w[i + 4] = biased_nibble(v) - bz;
  }
}

// The low and high bf16 of a packed pair as f32 (a bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_lo(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t pair) { return __uint_as_float(pair & 0xffff0000u); }

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
