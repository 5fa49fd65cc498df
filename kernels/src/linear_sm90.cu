// Hopper GEMM: out[M, N] = x[M, K] · W[N, K]ᵀ on wgmma (sm_90a), bf16 in and out, fp32
// accumulation. ops/gpu/linear.ts runs it for M > 16 on vector shapes (K % 8 == 0, x and W
// 16-byte aligned) when the device loaded this module's sm_90a image.
//
// wgmma is an arch-specific instruction: only the sm_90a build (nvcc -arch=sm_90a defines
// __CUDA_ARCH_FEAT_SM90_ALL) has a body; every other PTX and HSACO build of these kernels traps,
// and the host never launches them there.
//
// Design: block tile 128 × BN × 64 k, two warpgroups (256 threads), each owning 64 rows × BN
// columns of fp32 accumulators in registers (one m64nBNk16 wgmma per 16 k). All 256 threads copy
// the next tiles global → shared with cp.async (16-byte chunks, zero-filled past M, N and K) into
// a STAGES-deep ring; wgmma reads both operands straight from shared memory through matrix
// descriptors. Tiles are [rows][64] bf16 = 128-byte rows with the 16-byte chunk index XORed by
// row % 8, which is exactly the hardware's 128-byte swizzle, so the descriptors name
// SWIZZLE_128B and the copies need no transposition.
//
// Pipeline, one barrier per k tile: wait for tile kt's copies, fence them into the async proxy,
// barrier (after which every warpgroup has also retired tile kt - 2's wgmmas), issue tile kt's
// four wgmmas, start copying tile kt + STAGES - 2 into the slot tile kt - 2 used (while the tensor
// cores work), and wait until at most one batch (tile kt's) is in flight.
//
// Split-K: with kSplit > 1 the grid has kSplit blocks per output tile, each over a contiguous
// run of k tiles. Each block stores its fp32 accumulators to `partials` (slot tile · kSplit +
// slice, in register order, so every access is a coalesced float4), fences, and takes a ticket
// from counters[tile]; the block that takes the last ticket sums all kSplit slots in slice order
// (its own read back too, so the result does not depend on which block finished last), writes
// the bf16 tile and resets the counter to zero for the next call (so the counters, zeroed once
// when allocated, survive graph replays). Small shapes with long K then fill the GPU.
//
// Stream-K (linear_wgmma_sk_*): a grid of one block an SM shares out all tiles' k iterations
// evenly, so a tile count that is not a multiple of the SM count costs no partly idle wave
// (see gemm_wgmma_sk).
//
// Swapped operands (linear_wgmma_swap_*): for decode batches of 17-64 tokens, a 128-row x tile
// is mostly zeros, yet wgmma multiplies all of it. These kernels compute outᵀ = W · xᵀ instead:
// W's rows are wgmma's M (two warpgroups × 64 rows a block), the tokens its N (32 or 64), so the
// padding is at most 31 tokens, the tensor work per weight byte halves or quarters, and the small
// tiles (two blocks an SM) give more blocks for the same weight (see gemm_wgmma_swap).
#include "compat.h"
#include "gemm_tiles.h"
#include "last_arrival.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

extern __shared__ __align__(1024) uint8_t wgmma_smem[];

// Shared-memory matrix descriptor of a K-major, 128-byte-swizzled operand whose 8-row groups sit
// 1024 bytes apart: start address >> 4 (bits 0-13), leading offset 16 bytes (unused by K-major
// swizzled layouts, 1 by convention), stride offset 1024 >> 4 (bits 32-45), SWIZZLE_128B (bit 62).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// The accumulator operands of an m64nN wgmma: N / 2 fp32 registers, "{%0, ..., %(N/2 - 1)}" in
// the instruction text and one "+f" constraint each.
#define WGMMA_F8(i)                                                                         \
  "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define WGMMA_F16(i) WGMMA_F8(i), WGMMA_F8(i + 8)
