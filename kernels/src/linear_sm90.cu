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
// barrier (after which every warpgroup has also retired tile kt - 2's wgmmas), start copying tile
// kt + STAGES - 2 into the slot tile kt - 2 used, issue tile kt's four wgmmas, and wait until at
// most one batch (tile kt's) is in flight.
//
// Split-K: with kSplit > 1 the grid has kSplit blocks per output tile, each over a contiguous
// run of k tiles. Each block stores its fp32 accumulators to `partials` (slot tile · kSplit +
// slice, in register order, so every access is a coalesced float4), fences, and takes a ticket
// from counters[tile]; the block that takes the last ticket sums all kSplit slots in slice order
// (its own read back too, so the result does not depend on which block finished last), writes
// the bf16 tile and resets the counter to zero for the next call (so the counters, zeroed once
// when allocated, survive graph replays). Small shapes with long K then fill the GPU.
#include "compat.h"
#include "gemm_tiles.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

extern __shared__ __align__(1024) uint8_t wgmma_smem[];

// Shared-memory matrix descriptor of a K-major, 128-byte-swizzled operand whose 8-row groups sit
// 1024 bytes apart: start address >> 4 (bits 0-13), leading offset 16 bytes (unused by K-major
// swizzled layouts, 1 by convention), stride offset 1024 >> 4 (bits 32-45), SWIZZLE_128B (bit 62).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// d[0..128) += A(64×16, descriptor da) · B(256×16, descriptor db)ᵀ, both K-major.
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, 1, 1, 1, 0, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db));
}

// d[0..64) += A(64×16, descriptor da) · B(128×16, descriptor db)ᵀ, both K-major.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, 1, 1, 1, 0, 0;"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db));
}

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

template <int BN>
__device__ __forceinline__ void wgmma_k16(float (&d)[BN / 2], uint64_t da, uint64_t db);
template <>
__device__ __forceinline__ void wgmma_k16<256>(float (&d)[128], uint64_t da, uint64_t db) {
  wgmma_m64n256k16(d, da, db);
}
template <>
__device__ __forceinline__ void wgmma_k16<128>(float (&d)[64], uint64_t da, uint64_t db) {
  wgmma_m64n128k16(d, da, db);
}

// Writes one warpgroup's m64nBN accumulators as bf16. Layout: thread (warp v of the warpgroup,
// lane l) holds, for each 8-column slice j, rows 16 v + l / 4 and + 8 at columns 8 j + 2 (l % 4)
// and + 1, in acc[4 j .. 4 j + 3].
template <int BN>
__device__ __forceinline__ void store_accumulators(uint16_t* __restrict__ out,
                                                   const float (&acc)[BN / 2], int row0, int n0,
                                                   int M, int N) {
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  const int rowBase = row0 + warp * 16 + (lane >> 2);
  const bool pairs = (N & 1) == 0 && (reinterpret_cast<uintptr_t>(out) & 3) == 0;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + j * 8 + 2 * (lane & 3);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = rowBase + 8 * h;
      if (row < M) store_bf16_pair(out, row, col, N, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], pairs);
    }
  }
}

// One k tile's four wgmmas for a warpgroup: A rows at `a`, B rows at `b`, both swizzled tiles.
template <int BN>
__device__ __forceinline__ void wgmma_tile(float (&acc)[BN / 2], uint32_t a, uint32_t b) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    // 16 k = 32 bytes further along every (swizzled) row: the hardware applies the XOR to the
    // final address, so the start address just moves by 32.
    wgmma_k16<BN>(acc, smem_desc(a + kk * 32), smem_desc(b + kk * 32));
  }
  wgmma_commit();
}

