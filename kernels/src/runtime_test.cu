// Test kernels for the Denali CUDA runtime (param marshalling, launches, graphs, events)
// and the kernel-launch benchmark.
//
// Conventions relied on by kernels/build.ts (it maps parameter types by regex):
//   - each kernel's whole signature (extern "C", __global__, name, params, opening brace) is
//     on ONE line (not spelled out here so a regex scan cannot match this comment);
//   - parameter types are spelled exactly int32_t, uint32_t, int64_t, uint64_t, float,
//     f16_bits / bf16_bits (raw 16-bit patterns, see compat.h) or a pointer `T*`.
#include "compat.h"
#include "pdl.h"

// Writes every scalar argument back verbatim so the host can check the marshalling of each
// launcher param type bit-for-bit. Layout of `out` (32 bytes, little-endian, naturally aligned):
//   off  0: int32_t  i32v
//   off  4: uint32_t u32v
//   off  8: int64_t  i64v
//   off 16: uint64_t u64v
//   off 24: float    f32v
//   off 28: uint16_t f16bits
//   off 30: uint16_t bf16bits
// `out` must be at least 8-byte aligned (any cuMemAlloc pointer is).
extern "C" __global__ void echo_params(uint8_t* out, int32_t i32v, uint32_t u32v, int64_t i64v, uint64_t u64v, float f32v, f16_bits f16bits, bf16_bits bf16bits) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  *reinterpret_cast<int32_t*>(out + 0) = i32v;
  *reinterpret_cast<uint32_t*>(out + 4) = u32v;
  *reinterpret_cast<int64_t*>(out + 8) = i64v;
  *reinterpret_cast<uint64_t*>(out + 16) = u64v;
  *reinterpret_cast<float*>(out + 24) = f32v;
  *reinterpret_cast<uint16_t*>(out + 28) = f16bits;
  *reinterpret_cast<uint16_t*>(out + 30) = bf16bits;
}

// c = a + b. Grid-stride so any grid size is correct (tests may launch fewer blocks than n/block).
extern "C" __global__ void vec_add_f32(const float* a, const float* b, float* c, uint32_t n) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    c[i] = a[i] + b[i];
  }
}

// The same sum, specialised as Triton would: every pointer 16-byte aligned and n divisible by 16
// (so n/4 float4 loads cover it exactly). The launcher picks it through its variant key.
// variant-of vec_add_f32: a=aligned16 b=aligned16 c=aligned16 n=div16
extern "C" __global__ void vec_add_f32_a16_n16(const float* a, const float* b, float* c, uint32_t n) {
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* c4 = reinterpret_cast<float4*>(c);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n / 4; i += gridDim.x * blockDim.x) {
    const float4 x = a4[i], y = b4[i];
    c4[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

// x = x * alpha + beta, in place. In-place + affine means k graph replays have a closed form
// (x_k = alpha^k x_0 + beta (alpha^k - 1)/(alpha - 1)), so replay counts are observable.
extern "C" __global__ void scale_add_f32(float* x, float alpha, float beta, uint32_t n) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    x[i] = x[i] * alpha + beta;
  }
}

// Busy-waits ~ns nanoseconds of wall time, giving event-timing tests a known lower bound.
// %globaltimer is a ns wall clock (independent of SM clock frequency, unlike clock64()).
extern "C" __global__ void spin_ns(uint64_t ns) {
  const uint64_t start = denali_wall_ns();
  while (denali_wall_ns() - start < ns) {
  }
}

// Launch-overhead benchmark kernel: 8 params of mixed kinds, (almost) no device work, so the
// measured time is host-side launch cost. The benchmark passes n >= 0, so the branch is never
// taken, but it keeps every param live so the compiler cannot drop them.
extern "C" __global__ void args8(float* a, float* b, float* c, float* d, int32_t n, int32_t m, float x, float y) {
  if (n < 0) a[0] = b[0] + c[0] * d[0] + x * y + (float)m;
}

// The read-only reference of the kernel benchmarks: what a kernel that only reads `totalChunks`
// 16-byte chunks once per call reaches, timed like the kernels under test. Launched
// programmatically, it reads the way the GEMVs read weights (every load issued before pdl_wait,
// skipping L1, asking L2 for 256-byte spans) and does next to nothing after: one checksum per
// block, one store. 256 threads; chunksPerBlock = 256 · n, n in 1..16 (n loads a thread); grid
// ceil(totalChunks / chunksPerBlock).
DENALI_LD16(ld_read_only, ".nc.L1::no_allocate.L2::256B")

extern "C" __global__ void stream_read(float* out, const uint16_t* src, int32_t chunksPerBlock, int32_t totalChunks) {
  pdl_launch_dependents();
  const int first = blockIdx.x * chunksPerBlock;
  const int perThread = chunksPerBlock / static_cast<int>(blockDim.x);
  const bool whole = first + chunksPerBlock <= totalChunks;  // all but a partial last block
  const uint4* p = reinterpret_cast<const uint4*>(src) + first + threadIdx.x;
  uint4 v[16];
#pragma unroll
  for (int i = 0; i < 16; i++) {
    const int c = first + static_cast<int>(threadIdx.x) + i * static_cast<int>(blockDim.x);
    v[i] = i < perThread && (whole || c < totalChunks) ? ld_read_only(p + i * blockDim.x)
                                                       : make_uint4(0u, 0u, 0u, 0u);
  }
  pdl_wait();
  uint32_t bits = 0;
#pragma unroll
  for (int i = 0; i < 16; i++) bits ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  // One word a block depends on every load, so none can be dropped.
  __shared__ uint32_t red[32];
  for (int off = 16; off >= 1; off >>= 1) {
#ifdef DENALI_HIP
    bits ^= __shfl_xor(bits, off);  // within each 32-lane half of a 64-lane wavefront
#else
    bits ^= __shfl_xor_sync(0xffffffffu, bits, off);
#endif
  }
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = bits;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); w++) bits ^= red[w];
    out[blockIdx.x] = __uint_as_float(bits & 0x3fffffffu);
  }
}