#define WGMMA_F32(i) WGMMA_F16(i), WGMMA_F16(i + 16)
#define WGMMA_F64(i) WGMMA_F32(i), WGMMA_F32(i + 32)
#define WGMMA_D16 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define WGMMA_D32 WGMMA_D16 ", %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WGMMA_D64                                                                                  \
  WGMMA_D32 ","                                                                                    \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"                \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_D128                                                                                 \
  WGMMA_D64 ","                                                                                    \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"                \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"                \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"    \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

// One wgmma over 32 bytes of each row, 16 k of bf16 or 32 k of E4M3 (FP8), into a thread's
// share of an m64nBN fp32 accumulator: d = A(64 rows, descriptor da) · B(BN rows, descriptor
// db)ᵀ, plus d where `accumulate` is nonzero (wgmma's scale-d predicate), both operands K-major.
// An FP8 k32 reads the same 32 bytes of each row as a bf16 k16, so the tiles, descriptors and
// steps are the bf16 ones; the FP8 form has no transpose operands (FP8 operands must be
// K-major), hence its shorter operand list.
template <int BN, bool FP8>
__device__ __forceinline__ void wgmma_k32b(float (&d)[BN / 2], uint64_t da, uint64_t db,
                                           int accumulate);
// Defines wgmma_k32b<BN, FP8> as one instruction: SHAPE its shape and types, D its accumulator
// list, OPERANDS the descriptors' numbers, the scale-d predicate p and the scale/transpose
// immediates, SCALE the operand number of `accumulate`, then the accumulators' constraints.
#define DENALI_WGMMA(BN, FP8, SHAPE, D, OPERANDS, SCALE, ...)                                   \
  template <>                                                                                   \
  __device__ __forceinline__ void wgmma_k32b<BN, FP8>(float (&d)[BN / 2], uint64_t da,          \
                                                      uint64_t db, int accumulate) {            \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SCALE ", 0;\n"                             \
                 "wgmma.mma_async.sync.aligned." SHAPE " {" D "}, " OPERANDS ";\n}"             \
                 : __VA_ARGS__                                                                  \
                 : "l"(da), "l"(db), "r"(accumulate));                                          \
  }
DENALI_WGMMA(256, false, "m64n256k16.f32.bf16.bf16", WGMMA_D128, "%128, %129, p, 1, 1, 0, 0",
             "%130", WGMMA_F64(0), WGMMA_F64(64))
DENALI_WGMMA(128, false, "m64n128k16.f32.bf16.bf16", WGMMA_D64, "%64, %65, p, 1, 1, 0, 0", "%66",
             WGMMA_F64(0))
DENALI_WGMMA(64, false, "m64n64k16.f32.bf16.bf16", WGMMA_D32, "%32, %33, p, 1, 1, 0, 0", "%34",
             WGMMA_F32(0))
DENALI_WGMMA(32, false, "m64n32k16.f32.bf16.bf16", WGMMA_D16, "%16, %17, p, 1, 1, 0, 0", "%18",
             WGMMA_F16(0))
DENALI_WGMMA(128, true, "m64n128k32.f32.e4m3.e4m3", WGMMA_D64, "%64, %65, p, 1, 1", "%66",
             WGMMA_F64(0))
DENALI_WGMMA(64, true, "m64n64k32.f32.e4m3.e4m3", WGMMA_D32, "%32, %33, p, 1, 1", "%34",
             WGMMA_F32(0))
DENALI_WGMMA(32, true, "m64n32k32.f32.e4m3.e4m3", WGMMA_D16, "%16, %17, p, 1, 1", "%18",
             WGMMA_F16(0))
