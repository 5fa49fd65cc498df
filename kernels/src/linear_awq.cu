// 4-bit group-quantized weights (AWQ, GPTQ), bf16 activations (W4A16), in Denali's layout
// (backends/awq.ts): codes u32 [N, K / 8] with nibble i of word j holding k = 8j + i, zeros u8
// [N, K / group], scales f32 [N, K / group]; W[n, k] = (q - zeros[n, k / group]) · scales[...].
//
// Kernels (ops/gpu/awq.ts picks one per call):
//   linear_awq_gemv_t4, linear_awq_gemv_t16
//     Decode (M <= 4, M <= 16): out[m, n] = bf16(Σ_k x[m, k] · W[n, k]), the weights unpacked in
//     registers and the sums in f32. Needs K % 32 == 0 (true for every supported group size)
//     and 16-byte-aligned x and codes; other calls take the dequantize path.
//   linear_awq_dequantize
//     out[n, k] (bf16) = bf16((q - z) · s): the prefill path (M > 16) dequantizes a weight into
//     a scratch buffer and runs the bf16 GEMM on it.
//
// All are plain portable code (no inline PTX, no warp shuffles), so the same source builds
// for HIP, where a wavefront may be 64 wide.
#include "compat.h"

#define AWQ_ROWS 8        // output rows per GEMV block
#define AWQ_LANES 32      // threads per output row

// 256 threads; grid ceil(N / 8). Thread (r = tid / 32, lane = tid % 32) owns output row
// blockIdx.x · 8 + r and walks it in chunks of 32 k (one 16-byte load of codes), lane, lane + 32,
// ...; a chunk never straddles a group, since group sizes are multiples of 32. Each thread keeps
// one partial sum per row of x (T of them, M <= T: t4 keeps the registers, and so the
// occupancy, of batch-1 decode low); the 32 partials of a row are added in shared memory.
template <int T>
__device__ __forceinline__ void gemv_awq(uint16_t* __restrict__ out, const uint16_t* __restrict__ x,
                                         const uint32_t* __restrict__ codes,
                                         const uint8_t* __restrict__ zeros,
                                         const float* __restrict__ scales, int M, int N, int K,
                                         int group) {
  __shared__ float red[T][AWQ_ROWS * AWQ_LANES];
  const int r = threadIdx.x / AWQ_LANES, lane = threadIdx.x % AWQ_LANES;
  const int n = blockIdx.x * AWQ_ROWS + r;
  const int chunks = K >> 5, groups = K / group;
  float acc[T];
#pragma unroll
  for (int m = 0; m < T; ++m) acc[m] = 0.f;
  if (n < N) {
    const uint4* w = reinterpret_cast<const uint4*>(codes + static_cast<size_t>(n) * (K >> 3));
    const size_t row_groups = static_cast<size_t>(n) * groups;
    for (int c = lane; c < chunks; c += AWQ_LANES) {
      const uint4 q = w[c];
      const int g = (c << 5) / group;
      const float s = scales[row_groups + g];
      const float z = static_cast<float>(zeros[row_groups + g]);
      const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float wf[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) wf[i] = (static_cast<float>((words[j] >> (4 * i)) & 15u) - z) * s;
#pragma unroll
        for (int m = 0; m < T; ++m) {
          if (m < M) {
            // The 8 x values of k = 32c + 8j .. + 7: one 16-byte load.
            const uint4 xv = *reinterpret_cast<const uint4*>(x + static_cast<size_t>(m) * K + (c << 5) + 8 * j);
            const uint32_t pairs[4] = {xv.x, xv.y, xv.z, xv.w};
            float a = acc[m];
#pragma unroll
            for (int p = 0; p < 4; ++p) {
              a = fmaf(wf[2 * p], bf16_to_f32(static_cast<uint16_t>(pairs[p] & 0xffffu)), a);
              a = fmaf(wf[2 * p + 1], bf16_to_f32(static_cast<uint16_t>(pairs[p] >> 16)), a);
            }
            acc[m] = a;
          }
        }
      }
    }
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

extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t4(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group) {
  gemv_awq<4>(out, x, codes, zeros, scales, M, N, K, group);
}

extern "C" __global__ void __launch_bounds__(256) linear_awq_gemv_t16(uint16_t* out, const uint16_t* x, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t M, int32_t N, int32_t K, int32_t group) {
  gemv_awq<16>(out, x, codes, zeros, scales, M, N, K, group);
}

// 256 threads; grid min(N, 65535) blocks, each taking rows blockIdx.x, + gridDim.x, ...; a
// thread unpacks one word (8 weights) at a time. (q - z) · s is exact in f32 (a 5-bit integer
// times a scale that came from f16), so the one rounding is the bf16 store.
extern "C" __global__ void __launch_bounds__(256) linear_awq_dequantize(uint16_t* out, const uint32_t* codes, const uint8_t* zeros, const float* scales, int32_t N, int32_t K, int32_t group) {
  const int words = K >> 3, groups = K / group;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    const size_t base = static_cast<size_t>(row) * K;
    for (int j = threadIdx.x; j < words; j += blockDim.x) {
      const uint32_t word = codes[static_cast<size_t>(row) * words + j];
      const int g = (8 * j) / group;
      const float s = scales[static_cast<size_t>(row) * groups + g];
      const float z = static_cast<float>(zeros[static_cast<size_t>(row) * groups + g]);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        out[base + 8 * j + i] = f32_to_bf16((static_cast<float>((word >> (4 * i)) & 15u) - z) * s);
      }
    }
  }
}
