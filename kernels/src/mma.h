// bf16 tensor-core helpers shared by the quantized GEMVs (linear_fp8.cu, linear_awq.cu) and decode
// attention (attention.cu). CUDA only (sm_80 and newer); under HIP the header is empty and those
// files use portable bodies.
#pragma once
#include "compat.h"
#include "silu.h"

#ifndef DENALI_HIP

// d += A·B on one m16n8k16 tile, bf16 operands and f32 accumulators. Thread (g = lane / 4,
// t = lane % 4) holds A rows g (a0, a2) and g + 8 (a1, a3) at k slots {2t, 2t+1} (a0, a1) and
// {2t+8, 2t+9} (a2, a3), B column g at those slots (b0, b1), and D rows g (d0, d1) and g + 8
// (d2, d3) at columns 2t and 2t + 1.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], uint32_t a0, uint32_t a1,
                                               uint32_t a2, uint32_t a3, uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The same mma when A's rows 8-15 are zero and D's rows 8-15 are not wanted (fewer than 8 rows
// of A in use, as decode attention's head groups): only the two live accumulators are the
// caller's registers; the dead half goes to scratch registers. F16: f16 operands instead of
// bf16 (an FP8 cache's E4M3 codes widen to f16 pairs in one instruction).
template <bool F16 = false>
__device__ __forceinline__ void mma_rows0(float& d0, float& d1, uint32_t a0, uint32_t a2,
                                          uint32_t b0, uint32_t b1) {
  // asm takes a string literal, so the operand type is spliced in by the preprocessor.
#define DENALI_MMA_ROWS0(TYPE)                                                           \
  asm("{\n .reg .f32 z2, z3;\n"                                                          \
      " mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,z2,z3}, "      \
      "{%2,%6,%3,%6}, {%4,%5}, {%0,%1,%7,%7};\n}"                                          \
      : "+f"(d0), "+f"(d1)                                                               \
      : "r"(a0), "r"(a2), "r"(b0), "r"(b1), "r"(0u), "f"(0.f))
  if constexpr (F16) {
    DENALI_MMA_ROWS0("f16");
  } else {
    DENALI_MMA_ROWS0("bf16");
  }
#undef DENALI_MMA_ROWS0
}

// Two f32 to an f16 pair, lo in the lower half, each rounded to nearest even.
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  uint32_t out;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(out) : "f"(hi), "f"(lo));
  return out;
}

// Byte permute: byte i of the result is byte (selector nibble i) of the 8-byte pair (b:a).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t out;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(out) : "r"(a), "r"(b), "r"(selector));
  return out;
}

// a · b + c on two bf16 lanes at once, rounded to nearest even.
__device__ __forceinline__ uint32_t fma_bf16x2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t out;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(out) : "r"(a), "r"(b), "r"(c));
  return out;
}

// Output columns a row group of the tensor-core GEMVs writes: its ROWS rows, or with SILU (see
// gemv_w_row) the 8 columns whose gate and up rows it holds.
template <int ROWS, bool SILU>
constexpr int GEMV_GROUP_COLS = SILU ? 8 : ROWS;

// The W row that thread row g of half h (0 or 1) of row group `group` reads in the tensor-core
// GEMVs. Plainly a group holds ROWS consecutive rows (half h: rows 8h ..). SILU (ROWS = 16): the
// weight is gate/up stacked, [2N, K] with the N gate rows first, and a group holds output
// columns group·8 .. + 7: half 0 reads their gate rows, half 1 their up rows, so one thread's C
// fragment holds both operands of SiLU-and-multiply. Rows past the end read the last one (valid
// memory; the store drops the result).
template <int ROWS, bool SILU>
__device__ __forceinline__ int gemv_w_row(int group, int g, int h, int N) {
  if (SILU) {
    const int col = min(group * 8 + g, N - 1);
    return h == 0 ? col : N + col;
  }
  return min(group * ROWS + g + 8 * h, N - 1);
}

// The end of the tensor-core GEMVs (linear.cu, linear_fp8.cu, linear_awq.cu): each warp's C
// fragments, its two accumulator sets added, go to `red`; then the block's threads add up the
// `ksplit` warps of each of its `groups` row groups of ROWS rows and write out[tok, n] =
// bf16(sum · scales[n]) where SCALED, else bf16(sum) (`scales` unread). C fragment: acc[mt][*][r] is row
// g + 8 (r / 2) of the warp's group, token 8 mt + 2 t + r % 2. `block` is the row block (a
// persistent kernel's, else blockIdx.x).
//
// SILU (see gemv_w_row): a group's 16 rows are the gate and up rows of 8 output columns, and
// out[tok, n] (N columns) = bf16(silu_mul(bf16(gate), bf16(up))), the sums rounded (and scaled:
// gate by scales[n], up by scales[N + n]) as the unfused GEMV writes them, so the result is
// silu_mul_bf16's on that GEMV's output, bit for bit.
template <int MT, int ROWS, int WARPS, bool SCALED, bool SILU = false>
__device__ __forceinline__ void gemv_mma_store(float (&red)[WARPS][MT][4][32],
                                               const float (&acc)[MT][2][4],
                                               uint16_t* __restrict__ out,
                                               const float* __restrict__ scales, int M, int N,
                                               int groups, int ksplit,
                                               int block = static_cast<int>(blockIdx.x)) {
  static_assert(!SILU || ROWS == 16, "SiLU pairs a group's two 8-row halves");
  constexpr int COLS = GEMV_GROUP_COLS<ROWS, SILU>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 4; ++r) red[warp][mt][r][lane] = acc[mt][0][r] + acc[mt][1][r];
  }
  __syncthreads();
  // The sum over the group's ksplit warps of C register `reg`, lane `ln`.
  auto gathered = [&](int grp, int mt, int reg, int ln) {
    float sum = 0.f;
    for (int p = 0; p < ksplit; ++p) sum += red[grp * ksplit + p][mt][reg][ln];
    return sum;
  };
  const int perGroup = COLS * 8 * MT;
  for (int i = threadIdx.x; i < groups * perGroup; i += blockDim.x) {
    const int grp = i / perGroup, rem = i % perGroup;
    const int row = rem % COLS, tok = rem / COLS;  // consecutive threads write consecutive n
    const int mt = tok >> 3, jj = tok & 7;
    const int ln = (row & 7) * 4 + (jj >> 1), reg = ((row >> 3) << 1) | (jj & 1);
    const int n = (block * groups + grp) * COLS + row;
    if (n >= N || tok >= M) continue;
    if (SILU) {
      float gate = gathered(grp, mt, jj & 1, ln), up = gathered(grp, mt, 2 | (jj & 1), ln);
      if (SCALED) {
        gate *= scales[n];
        up *= scales[N + n];
      }
      const float product = silu_mul(bf16_to_f32(f32_to_bf16(gate)), bf16_to_f32(f32_to_bf16(up)));
      out[static_cast<size_t>(tok) * N + n] = f32_to_bf16(product);
    } else {
      const float sum = gathered(grp, mt, reg, ln);
      out[static_cast<size_t>(tok) * N + n] = f32_to_bf16(SCALED ? sum * scales[n] : sum);
    }
  }
}

#endif  // !DENALI_HIP