#undef DENALI_WGMMA

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Pins accumulator registers at this point of the program, so the compiler neither reads them
// before a wgmma_wait nor moves their initialisation past a wgmma.
template <int R>
__device__ __forceinline__ void pin_registers(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Whether any of this thread's warpgroup's 64 rows of a tile starting at row m0 lies within M
// (uniform across the warpgroup).
__device__ __forceinline__ bool rows_in_m(int m0, int M) { return m0 + (threadIdx.x >> 7) * 64 < M; }

// Writes one warpgroup's m64nBN accumulators as bf16, each first scaled by its row's x scale and
// its column's weight scale where SCALED (FP8). Layout: thread (warp v of the warpgroup, lane l)
// holds, for each 8-column slice j, rows 16 v + l / 4 and + 8 at columns 8 j + 2 (l % 4) and + 1,
// in acc[4 j .. 4 j + 3].
template <int BN, bool SCALED>
__device__ __forceinline__ void store_accumulators(uint16_t* __restrict__ out,
                                                   const float (&acc)[BN / 2], int row0, int n0,
                                                   int M, int N, const float* __restrict__ xScales,
                                                   const float* __restrict__ wScales) {
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  const int rowBase = row0 + warp * 16 + (lane >> 2);
  const bool pairs = (N & 1) == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0;
  float rs[2] = {1.f, 1.f};
  if (SCALED) {
#pragma unroll
    for (int h = 0; h < 2; ++h) rs[h] = rowBase + 8 * h < M ? xScales[rowBase + 8 * h] : 0.f;
  }
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + j * 8 + 2 * (lane & 3);
    float cs0 = 1.f, cs1 = 1.f;
    if (SCALED) {
      cs0 = col < N ? wScales[col] : 0.f;
      cs1 = col + 1 < N ? wScales[col + 1] : 0.f;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = rowBase + 8 * h;
      const float lo = acc[4 * j + 2 * h], hi = acc[4 * j + 2 * h + 1];
      if (row < M) {
        if (SCALED) store_bf16_pair(out, row, col, N, rs[h] * cs0 * lo, rs[h] * cs1 * hi, pairs);
        else store_bf16_pair(out, row, col, N, lo, hi, pairs);
      }
    }
  }
}

// One k tile's four wgmmas for a warpgroup: A rows at `a`, B rows at `b`, both swizzled tiles;
// with `fresh` the first one overwrites acc instead of adding to it.
template <int BN, bool FP8>
__device__ __forceinline__ void wgmma_tile(float (&acc)[BN / 2], uint32_t a, uint32_t b,
                                           bool fresh) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    // 32 bytes further along every (swizzled) row: the hardware applies the XOR to the final
    // address, so the start address just moves by 32.
    wgmma_k32b<BN, FP8>(acc, smem_desc(a + kk * 32), smem_desc(b + kk * 32), kk > 0 || !fresh);
  }
  wgmma_commit();
}