template <int BN, int STAGES>
__device__ __forceinline__ void gemm_wgmma(uint16_t* __restrict__ out,
                                           const uint16_t* __restrict__ x,
                                           const uint16_t* __restrict__ w, int M, int N, int K,
                                           int kSplit, float* __restrict__ partials,
                                           uint32_t* __restrict__ counters) {
  constexpr int BM = 128, BK = 64;
  constexpr int A_BYTES = BM * BK * 2, STAGE_BYTES = (BM + BN) * BK * 2;
  const int tiles = ((M + BM - 1) / BM) * ((N + BN - 1) / BN);
  const int pid = blockIdx.x % tiles, slice = blockIdx.x / tiles;
  const int2 origin = tile_origin<BM, BN>(pid, M, N);
  const int m0 = origin.x, n0 = origin.y;

  // The swizzle acts on absolute address bits, so stages start on 1024-byte boundaries (the
  // launch asks for 1 KiB more than the ring needs).
  const uint32_t base = (smem_addr(wgmma_smem) + 1023u) & ~1023u;
  const int warpgroup = threadIdx.x >> 7;
  // This block's k tiles: [kFirst, kFirst + kTiles) of the whole row's.
  const int perSlice = ((K + BK - 1) / BK + kSplit - 1) / kSplit;
  const int kFirst = slice * perSlice;
  const int kTiles = max(0, min(perSlice, (K + BK - 1) / BK - kFirst));

  auto copy_stage = [&](int kt) {
    const uint32_t a = base + (kt % STAGES) * STAGE_BYTES;
    load_tile<BM, 256>(a, x, m0, M, (kFirst + kt) * BK, K);
    load_tile<BN, 256>(a + A_BYTES, w, n0, N, (kFirst + kt) * BK, K);
  };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
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
    const int next = kt + STAGES - 2;
    if (next < kTiles) copy_stage(next);
    cp_async_commit();

    const uint32_t stage = base + (kt % STAGES) * STAGE_BYTES;
    wgmma_tile<BN>(acc, stage + warpgroup * (64 * 128), stage + A_BYTES);
    wgmma_wait<1>();
    pin_registers(acc);
  }
  wgmma_wait<0>();
  pin_registers(acc);
  cp_async_wait<0>();

  if (kSplit > 1) {
    // Register i of thread t lives at float (i / 4) · 1024 + 4 t + i % 4 of a slice's slot.
    constexpr int SLOT = BM * BN;
    float4* mine = reinterpret_cast<float4*>(partials + static_cast<size_t>(pid * kSplit + slice) * SLOT);
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
      mine[i * 256 + threadIdx.x] = make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
    }
    __threadfence();
    __syncthreads();
    __shared__ int last;
    if (threadIdx.x == 0) last = atomicAdd(&counters[pid], 1u) == static_cast<uint32_t>(kSplit - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Sum the slices in slice order (this block's own included, read back), so the result does
    // not depend on which block finished last.
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    for (int other = 0; other < kSplit; ++other) {
      const float4* p = reinterpret_cast<const float4*>(partials + static_cast<size_t>(pid * kSplit + other) * SLOT);
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        const float4 v = __ldcg(p + i * 256 + threadIdx.x);
        acc[4 * i] += v.x;
        acc[4 * i + 1] += v.y;
        acc[4 * i + 2] += v.z;
        acc[4 * i + 3] += v.w;
      }
    }
    if (threadIdx.x == 0) counters[pid] = 0;
  }

  store_accumulators<BN>(out, acc, m0 + warpgroup * 64, n0, M, N);
}

extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_128x256(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
extern "C" __global__ void __launch_bounds__(256, 1) linear_wgmma_128x128(uint16_t*, const uint16_t*, const uint16_t*, int32_t, int32_t, int32_t, int32_t, float*, uint32_t*);
#define WGMMA_BODY(BN, STAGES) gemm_wgmma<BN, STAGES>(out, x, w, M, N, K, kSplit, partials, counters)
#else
#define WGMMA_BODY(BN, STAGES) denali_trap()  // only the sm_90a image has wgmma
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// 256 threads; 4 stages: 4 · (128 + 256) · 64 · 2 + 1024 = 197632 bytes of dynamic shared
// memory; 1-D grid of kSplit · ceil(M / 128) · ceil(N / 256) blocks. With kSplit > 1, partials
// holds kSplit · tiles · 128 · 256 floats and counters one zeroed word per tile.
extern "C" __global__ void linear_wgmma_128x256(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(256, 4);
}

// 256 threads; 6 stages: 6 · (128 + 128) · 64 · 2 + 1024 = 197632 bytes of dynamic shared
// memory; 1-D grid of kSplit · ceil(M / 128) · ceil(N / 128) blocks; partials and counters as
// above with 128 · 128 floats a slot.
extern "C" __global__ void linear_wgmma_128x128(uint16_t* out, const uint16_t* x, const uint16_t* w, int32_t M, int32_t N, int32_t K, int32_t kSplit, float* partials, uint32_t* counters) {
  WGMMA_BODY(128, 6);
}