// One output tile's k tiles [kFirst, kFirst + kTiles) into `acc` (zeroed here): the pipelined
// main loop, with x's 128 rows from m0 as wgmma's A operand and w's BN rows from n0 as its B
// (the swapped-operand GEMMs pass W as x and x as w). With FP8, x and W are E4M3 codes read as
// pairs of bytes: K counts those pairs (half the codes), so a tile's 64 "elements" are 128 codes
// and every copy and offset is the bf16 one. Hopper's FP8 wgmma accumulates with less than fp32's
// precision (a whole-K sum in its accumulators missed the CPU's by 1-13% on an H200,
// bench/results/2026-12-06-s9-w8a8-awq-h200.md), so each 128-k tile's sum is added into fp32
// registers and the accumulators restart from zero, as cuBLASLt does without fast accumulation:
// one wait per tile (each tile's first wgmma overwrites the accumulators), and twice the
// accumulator registers (hence no 128×256 FP8 tile). Ends with every copy and wgmma of this block
// retired, so the caller may reuse the ring once all threads are past it.
template <int BN, int STAGES, bool FP8>
__device__ __forceinline__ void wgmma_mainloop(float (&acc)[BN / 2], const uint16_t* __restrict__ x,
                                               const uint16_t* __restrict__ w, int M, int N,
                                               int K, int m0, int n0, int kFirst, int kTiles) {
  constexpr int BM = 128, BK = 64;
  constexpr int A_BYTES = BM * BK * 2, STAGE_BYTES = (BM + BN) * BK * 2;
  // The swizzle acts on absolute address bits, so stages start on 1024-byte boundaries (the
  // launch asks for 1 KiB more than the ring needs).
  const uint32_t base = (smem_addr(wgmma_smem) + 1023u) & ~1023u;
  const int warpgroup = threadIdx.x >> 7;

  auto copy_stage = [&](int kt) {
    const uint32_t a = base + (kt % STAGES) * STAGE_BYTES;
    load_tile<BM, 256>(a, x, m0, M, (kFirst + kt) * BK, K);
    load_tile<BN, 256>(a + A_BYTES, w, n0, N, (kFirst + kt) * BK, K);
  };

  float total[FP8 ? BN / 2 : 1];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
#pragma unroll
  for (int i = 0; i < (FP8 ? BN / 2 : 1); ++i) total[i] = 0.f;
  pin_registers(acc);

#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < kTiles) copy_stage(s);
    cp_async_commit();
  }

  for (int kt = 0; kt < kTiles; ++kt) {
    // Groups committed so far: tiles 0 .. kt + STAGES - 3; tile kt is done when at most
    // STAGES - 3 are pending.
    cp_async_wait<STAGES - 3>();
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();

    // Both warpgroups issue their wgmmas even where one holds only rows past M (zeros): a wgmma
    // under a branch ptxas cannot prove warpgroup-uniform makes it serialize every wgmma of the
    // kernel (C7518), which cost more than the idle warpgroup's multiplies save. Decode batches
    // of 17-64 rows run the swapped-operand kernels, which have no such padding. FP8 starts each
    // tile's sum afresh (scale-d off on its first wgmma), so promoting it needs no zeroing.
    const uint32_t stage = base + (kt % STAGES) * STAGE_BYTES;
    wgmma_tile<BN, FP8>(acc, stage + warpgroup * (64 * 128), stage + A_BYTES, FP8);
    // The next copies are issued while the tensor cores work on tile kt. Their slot held tile
    // kt - 2, whose wgmmas every warpgroup retired before the barrier above.
    const int next = kt + STAGES - 2;
    if (next < kTiles) copy_stage(next);
    cp_async_commit();
    if constexpr (FP8) {
      wgmma_wait<0>();
      pin_registers(acc);
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) total[i] += acc[i];
      pin_registers(acc);
    } else {
      wgmma_wait<1>();
      pin_registers(acc);
    }
  }
  wgmma_wait<0>();
  pin_registers(acc);
  cp_async_wait<0>();
  if constexpr (FP8) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = total[i];
  }
}

// A block's fp32 accumulators to or from a partials slot of BM × BN floats: register i of thread
// t lives at float (i / 4) · 1024 + 4 t + i % 4, so every access is a coalesced float4. A
// warpgroup whose 64 rows all lie past M (rows_in_m false) holds zeros that no store will use: it
// neither writes nor reads its half, which halves the split-K traffic of M <= 64.
template <int BN>
__device__ __forceinline__ void store_partial(float* __restrict__ slot, const float (&acc)[BN / 2],
                                              bool active) {
  if (!active) return;
  float4* mine = reinterpret_cast<float4*>(slot);
#pragma unroll
  for (int i = 0; i < BN / 8; ++i) {
    mine[i * 256 + threadIdx.x] = make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
  }
}
template <int BN>
__device__ __forceinline__ void add_partial(float (&acc)[BN / 2], const float* __restrict__ slot,
                                            bool active) {
  if (!active) return;
  const float4* p = reinterpret_cast<const float4*>(slot);
#pragma unroll
  for (int i = 0; i < BN / 8; ++i) {
    const float4 v = denali_ld_l2(p + i * 256 + threadIdx.x);
    acc[4 * i] += v.x;
    acc[4 * i + 1] += v.y;
    acc[4 * i + 2] += v.z;
    acc[4 * i + 3] += v.w;
  }
}

// Split-K's reduction for the block holding slice `slice` of tile `pid` (kSplit > 1): stores its
// accumulators to its slot of 128 · BN floats and takes a ticket; the block that takes the
// tile's last ticket sums every slice in slice order (its own read back, so the result does not
// depend on which block finished last), resets the counter and returns true: it alone stores.
// With kSplit = 1 the block stores its own accumulators.
template <int BN>
__device__ __forceinline__ bool sum_split_k(float (&acc)[BN / 2], float* __restrict__ partials,
                                            uint32_t* __restrict__ counters, int pid, int slice,
                                            int kSplit, bool active) {
  if (kSplit <= 1) return true;
  constexpr int SLOT = 128 * BN;
  store_partial<BN>(partials + static_cast<size_t>(pid * kSplit + slice) * SLOT, acc, active);
  if (!last_arrival(&counters[pid], kSplit)) return false;
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
  for (int other = 0; other < kSplit; ++other) {
    add_partial<BN>(acc, partials + static_cast<size_t>(pid * kSplit + other) * SLOT, active);
  }
  if (threadIdx.x == 0) counters[pid] = 0;
  return true;
}

// A split-K GEMM block's share of one output tile, as both layouts run it: a = the 128-row
// operand (R rows), b = the BN-row one (C rows), tiles walked in tile_origin's order, kSplit
// blocks a tile each over a contiguous run of k tiles. Runs the main loop into `acc`, sets
// `origin` to the tile's first (a row, b row), and returns whether this block stores the tile
// (kSplit = 1, or the last of the tile's blocks to arrive, holding the summed slices).
template <int BN, int STAGES, bool FP8>
__device__ __forceinline__ bool gemm_split_tile(float (&acc)[BN / 2], int2& origin,
                                                const uint16_t* __restrict__ a,
                                                const uint16_t* __restrict__ b, int R, int C,
                                                int K, int kSplit, float* __restrict__ partials,
                                                uint32_t* __restrict__ counters) {
  constexpr int BM = 128, BK = 64;
  const int tiles = ((R + BM - 1) / BM) * ((C + BN - 1) / BN);
  const int pid = blockIdx.x % tiles, slice = blockIdx.x / tiles;
  origin = tile_origin<BM, BN>(pid, R, C);
  // This block's k tiles: [kFirst, kFirst + kTiles) of the whole row's.
  const int perSlice = ((K + BK - 1) / BK + kSplit - 1) / kSplit;
  const int kFirst = slice * perSlice;
  const int kTiles = max(0, min(perSlice, (K + BK - 1) / BK - kFirst));
  wgmma_mainloop<BN, STAGES, FP8>(acc, a, b, R, C, K, origin.x, origin.y, kFirst, kTiles);
  return sum_split_k<BN>(acc, partials, counters, pid, slice, kSplit, rows_in_m(origin.x, R));
}

// The GEMM, split over K in kSplit slices (kSplit = 1: a tile a block); the epilogue scales by
// xScales[row] · wScales[col] with FP8.
template <int BN, int STAGES, bool FP8>
__device__ __forceinline__ void gemm_wgmma(uint16_t* __restrict__ out,
                                           const uint16_t* __restrict__ x,
                                           const uint16_t* __restrict__ w, int M, int N, int K,
                                           int kSplit, float* __restrict__ partials,
                                           uint32_t* __restrict__ counters,
                                           const float* __restrict__ xScales,
                                           const float* __restrict__ wScales) {
  float acc[BN / 2];
  int2 origin;
  if (!gemm_split_tile<BN, STAGES, FP8>(acc, origin, x, w, M, N, K, kSplit, partials, counters)) {
    return;
  }
  store_accumulators<BN, FP8>(out, acc, origin.x + (threadIdx.x >> 7) * 64, origin.y, M, N,
                              xScales, wScales);
}

// Writes one warpgroup's m64nBX accumulators of outᵀ (rows: the 64 W rows from n0, columns: the
// BX tokens from m0) into the row-major out[M, N], as bf16. A thread holds W rows n0 + 16 v + l / 4
// and + 8 at tokens m0 + 8 j + 2 (l % 4) and + 1 (store_accumulators' layout, transposed); lanes
// l and l ^ 4 hold adjacent W rows of the same tokens, so one shuffle gives each lane a pair of
// adjacent columns of one output row: the even lane the first token, the odd lane the second.
template <int BX, bool SCALED>
__device__ __forceinline__ void store_transposed(uint16_t* __restrict__ out,
                                                 const float (&acc)[BX / 2], int n0, int m0,
                                                 int M, int N, const float* __restrict__ xScales,
                                                 const float* __restrict__ wScales) {
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  const bool odd = (lane >> 2) & 1;
  // The pair's first W row: this lane's own row, or its partner's (one lower) for an odd lane.
  const int colBase = n0 + warp * 16 + ((lane >> 2) & ~1);
  const bool pairs = (N & 1) == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0;
  float cs[2][2] = {{1.f, 1.f}, {1.f, 1.f}};  // the weight scales of the pair's columns, per h
  if (SCALED) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int col = colBase + 8 * h + c;
        cs[h][c] = col < N ? wScales[col] : 0.f;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < BX / 8; ++j) {
    const int token = m0 + j * 8 + 2 * (lane & 3) + (odd ? 1 : 0);
    const float rs = SCALED ? (token < M ? xScales[token] : 0.f) : 1.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float first = acc[4 * j + 2 * h], second = acc[4 * j + 2 * h + 1];
      // Every lane shuffles (no divergence before it): the even lane sends its second token's
      // value and keeps its first, the odd lane the reverse.
      const float theirs = __shfl_xor_sync(0xffffffffu, odd ? first : second, 4);
      const float lo = odd ? theirs : first, hi = odd ? second : theirs;
      if (token < M) {
        store_bf16_pair(out, token, colBase + 8 * h, N, rs * cs[h][0] * lo, rs * cs[h][1] * hi,
                        pairs);
      }
    }
  }
}

// The GEMM with swapped operands, outᵀ[N, M] = W · xᵀ, split over K in kSplit slices as
// gemm_wgmma: block tile 128 W rows × BX tokens × 64 k, gemm_split_tile with W as the 128-row
// operand (two warpgroups of 64 W rows) and x as the BX-row one, W row tiles walked first.
// With FP8, K counts pairs of E4M3 codes and the epilogue scales as gemm_wgmma's.
template <int BX, int STAGES, bool FP8>
__device__ __forceinline__ void gemm_wgmma_swap(uint16_t* __restrict__ out,
                                                const uint16_t* __restrict__ x,
                                                const uint16_t* __restrict__ w, int M, int N,
                                                int K, int kSplit, float* __restrict__ partials,
                                                uint32_t* __restrict__ counters,
                                                const float* __restrict__ xScales,
                                                const float* __restrict__ wScales) {
  float acc[BX / 2];
  int2 origin;  // (first W row, first token)
  if (!gemm_split_tile<BX, STAGES, FP8>(acc, origin, w, x, N, M, K, kSplit, partials, counters)) {
    return;
  }
  store_transposed<BX, FP8>(out, acc, origin.x + (threadIdx.x >> 7) * 64, origin.y, M, N, xScales,
                            wScales);
}

// The block whose share of the stream-K iteration space holds iteration i: shares are
// [floor(c · T / G), floor((c + 1) · T / G)), so it is the largest c with c · T < (i + 1) · G.
__device__ __forceinline__ int sk_block_of(long long i, long long total, int blocks) {
  return static_cast<int>(((i + 1) * blocks - 1) / total);
}
__device__ __forceinline__ long long sk_begin(int c, long long total, int blocks) {
  return static_cast<long long>(c) * total / blocks;
}

// Stream-K: the tiles' k iterations, tile after tile, cut into gridDim.x equal shares, one a
// block, so every block does the same work whatever the tile count (a tile-per-block grid of 224
// tiles on 132 SMs runs two waves, the second 70% full). A tile a block covers whole is stored
// directly; a tile cut between blocks is summed through `partials`: each block writes its share
// to one of its two slots (2c for the first tile of its range, 2c + 1 for the last), takes a
// ticket, and the last of the tile's blocks adds every share in block order (its own read back,
// so the result does not depend on arrival order) and stores the tile. No block ever waits for
// another. Needs 2 · gridDim.x slots of 128 · BN floats and one zeroed counter per tile.
template <int BN, int STAGES>
__device__ __forceinline__ void gemm_wgmma_sk(uint16_t* __restrict__ out,
                                              const uint16_t* __restrict__ x,
                                              const uint16_t* __restrict__ w, int M, int N, int K,
                                              float* __restrict__ partials,
                                              uint32_t* __restrict__ counters) {
  constexpr int BM = 128, BK = 64, SLOT = BM * BN;
  const int kt = (K + BK - 1) / BK;
  const long long total = static_cast<long long>((M + BM - 1) / BM) * ((N + BN - 1) / BN) * kt;
  const int blocks = gridDim.x, c = blockIdx.x;
  const long long begin = sk_begin(c, total, blocks), end = sk_begin(c + 1, total, blocks);
  for (long long it = begin; it < end;) {
    const int tile = static_cast<int>(it / kt), k0 = static_cast<int>(it % kt);
    const int k1 = static_cast<int>(min(static_cast<long long>(kt), k0 + (end - it)));
    const int2 origin = tile_origin<BM, BN>(tile, M, N);
    __syncthreads();  // every thread is done with the ring (and `last`) of the previous tile
    float acc[BN / 2];
    wgmma_mainloop<BN, STAGES, false>(acc, x, w, M, N, K, origin.x, origin.y, k0, k1 - k0);
    bool store = k0 == 0 && k1 == kt;
    if (!store) {
      const bool active = rows_in_m(origin.x, M);
      store_partial<BN>(partials + static_cast<size_t>(2 * c + (it == begin ? 0 : 1)) * SLOT, acc,
                        active);
      const long long first = static_cast<long long>(tile) * kt;
      const int from = sk_block_of(first, total, blocks);
      const int to = sk_block_of(first + kt - 1, total, blocks);
      if (last_arrival(&counters[tile], to - from + 1)) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
        for (int other = from; other <= to; ++other) {
          // The tile is other's first unless other's range begins in an earlier tile.
          const bool firstOfOther = sk_begin(other, total, blocks) / kt == tile;
          add_partial<BN>(acc, partials + static_cast<size_t>(2 * other + (firstOfOther ? 0 : 1)) * SLOT,
                          active);
        }
        if (threadIdx.x == 0) counters[tile] = 0;
        store = true;
      }
    }
    if (store) {
      store_accumulators<BN, false>(out, acc, origin.x + (threadIdx.x >> 7) * 64, origin.y, M, N,
                                    nullptr, nullptr);
    }
    it += k1 - k0;
  }
}

extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_128x256(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_128x128(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_fp8_128x128(uint16_t*, const uint8_t*, const uint8_t*, const float*, const float*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_sk_128x256(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_sk_128x128(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 2) linear_wgmma_swap_128x64(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 2) linear_wgmma_swap_128x32(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 2) linear_wgmma_fp8_swap_128x64(uint16_t*, const uint8_t*, const uint8_t*, const float*, const float*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 2) linear_wgmma_fp8_swap_128x32(uint16_t*, const uint8_t*, const uint8_t*, const float*, const float*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
// GEMM (gemm_wgmma or gemm_wgmma_swap) on bf16 x and W, or on E4M3 codes read as pairs of bytes
// (K counts the pairs) with their scales.
#define WGMMA_BODY(GEMM, TILE, STAGES) \
  GEMM<TILE, STAGES, false>(out, x, w, M, N, K, kSplit, partials, counters, nullptr, nullptr)
#define WGMMA_FP8_BODY(GEMM, TILE, STAGES)                                                       \
  GEMM<TILE, STAGES, true>(out, reinterpret_cast<const uint16_t*>(x),                           \
                           reinterpret_cast<const uint16_t*>(w), M, N, K / 2, kSplit, partials, \
                           counters, xScales, wScales)
#define WGMMA_SK_BODY(BN, STAGES) \
  ((void)kSplit, gemm_wgmma_sk<BN, STAGES>(out, x, w, M, N, K, partials, counters))
#else
#define WGMMA_BODY(GEMM, TILE, STAGES) denali_trap()  // only the sm_90a image has wgmma
#define WGMMA_FP8_BODY(GEMM, TILE, STAGES) denali_trap()
#define WGMMA_SK_BODY(BN, STAGES) denali_trap()
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// 256 threads; 4 stages: 4 · (128 + 256) · 64 · 2 + 1024 = 197632 bytes of dynamic shared
// memory; 1-D grid of kSplit · ceil(M / 128) · ceil(N / 256) blocks. With kSplit > 1, partials
// holds kSplit · tiles · 128 · 256 floats and counters one zeroed word per tile.
extern "C" __global__ void linear_wgmma_128x256(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(gemm_wgmma, 256, 4);
}

// 256 threads; 6 stages: 6 · (128 + 128) · 64 · 2 + 1024 = 197632 bytes of dynamic shared
// memory; 1-D grid of kSplit · ceil(M / 128) · ceil(N / 128) blocks; partials and counters as
// above with 128 · 128 floats a slot.
extern "C" __global__ void linear_wgmma_128x128(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(gemm_wgmma, 128, 6);
}

// The W8A8 form (FP8 E4M3 x and W, K % 16 == 0, 16-byte-aligned codes): out[m, n] =
// bf16(xScales[m] · wScales[n] · Σ_k e4m3(x[m, k]) · e4m3(W[n, k])). Tiles of 128 codes of k,
// each tile's sum promoted to fp32 (above); otherwise launched exactly as linear_wgmma_128x128
// (threads, shared memory, grid, split-K scratch).
extern "C" __global__ void linear_wgmma_fp8_128x128(uint16_t* out, const uint8_t* x, const uint8_t* w, const float* xScales, const float* wScales, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_FP8_BODY(gemm_wgmma, 128, 6);
}

// Stream-K forms of the two bf16 GEMMs (gemm_wgmma_sk): threads and shared memory as above; a
// 1-D grid of G blocks (at most one an SM is the intent, and G <= the shape's k iterations),
// partials of 2 · G · 128 · BN floats and one zeroed counter per tile, ceil(M / 128) ·
// ceil(N / BN) of them. kSplit is unused (the host passes 1): the signature is the data-parallel
// form's, so one launcher call serves both.
extern "C" __global__ void linear_wgmma_sk_128x256(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_SK_BODY(256, 4);
}
extern "C" __global__ void linear_wgmma_sk_128x128(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_SK_BODY(128, 6);
}

// The swapped-operand GEMMs (gemm_wgmma_swap): 256 threads, two blocks an SM; 128 W rows × 64 or
// 32 tokens a tile. Dynamic shared memory: 4 · (128 + 64) · 64 · 2 + 1024 = 99328 bytes (128x64),
// 5 · (128 + 32) · 64 · 2 + 1024 = 103424 (128x32). 1-D grid of kSplit · ceil(N / 128) ·
// ceil(M / BX) blocks; with kSplit > 1, partials holds kSplit · tiles · 128 · BX floats and
// counters one zeroed word per tile.
extern "C" __global__ void linear_wgmma_swap_128x64(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(gemm_wgmma_swap, 64, 4);
}
extern "C" __global__ void linear_wgmma_swap_128x32(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(gemm_wgmma_swap, 32, 5);
}

// The W8A8 forms of the swapped-operand GEMMs (FP8 E4M3 x and W, K % 16 == 0, 16-byte-aligned
// codes, scales as linear_wgmma_fp8_128x128): each 128-code k tile's sum promoted to fp32, so
// twice the accumulator registers; otherwise launched exactly as linear_wgmma_swap_128x{64,32}.
extern "C" __global__ void linear_wgmma_fp8_swap_128x64(uint16_t* out, const uint8_t* x, const uint8_t* w, const float* xScales, const float* wScales, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_FP8_BODY(gemm_wgmma_swap, 64, 4);
}
extern "C" __global__ void linear_wgmma_fp8_swap_128x32(uint16_t* out, const uint8_t* x, const uint8_t* w, const float* xScales, const float* wScales, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_FP8_BODY(gemm_wgmma_swap, 32, 5);
}
