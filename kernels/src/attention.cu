// Attention and KV-cache kernels: kv_write (scatter new K/V rows into the paged cache), paged
// decode attention with split-K over the context (flash-decoding) plus its reduce, and causal
// prefill attention over a packed variable-length batch that reads K/V through block tables.
//
// Layouts (ops/ops.ts): the cache of one layer is K and V, each [numBlocks, numKvHeads,
// blockSize, headDim] bf16; token t of a sequence lives in block blockTable[t / blockSize] at
// offset t % blockSize. q/out are [tokens, numHeads, headDim]. blockSize is a power of two.
//
// Softmax runs in the log2 domain: q·k is scaled by scale·log2(e) and exponentiated with exp2f,
// which is the same function as exp(scale·q·k) up to fp32 rounding.
//
// FP8 KV cache (shape.kvDtype "fp8"): the same layout with one-byte E4M3 codes. kv_write_fp8
// stores e4m3(x / scale); the *_fp8_* kernels are the bf16 kernels' bodies instantiated with a
// cache type (KvCache below) that loads half the bytes and widens each code to f32 code · scale.
// Decode does the math after the widening in f32 exactly as for bf16; prefill widens into the
// bf16 shared tiles its portable and tensor-core bodies read (rounding code · scale to bf16,
// exact when the scale is a power of two), as vLLM's FP8 prefill does.
//
// Every kernel's signature sits on one line (kernels/build.ts reads them); the templated bodies
// below are instantiated by thin extern "C" wrappers, one per head dimension / head group size
// (and cache type).
#include "compat.h"
#include "fp8.h"
#include "gemm_tiles.h"
#include "last_arrival.h"
#include "mma.h"
#include "pdl.h"

#define ATTN_THREADS 128
#define ATTN_WARPS 4
// Tokens whose logits a decode block holds in shared memory at once; a longer partition runs
// as several chunks (online softmax across them).
#define DECODE_CHUNK 512
#define LOG2E 1.4426950408889634f

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the kernels.

// 8 bf16 (one 16-byte load) to fp32: the low half of each word is the lower-index element.
__device__ __forceinline__ void unpack8(const uint4 r, float (&f)[8]) {
  f[0] = __uint_as_float(r.x << 16);
  f[1] = __uint_as_float(r.x & 0xffff0000u);
  f[2] = __uint_as_float(r.y << 16);
  f[3] = __uint_as_float(r.y & 0xffff0000u);
  f[4] = __uint_as_float(r.z << 16);
  f[5] = __uint_as_float(r.z & 0xffff0000u);
  f[6] = __uint_as_float(r.w << 16);
  f[7] = __uint_as_float(r.w & 0xffff0000u);
}

__device__ __forceinline__ uint4 load16(const uint16_t* p) {
  return *reinterpret_cast<const uint4*>(p);
}

// load16 through the read-only path: for rows no kernel writes while this one runs (the wait's
// memory clobber keeps the compiler from choosing that path by itself).
__device__ __forceinline__ uint4 load16_nc(const uint16_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ void store16(uint16_t* p, uint4 v) {
  *reinterpret_cast<uint4*>(p) = v;
}

// Element offset of token `t`'s row for KV head `kvh` in a cache. A block id outside the cache
// (a corrupt table) reads block 0 instead of faulting: wrong numbers, but a live context.
__device__ __forceinline__ size_t cache_row(const int32_t* table, int t, int shift, int kvh,
                                            int numKvHeads, int numBlocks, int headDim) {
  int blk = table[t >> shift];
  blk = static_cast<uint32_t>(blk) < static_cast<uint32_t>(numBlocks) ? blk : 0;
  const size_t row = ((static_cast<size_t>(blk) * numKvHeads + kvh) << shift) |
                     static_cast<size_t>(t & ((1 << shift) - 1));
  return row * headDim;
}

__device__ __forceinline__ int log2_pow2(int x) { return __ffs(x) - 1; }

// Asks L2 for the 128-byte line at `p` ahead of its use; a hint only (a no-op under HIP).
__device__ __forceinline__ void prefetch_l2(const void* p) {
#ifndef DENALI_HIP
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
#endif
}

// The two sides of pdl_wait (pdl.h) in decode. A load before the wait may only read what the
// previous kernel cannot be writing; it goes through the read-only path and is volatile, so the
// compiler keeps it before the wait. A load of what that kernel may have written comes after the
// wait, volatile so it stays there, and coherent: .cg reads L2, where those writes land, so not
// even a line an early load brought into L1 can answer it. HIP has no programmatic launch.
DENALI_LD16(ld_early, ".nc")
DENALI_LD16(ld_fresh, ".cg")

// The same two loads, 8 bytes wide: 8 E4M3 codes of an fp8 cache row.
#ifdef DENALI_HIP
#define DENALI_LD8(name, qualifiers)                \
  __device__ __forceinline__ uint2 name(const uint8_t* p) { \
    return *reinterpret_cast<const uint2*>(p);      \
  }
#else
#define DENALI_LD8(name, qualifiers)                                       \
  __device__ __forceinline__ uint2 name(const uint8_t* p) {                \
    uint2 v;                                                               \
    asm volatile("ld.global" qualifiers ".v2.u32 {%0,%1}, [%2];"           \
                 : "=r"(v.x), "=r"(v.y)                                    \
                 : "l"(p));                                                \
    return v;                                                              \
  }
#endif
DENALI_LD8(ld8_early, ".nc")
DENALI_LD8(ld8_fresh, ".cg")

// Two E4M3 codes (the low 16 bits of w, the lower byte first) to their exact f16 pair, the
// lower code in the lower half (every E4M3 value is an f16). On sm_89+ the hardware converts
// the pair in one instruction, where the bit-manipulating e4m3_to_f32 costs several a code: a
// decode step at 16k context converts a code for every byte it reads, so the conversion, not
// memory, bounded the FP8-cache kernels (bench/results/2026-12-06-s10-*).
#ifndef DENALI_HIP
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(const uint32_t w) {
  uint32_t out;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("{\n .reg .b16 a, b;\n mov.b32 {a, b}, %1;\n cvt.rn.f16x2.e4m3x2 %0, a;\n}" : "=r"(out) : "r"(w));
#else
  out = pack_f16x2(e4m3_to_f32(w & 0xffu), e4m3_to_f32((w >> 8) & 0xffu));
#endif
  return out;
}
#endif

// 8 E4M3 codes (the low byte of each word first) to their exact f32 values: through f16 pairs
// on sm_89+ (e4m3 → f16 → f32 is exact both ways).
__device__ __forceinline__ void codes4_to_f32(const uint32_t w, float* f) {
#if !defined(DENALI_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const uint32_t lo = e4m3x2_to_f16x2(w), hi = e4m3x2_to_f16x2(w >> 16);
  asm("{\n .reg .b16 a, b;\n mov.b32 {a, b}, %2;\n cvt.f32.f16 %0, a;\n cvt.f32.f16 %1, b;\n}"
      : "=f"(f[0]), "=f"(f[1])
      : "r"(lo));
  asm("{\n .reg .b16 a, b;\n mov.b32 {a, b}, %2;\n cvt.f32.f16 %0, a;\n cvt.f32.f16 %1, b;\n}"
      : "=f"(f[2]), "=f"(f[3])
      : "r"(hi));
#else
#pragma unroll
  for (int i = 0; i < 4; i++) f[i] = e4m3_to_f32((w >> (8 * i)) & 0xffu);
#endif
}

__device__ __forceinline__ void widen8_fp8(const uint2 r, float (&f)[8]) {
  codes4_to_f32(r.x, f);
  codes4_to_f32(r.y, f + 4);
}

// How a kernel body reads 8 consecutive elements of a cache row (an element offset `at` into
// the cache) and widens them. `Raw` is what a lane holds between the load and the widening: 16
// bytes of bf16, 8 bytes of codes. `widen` gives the cache's values unscaled: decode folds the
// FP8 scales into q (keys) and into the output (values) instead of multiplying every element;
// `bf16x8` (prefill's shared-memory tiles) applies the scale, as the CPU backend does.
template <bool FP8>
struct KvCache;

template <>
struct KvCache<false> {
  using Elem = uint16_t;
  using Raw = uint4;
  static __device__ __forceinline__ Raw zero() { return make_uint4(0u, 0u, 0u, 0u); }
  static __device__ __forceinline__ Raw early(const Elem* p) { return ld_early(p); }
  static __device__ __forceinline__ Raw fresh(const Elem* p) { return ld_fresh(p); }
  static __device__ __forceinline__ Raw readonly(const Elem* p) { return load16_nc(p); }
  static __device__ __forceinline__ Raw plain(const Elem* p) { return load16(p); }
  static __device__ __forceinline__ void widen(const Raw r, float (&f)[8]) { unpack8(r, f); }
  // 8 elements as 8 bf16 (one 16-byte shared-memory row chunk).
  static __device__ __forceinline__ uint4 bf16x8(const Elem* p, float) { return load16(p); }
};

template <>
struct KvCache<true> {
  using Elem = uint8_t;
  using Raw = uint2;
  static __device__ __forceinline__ Raw zero() { return make_uint2(0u, 0u); }
  static __device__ __forceinline__ Raw early(const Elem* p) { return ld8_early(p); }
  static __device__ __forceinline__ Raw fresh(const Elem* p) { return ld8_fresh(p); }
  static __device__ __forceinline__ Raw readonly(const Elem* p) {
    return __ldg(reinterpret_cast<const uint2*>(p));
  }
  static __device__ __forceinline__ Raw plain(const Elem* p) {
    return *reinterpret_cast<const uint2*>(p);
  }
  static __device__ __forceinline__ void widen(const Raw r, float (&f)[8]) { widen8_fp8(r, f); }
  static __device__ __forceinline__ uint4 bf16x8(const Elem* p, float scale) {
    float f[8];
    widen8_fp8(*reinterpret_cast<const uint2*>(p), f);
    return make_uint4(bf16_pack2(f[0] * scale, f[1] * scale), bf16_pack2(f[2] * scale, f[3] * scale),
                      bf16_pack2(f[4] * scale, f[5] * scale), bf16_pack2(f[6] * scale, f[7] * scale));
  }
};

// ---------------------------------------------------------------------------------------------
// kv_write: one block per token, threads over the token's numKvHeads·headDim/8 16-byte chunks.
// A negative slot (padding) writes nothing; so does a slot past the end of the cache.
//
// Programmatic launch (pdl.h): a block waits first, before it reads anything, and only then lets
// the next kernel start. So kv_write's launch overlaps the kernel before it (qkvRope in a decode
// step), while the decode attention after it, which may start early, still starts only once
// everything enqueued before kv_write is complete: the premise of its reads before pdl_wait.

// kv_write into an fp8 cache: code = e4m3(f32(x) / scale) (fp8.h's bf16x8_to_e4m3), the IEEE
// f32 quotient (this file is built without fast math), rounded to nearest even, saturated to
// ±448, NaN kept, as quantizeE4m3 in backends/fp8.ts. Threads over 8-element chunks: a 16-byte
// load of k, an 8-byte store of codes.
//
// The token's slot → (block, offset) addressing of both caches and the 8-element chunk loop,
// shared by the two entry points: FP8 stores e4m3 codes where bf16 copies the chunk as it is.
template <bool FP8>
__device__ __forceinline__ void kv_write_token(void* kCache, void* vCache, const uint16_t* k,
                                               const uint16_t* v, const int32_t* slots,
                                               int numKvHeads, int headDim, int blockSize,
                                               int numBlocks, float kScale, float vScale) {
  pdl_wait();
  pdl_launch_dependents();
  const int token = blockIdx.x;
  const int slot = slots[token];
  if (slot < 0 || slot >= numBlocks * blockSize) return;
  const int shift = log2_pow2(blockSize);
  const int block = slot >> shift;
  const int offset = slot & (blockSize - 1);
  const int chunksPerHead = headDim >> 3;
  const int chunks = numKvHeads * chunksPerHead;
  const size_t src = static_cast<size_t>(token) * numKvHeads * headDim;
  for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
    const int head = c / chunksPerHead;
    const int col = (c - head * chunksPerHead) << 3;
    const size_t dst =
        ((static_cast<size_t>(block) * numKvHeads + head) * blockSize + offset) * headDim + col;
    const size_t from = src + static_cast<size_t>(head) * headDim + col;
    if constexpr (FP8) {
      uint8_t* kc = static_cast<uint8_t*>(kCache);
      uint8_t* vc = static_cast<uint8_t*>(vCache);
      *reinterpret_cast<uint2*>(kc + dst) = bf16x8_to_e4m3(load16(k + from), kScale);
      *reinterpret_cast<uint2*>(vc + dst) = bf16x8_to_e4m3(load16(v + from), vScale);
    } else {
      store16(static_cast<uint16_t*>(kCache) + dst, load16(k + from));
      store16(static_cast<uint16_t*>(vCache) + dst, load16(v + from));
    }
  }
}

extern "C" __global__ void kv_write(uint16_t* kCache, uint16_t* vCache, const uint16_t* k, const uint16_t* v, const int32_t* slots, int32_t numKvHeads, int32_t headDim, int32_t blockSize, int32_t numBlocks) {
  kv_write_token<false>(kCache, vCache, k, v, slots, numKvHeads, headDim, blockSize, numBlocks, 1.f, 1.f);
}

extern "C" __global__ void kv_write_fp8(uint8_t* kCache, uint8_t* vCache, const uint16_t* k, const uint16_t* v, const int32_t* slots, int32_t numKvHeads, int32_t headDim, int32_t blockSize, int32_t numBlocks, float kScale, float vScale) {
  kv_write_token<true>(kCache, vCache, k, v, slots, numKvHeads, headDim, blockSize, numBlocks, kScale, vScale);
}

// ---------------------------------------------------------------------------------------------
// Decode attention, split-K. Block (partition, kvHead·chunks + chunk, sequence) serves GT query
// heads of one KV head (GT = the head-group size rounded up to 1, 2, 4 or 8; groups over 8 run as
// several chunks) over tokens [partition·partSize, +partSize) of the context, reading each K and
// V row once for all GT heads.
//
// Threads form groups of T = D/8 lanes; a group holds one token row, one 16-byte load per lane.
// A partition runs in chunks of DECODE_CHUNK rows (one chunk unless a block takes a whole long
// sequence, ops/gpu/attention.ts decodePartSize), each in three phases:
// Phase 1: q·k for GT heads, reduced across the T lanes with a reduce-scatter butterfly (GT-1
// exchanges plus log2(T/GT), instead of GT·log2(T)), logits into shared memory.
// Phase 2: per-head max and exp-sum over the chunk, rescaling the earlier chunks' sums and output
// to the new running max. Phase 3: p·v into fp32 registers, then a cross-group and cross-warp sum
// folded into the running output in shared memory. The partition's (max, sum, unnormalised
// out[D]) go to the workspace; with a single partition the block writes the normalised bf16
// output directly.
//
// Launched programmatically (pdl.h), a block starts while the previous kernel of the stream may
// still run. In the engine that kernel is kv_write, which lets it start only after its own wait
// (so everything before kv_write is complete), writing one row per decode sequence: position
// contextLens[b] - 1. So before pdl_wait a block reads only what was complete before kv_write
// started: contextLens, the block table, and the K rows of its first step below
// that position (the chain of dependent round trips a short partition is made of); the fresh
// row, q, and every write come after the wait.

// Sums v[] over T lanes so that, afterwards, lane li holds in v[0] the total of head
// li / (T / GT). Each step halves the values a lane keeps, so the exchanges cost GT - 1 + the
// remaining log2(T / GT) plain butterflies.
template <int GT, int T>
__device__ __forceinline__ float reduce_scatter(float (&v)[GT], int li) {
  int count = GT;
#pragma unroll
  for (int off = T / 2; off >= 1; off >>= 1) {
    if (count > 1) {
      const int half = count / 2;
      const bool upper = (li & off) != 0;
#pragma unroll
      for (int i = 0; i < GT / 2; i++) {
        if (i < half) {
          const float send = upper ? v[i] : v[i + half];
          const float keep = upper ? v[i + half] : v[i];
          v[i] = keep + shfl_xor(send, off);
        }
      }
      count = half;
    } else {
      v[0] += shfl_xor(v[0], off);
    }
  }
  return v[0];
}

// p[0..GT) = src[0..GT); float4 loads where GT allows (src is then 16-byte aligned).
template <int GT>
__device__ __forceinline__ void load_group(const float* src, float (&p)[GT]) {
#pragma unroll
  for (int g = 0; g + 4 <= GT; g += 4) {
    const float4 x = *reinterpret_cast<const float4*>(src + g);
    p[g] = x.x;
    p[g + 1] = x.y;
    p[g + 2] = x.z;
    p[g + 3] = x.w;
  }
#pragma unroll
  for (int g = GT - GT % 4; g < GT; g++) p[g] = src[g];
}

// Which (partition, KV head group, sequence) a decode block serves (grid x, y, z), and the
// sequence's clamped context. Only contextLens is read: allowed before pdl_wait.
struct DecodeBlock {
  int kvh, b, part, headBase, validHeads, ctx, start;
  int partSize;  // tokens per partition: the launch's, or the ragged split's (below)
  bool direct;   // one partition: the block writes the normalised bf16 output itself
};

// The ragged split, asked for by a negative partSize (-(targetBlocks · 16 + slack quarters)):
// in a batch whose (sequence, head group) rows fill the device, one block a sequence makes the
// longest context the kernel's time when the contexts are uneven (ShareGPT-shaped batches of
// 64 took 2.3x a uniform batch of the same tokens). Every block sums the batch's contexts (a
// load or two a thread, in parallel with its own contextLens load) and takes the same size: a whole
// context, unless the longest passes `slack` times a block slot's even share of the tokens;
// then the share (at least ceil(longest / numParts), so the grid's partitions cover it). A
// launch-time size could not do this in a CUDA graph, which replays one size for every step.
__device__ __forceinline__ int ragged_part_size(const int32_t* __restrict__ contextLens,
                                                int maxContext, int code, int numParts) {
  __shared__ int red[ATTN_WARPS][2];
  long long total = 0;
  int longest = 1;
  for (int i = threadIdx.x; i < static_cast<int>(gridDim.z); i += ATTN_THREADS) {
    const int c = max(0, min(contextLens[i], maxContext));
    total += c;
    longest = max(longest, c);
  }
  int sum = static_cast<int>(total);  // at most 65535 sequences of maxContext <= 2048
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    sum += shfl_xor(sum, off);
    longest = max(longest, shfl_xor(longest, off));
  }
  if ((threadIdx.x & 31) == 0) {
    red[threadIdx.x >> 5][0] = sum;
    red[threadIdx.x >> 5][1] = longest;
  }
  __syncthreads();
  total = 0;
  longest = 1;
#pragma unroll
  for (int w = 0; w < ATTN_WARPS; w++) {
    total += red[w][0];
    longest = max(longest, red[w][1]);
  }
  const long long target = code >> 4, slackQuarters = code & 15;
  const int share = static_cast<int>((total * gridDim.y + target - 1) / target);
  int part = longest;
  if (4LL * longest > slackQuarters * share) {
    part = max((longest + numParts - 1) / numParts, share);
  }
  return (part + 31) / 32 * 32;  // a multiple of MIN_PART, as the launcher's sizes are
}

template <int GT>
__device__ __forceinline__ DecodeBlock decode_block(int numHeads, int numKvHeads,
                                                    const int32_t* __restrict__ contextLens,
                                                    int maxContext, int partSize,
                                                    int numParts, bool fused) {
  DecodeBlock blk;
  blk.partSize = partSize < 0 ? ragged_part_size(contextLens, maxContext, -partSize, numParts)
                              : partSize;
  const int ratio = numHeads / numKvHeads;
  const int chunks = (ratio + GT - 1) / GT;
  blk.kvh = blockIdx.y / chunks;
  const int chunk = blockIdx.y - blk.kvh * chunks;
  blk.b = blockIdx.z;
  blk.part = blockIdx.x;
  blk.headBase = blk.kvh * ratio + chunk * GT;
  blk.validHeads = min(GT, ratio - chunk * GT);
  blk.ctx = max(0, min(contextLens[blk.b], maxContext));
  // With the fused reduce a sequence that one partition holds skips its partials: its counter
  // is never taken, so it stays zero for the next launch.
  blk.direct = numParts == 1 || (fused && blk.ctx <= blk.partSize);
  blk.start = blk.part * blk.partSize;
  return blk;
}

// A partition past the sequence's context has nothing to do; an empty context has no softmax,
// so its output is defined as zeros (written by the first partition, after pdl_wait: the
// previous kernel may still read out, unless decode_reduce writes them: `zeros`). True when the
// block is done.
template <int D>
__device__ __forceinline__ bool decode_past_context(const DecodeBlock& blk, uint16_t* out,
                                                    int numHeads, bool zeros) {
  if (blk.start < blk.ctx) return false;
  if (zeros && blk.part == 0) {
    pdl_wait();
    for (int e = threadIdx.x; e < blk.validHeads * D; e += ATTN_THREADS) {
      out[(static_cast<size_t>(blk.b) * numHeads + blk.headBase) * D + e] = 0;
    }
  }
  return true;
}

// decode_reduce's job done by the last block of a split sequence's head group, so a split
// decode needs no second launch (the reduce kernel's launch and wait cost about as much as its
// work at small batches): last_arrival.h's ticket on the group's counter
// (counters[b · gridDim.y + blockIdx.y]) over `parts` (the sequence's partitions that had rows);
// the last block sums them, in partition order, as decode_reduce does, into the bf16 output.
// `smem` holds the weights: parts <= DECODE_CHUNK (the host keeps the split kernel-reduced
// otherwise).
template <int D>
__device__ __forceinline__ void decode_last_block_reduce(
    const float* partOut, const float* partMl, uint16_t* __restrict__ out,
    uint32_t* __restrict__ counters, float* smem, int b, int headBase, int validHeads,
    int numHeads, int parts, int numParts) {
  __shared__ float invSum[8];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  uint32_t* counter = counters + static_cast<size_t>(b) * gridDim.y + blockIdx.y;
  if (!last_arrival(counter, parts)) return;
  if (tid == 0) *counter = 0;
  // Per head (a warp each, in turn): the max over partitions, each partition's weight
  // 2^(m_p - max) into smem, and 1 / Σ weight · sum_p.
  for (int g = warp; g < validHeads; g += ATTN_WARPS) {
    const float* ml = partMl + (static_cast<size_t>(b) * numHeads + headBase + g) * numParts * 2;
    float mx = -INFINITY;
    for (int p = lane; p < parts; p += 32) mx = fmaxf(mx, denali_ld_l2(ml + 2 * p));
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, shfl_xor(mx, off));
    float sum = 0.0f;
    for (int p = lane; p < parts; p += 32) {
      const float w = exp2f(denali_ld_l2(ml + 2 * p) - mx);
      smem[g * DECODE_CHUNK + p] = w;
      sum = fmaf(w, denali_ld_l2(ml + 2 * p + 1), sum);
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) sum += shfl_xor(sum, off);
    if (lane == 0) invSum[g] = 1.0f / sum;
  }
  __syncthreads();
  // Then each thread a float4 column of a head: Σ_p weight_p · partOut_p, 4 loads in flight.
  constexpr int VECS = D / 4;
  for (int e = tid; e < validHeads * VECS; e += ATTN_THREADS) {
    const int g = e / VECS, v = e - g * VECS;
    const size_t head = static_cast<size_t>(b) * numHeads + headBase + g;
    const float4* o = reinterpret_cast<const float4*>(partOut + head * numParts * D) + v;
    const float* w = smem + g * DECODE_CHUNK;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int p = 0;
    for (; p + 4 <= parts; p += 4) {
      float4 x[4];
#pragma unroll
      for (int u = 0; u < 4; u++) x[u] = denali_ld_l2(o + static_cast<size_t>(p + u) * VECS);
#pragma unroll
      for (int u = 0; u < 4; u++) {
        acc.x = fmaf(w[p + u], x[u].x, acc.x);
        acc.y = fmaf(w[p + u], x[u].y, acc.y);
        acc.z = fmaf(w[p + u], x[u].z, acc.z);
        acc.w = fmaf(w[p + u], x[u].w, acc.w);
      }
    }
    for (; p < parts; p++) {
      const float4 x = denali_ld_l2(o + static_cast<size_t>(p) * VECS);
      acc.x = fmaf(w[p], x.x, acc.x);
      acc.y = fmaf(w[p], x.y, acc.y);
      acc.z = fmaf(w[p], x.z, acc.z);
      acc.w = fmaf(w[p], x.w, acc.w);
    }
    const float inv = invSum[g];
    uint2 packed;
    packed.x = bf16_pack2(acc.x * inv, acc.y * inv);
    packed.y = bf16_pack2(acc.z * inv, acc.w * inv);
    *reinterpret_cast<uint2*>(out + head * D + v * 4) = packed;
  }
}

template <int D, int GT, bool FP8 = false>
__device__ __forceinline__ void decode_partition(
    float* __restrict__ partOut, float* __restrict__ partMl, uint16_t* __restrict__ out,
    const uint16_t* __restrict__ q, const typename KvCache<FP8>::Elem* __restrict__ kCache,
    const typename KvCache<FP8>::Elem* __restrict__ vCache, const int32_t* __restrict__ blockTables,
    const int32_t* __restrict__ contextLens, int numHeads, int numKvHeads, int blockSize,
    int maxBlocks, int maxContext, int partSize, int numParts, int numBlocks, float scale,
    uint32_t* __restrict__ counters, float kScale = 1.0f, float vScale = 1.0f) {
  using C = KvCache<FP8>;
  constexpr int T = D / 8;                  // lanes per token row
  constexpr int NG = ATTN_THREADS / T;      // token groups per block
  // Rows in flight per lane: 8 keeps ~64 KB of loads in flight per SM at 4 blocks/SM; a group
  // of 8 heads needs the registers for q and the accumulators instead. An FP8 row is half the
  // bytes in half the registers, so twice the rows keep the same bytes in flight.
  constexpr int U = (GT >= 8 ? 4 : 8) * (FP8 ? 2 : 1);
  constexpr int STEP = NG * U;              // tokens per loop iteration
  static_assert(DECODE_CHUNK % STEP == 0, "a chunk is whole steps");
  constexpr int SMEM = (DECODE_CHUNK * GT > ATTN_WARPS * GT * D) ? DECODE_CHUNK * GT
                                                                 : ATTN_WARPS * GT * D;
  constexpr int GT_SPREAD = T / GT;         // lanes that end up holding the same head
  __shared__ __align__(16) float smem[SMEM];  // a chunk's logits [chunk][GT], then warp partials
  __shared__ float run[GT * D];  // the output of the chunks so far, at the running max
  __shared__ float redMax[ATTN_WARPS][GT];
  __shared__ float redSum[ATTN_WARPS][GT];
  pdl_launch_dependents();

  const DecodeBlock blk =
      decode_block<GT>(numHeads, numKvHeads, contextLens, maxContext, partSize, numParts,
                       counters != nullptr);
  if (decode_past_context<D>(blk, out, numHeads, blk.direct || counters != nullptr)) return;
  partSize = blk.partSize;
  const int kvh = blk.kvh, b = blk.b, part = blk.part, headBase = blk.headBase;
  const int validHeads = blk.validHeads, ctx = blk.ctx, start = blk.start;
  const bool direct = blk.direct;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int n = min(partSize, ctx - start);
  // The partition's index of position ctx - 1, the row the previous kernel (kv_write) may be
  // writing: n - 1 in the sequence's last partition, past every row (>= n) in the others.
  const int fresh = ctx - 1 - start;
  const int li = tid % T;
  const int gi = tid / T;
  const int shift = log2_pow2(blockSize);
  const int32_t* table = blockTables + static_cast<size_t>(b) * maxBlocks;
  // This lane's 16 bytes of partition row j, in either cache.
  auto rowAt = [&](int j) {
    return cache_row(table, start + j, shift, kvh, numKvHeads, numBlocks, D) + li * 8;
  };

  // Short partitions (the many-way splits of small batches, where latency rules) also ask L2
  // for their V rows during phase 1, so phase 3 does not wait a full trip to memory; long ones
  // would flood L2 with lines it evicts before use.
  const bool prefetchV = partSize <= 128 && (li & 7) == 0;
  // Before the wait: the first step's K rows (and V prefetches), all but the fresh row, so the
  // table and row round trips overlap the previous kernel.
  using Raw = typename C::Raw;
  Raw kr[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int j = gi + u * NG;
    kr[u] = C::zero();
    if (j < n && j != fresh) {
      const size_t at = rowAt(j);
      kr[u] = C::early(kCache + at);
      if (prefetchV) prefetch_l2(vCache + at);
    }
  }
  pdl_wait();
  if (fresh < n && fresh < STEP) {  // the fresh row belongs to the first step
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (gi + u * NG == fresh) kr[u] = C::fresh(kCache + rowAt(fresh));
    }
  }

  float* logits = smem;
  const int myHead = li / GT_SPREAD;
  const float qscale = scale * LOG2E * kScale;  // the keys' scale, folded into q
  int end = 0;                                  // the current chunk's end, in partition rows
  // This lane's 16 bytes of the step's U rows (zeros past the chunk): the fresh row coherently,
  // the others through the read-only path (K, asking L2 for V as it goes) or plainly.
  auto loadStep = [&](Raw (&rows)[U], const typename C::Elem* cache, int base, bool isK) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = base + gi + u * NG;
      rows[u] = C::zero();
      if (j < end) {
        const size_t at = rowAt(j);
        rows[u] = j == fresh ? C::fresh(cache + at) : isK ? C::readonly(cache + at) : C::plain(cache + at);
        if (isK && prefetchV) prefetch_l2(vCache + at);
      }
    }
  };

  // A partition runs as chunks of DECODE_CHUNK rows (one, for the partitions the split-K grid
  // makes; several, where one block takes a whole long sequence because the batch alone fills
  // the device). Across chunks only the running max, the warps' exp-sums and `run` live on:
  // q is reloaded and the output folded into shared memory each chunk, so the registers of a
  // chunk are those of a one-chunk partition (online softmax, as FlashAttention's outer loop).
  auto loadQ = [&](float (&qf)[GT][8]) {
#pragma unroll
    for (int g = 0; g < GT; g++) {
      if (g < validHeads) {
        const uint4 raw =
            ld_fresh(q + (static_cast<size_t>(b) * numHeads + headBase + g) * D + li * 8);
        unpack8(raw, qf[g]);
#pragma unroll
        for (int i = 0; i < 8; i++) qf[g][i] *= qscale;
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) qf[g][i] = 0.0f;
      }
    }
  };
  // Phase 1 for one step of U rows from `base`: logits into shared memory (chunk row j - c0).
  auto logitsStep = [&](const Raw (&rows)[U], int base, int c0, const float (&qf)[GT][8]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      // Past the chunk's end for every group: stop (block-uniform, so no lane misses a
      // shuffle). A short partition (32 tokens at batch 1) fills a fraction of a step's rows.
      if (base + u * NG >= end) break;
      float kf[8];
      C::widen(rows[u], kf);
      float dot[GT];
#pragma unroll
      for (int g = 0; g < GT; g++) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) s = fmaf(qf[g][i], kf[i], s);
        dot[g] = s;
      }
      const float total = reduce_scatter<GT, T>(dot, li);
      const int j = base + gi + u * NG;
      if (j < end && li % GT_SPREAD == 0) logits[(j - c0) * GT + myHead] = total;
    }
  };

  float mRun[GT];  // block-uniform; each warp's running exp-sums live in redSum[warp]
#pragma unroll
  for (int g = 0; g < GT; g++) mRun[g] = -INFINITY;
  // The first step, from the rows loaded before the wait: on its own, so that kr and this q
  // are dead once it is done and the chunk loop holds neither.
  end = min(n, DECODE_CHUNK);
  {
    float qf[GT][8];
    loadQ(qf);
    logitsStep(kr, 0, 0, qf);
  }
  for (int c0 = 0; c0 < n; c0 += DECODE_CHUNK) {
    if (c0 > 0) __syncthreads();  // the previous chunk's warp partials are consumed
    end = min(n, c0 + DECODE_CHUNK);
    const bool last = end == n;

    // Phase 1: logits. The loop bound is block-uniform so every lane reaches the shuffles.
    float qf[GT][8];
    loadQ(qf);
    for (int base = c0 == 0 ? STEP : c0; base < end; base += STEP) {
      Raw rows[U];
      loadStep(rows, kCache, base, true);
      logitsStep(rows, base, c0, qf);
    }
    __syncthreads();

    // Phase 2: the chunk's max per head joins the running max (alpha rescales what earlier
    // chunks summed); the logits become unnormalised probabilities in place.
    float m[GT];
#pragma unroll
    for (int g = 0; g < GT; g++) m[g] = -INFINITY;
    for (int j = c0 + tid; j < end; j += ATTN_THREADS) {
      float s[GT];
      load_group<GT>(logits + (j - c0) * GT, s);
#pragma unroll
      for (int g = 0; g < GT; g++) m[g] = fmaxf(m[g], s[g]);
    }
#pragma unroll
    for (int g = 0; g < GT; g++) {
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) m[g] = fmaxf(m[g], shfl_xor(m[g], off));
    }
    if (lane == 0) {
#pragma unroll
      for (int g = 0; g < GT; g++) redMax[warp][g] = m[g];
    }
    __syncthreads();
    float alpha[GT];
#pragma unroll
    for (int g = 0; g < GT; g++) {
      float x = redMax[0][g];
#pragma unroll
      for (int w = 1; w < ATTN_WARPS; w++) x = fmaxf(x, redMax[w][g]);
      x = fmaxf(mRun[g], x);
      alpha[g] = c0 > 0 ? exp2f(mRun[g] - x) : 0.0f;  // mRun is -inf before the first chunk
      mRun[g] = x;
    }
    float l[GT];
#pragma unroll
    for (int g = 0; g < GT; g++) l[g] = 0.0f;
    for (int j = c0 + tid; j < end; j += ATTN_THREADS) {
#pragma unroll
      for (int g = 0; g < GT; g++) {
        const float p = exp2f(logits[(j - c0) * GT + g] - mRun[g]);
        logits[(j - c0) * GT + g] = p;
        l[g] += p;
      }
    }
    // The warp's exp-sums, onto its running ones (only its lane 0 touches redSum[warp]).
#pragma unroll
    for (int g = 0; g < GT; g++) {
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) l[g] += shfl_xor(l[g], off);
    }
    if (lane == 0) {
#pragma unroll
      for (int g = 0; g < GT; g++) {
        redSum[warp][g] = c0 > 0 ? fmaf(redSum[warp][g], alpha[g], l[g]) : l[g];
      }
    }
    __syncthreads();

    // Phase 3: acc[g][li*8 .. +8] = Σ_j p[j][g] · v[j][li*8 .. +8] over this lane's rows.
    float acc[GT][8];
#pragma unroll
    for (int g = 0; g < GT; g++) {
#pragma unroll
      for (int i = 0; i < 8; i++) acc[g][i] = 0.0f;
    }
    for (int base = c0; base < end; base += STEP) {
      Raw vr[U];
      loadStep(vr, vCache, base, false);
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int j = base + gi + u * NG;
        if (j < end) {
          float vf[8];
          C::widen(vr[u], vf);
          float p[GT];
          load_group<GT>(logits + (j - c0) * GT, p);
#pragma unroll
          for (int g = 0; g < GT; g++) {
#pragma unroll
            for (int i = 0; i < 8; i++) acc[g][i] = fmaf(p[g], vf[i], acc[g][i]);
          }
        }
      }
    }
    // Groups within a warp first (lanes li, li+T, ... hold the same dims), then across warps.
#pragma unroll
    for (int off = T; off < 32; off <<= 1) {
#pragma unroll
      for (int g = 0; g < GT; g++) {
#pragma unroll
        for (int i = 0; i < 8; i++) acc[g][i] += shfl_xor(acc[g][i], off);
      }
    }
    __syncthreads();  // the probabilities are consumed; smem now holds the warp partials
    float* red = smem;
    if (lane < T) {
#pragma unroll
      for (int g = 0; g < GT; g++) {
        float4* dst = reinterpret_cast<float4*>(red + (warp * GT + g) * D + li * 8);
        dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
        dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
      }
    }
    __syncthreads();
    // Each thread keeps the same elements e of `run` in every chunk, so `run` needs no barrier.
    for (int e = tid; e < validHeads * D; e += ATTN_THREADS) {
      const int g = e / D;
      const int d = e - g * D;
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < ATTN_WARPS; w++) sum += red[(w * GT + g) * D + d];
      if (c0 > 0) {
        float a = alpha[0];
#pragma unroll
        for (int k = 1; k < GT; k++) a = g == k ? alpha[k] : a;  // no dynamic register index
        sum = fmaf(run[e], a, sum);
      }
      if (!last) {
        run[e] = sum;
        continue;
      }
      sum *= vScale;  // the values' scale, applied once to the sum
      const size_t head = static_cast<size_t>(b) * numHeads + headBase + g;
      if (direct) {
        float total = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) total += redSum[w][g];
        out[head * D + d] = f32_to_bf16(sum / total);
      } else {
        partOut[(head * numParts + part) * D + d] = sum;
      }
    }
  }
  if (!direct && tid < validHeads) {
    float mx = mRun[0], total = 0.0f;
#pragma unroll
    for (int g = 1; g < GT; g++) mx = tid == g ? mRun[g] : mx;  // no dynamic register index
    for (int w = 0; w < ATTN_WARPS; w++) total += redSum[w][tid];
    const size_t row = (static_cast<size_t>(b) * numHeads + headBase + tid) * numParts + part;
    partMl[row * 2] = mx;
    partMl[row * 2 + 1] = total;
  }
  if (!direct && counters != nullptr) {
    decode_last_block_reduce<D>(partOut, partMl, out, counters, smem, b, headBase, validHeads,
                                numHeads, (ctx + partSize - 1) / partSize, numParts);
  }
}

#define DECODE_KERNEL_DECL(D, GT)                                                               \
  extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_d##D##_g##GT(      \
      float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache,  \
      const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens,           \
      int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks,               \
      int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale,   \
      uint32_t* counters);
DECODE_KERNEL_DECL(64, 1)
DECODE_KERNEL_DECL(64, 2)
DECODE_KERNEL_DECL(64, 4)
DECODE_KERNEL_DECL(64, 8)
DECODE_KERNEL_DECL(128, 1)
DECODE_KERNEL_DECL(128, 2)
DECODE_KERNEL_DECL(128, 4)
DECODE_KERNEL_DECL(128, 8)
#define DECODE_FP8_KERNEL_DECL(D, GT)                                                           \
  extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_fp8_d##D##_g##GT(  \
      float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache,   \
      const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens,            \
      int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks,               \
      int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale,   \
      uint32_t* counters, float kScale, float vScale);
DECODE_FP8_KERNEL_DECL(64, 1)
DECODE_FP8_KERNEL_DECL(64, 2)
DECODE_FP8_KERNEL_DECL(64, 4)
DECODE_FP8_KERNEL_DECL(64, 8)
DECODE_FP8_KERNEL_DECL(128, 1)
DECODE_FP8_KERNEL_DECL(128, 2)
DECODE_FP8_KERNEL_DECL(128, 4)
DECODE_FP8_KERNEL_DECL(128, 8)

#define DECODE_ARGS                                                                         \
  partOut, partMl, out, q, kCache, vCache, blockTables, contextLens, numHeads, numKvHeads,  \
      blockSize, maxBlocks, maxContext, partSize, numParts, numBlocks, scale

// Grid (numParts, numKvHeads · ceil(ratio / GT), batch), 128 threads.
extern "C" __global__ void decode_attn_d64_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<64, 1>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d64_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<64, 2>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d64_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<64, 4>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d64_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<64, 8>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d128_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<128, 1>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d128_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<128, 2>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d128_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<128, 4>(DECODE_ARGS, counters);
}
extern "C" __global__ void decode_attn_d128_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  decode_partition<128, 8>(DECODE_ARGS, counters);
}

// The same over an fp8 cache: K and V rows are E4M3 codes, read back as f32 code · kScale (V:
// vScale); the partials and decode_reduce are the bf16 path's. Same grid and launch.
#define DECODE_FP8_ARGS DECODE_ARGS, counters, kScale, vScale
extern "C" __global__ void decode_attn_fp8_d64_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<64, 1, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d64_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<64, 2, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d64_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<64, 4, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d64_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<64, 8, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d128_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<128, 1, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d128_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<128, 2, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d128_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<128, 4, true>(DECODE_FP8_ARGS);
}
extern "C" __global__ void decode_attn_fp8_d128_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  decode_partition<128, 8, true>(DECODE_FP8_ARGS);
}

// ---------------------------------------------------------------------------------------------
// Decode attention on tensor cores (CUDA only; opt-in: ops/gpu/attention.ts `decodeKernel:
// "mma"`, DENALI_DECODE_ATTN=mma). The same grid, partitions, workspace and outputs as
// decode_partition, so decode_reduce combines either; what changes is the arithmetic. The FMA
// kernel spends ~60 instructions a row per lane on q·k and p·v (a batch-256 decode step is half
// attention, issue bound: bench/results/2026-12-06-s10-step-ops-h100.md); here each warp takes
// 16-token tiles and does both products with m16n8k16 bf16 mma:
//   S^T[16 heads × 8 tokens] = Q[16 heads × 16 d] · K^T[16 d × 8 tokens] (heads past GT are zero
//   rows), 2 token tiles × D/16 k-steps; then O[16 heads × 8 d] += P[16 heads × 16 tokens] ·
//   V[16 tokens × 8 d], 8 d-tiles per 64-d slab.
// Fragments come straight from 16-byte global loads, with no shared-memory staging:
// - K: the d order inside a k-step is free as long as A (Q) and B (K) agree, so thread (g, t)
//   loads 16 bytes of K row g at d 32j + 8t and uses them as B of k-steps 2j and 2j + 1; its Q
//   row g is loaded the same way as A.
// - P: the S^T accumulator of token tiles 0 and 1 is, element for element, the A fragment of
//   the P·V mma (rounded to bf16, as FlashAttention does).
// - V: B needs two consecutive tokens of one d column per register. Thread (g, t) loads tokens
//   2t, 2t + 1, 2t + 8, 2t + 9 at d 64s + 8g and pairs them with prmt; d-tile i then holds d
//   64s + 8c + i in column c, so thread t's outputs are d 64s + 16t + i and 64s + 16t + 8 + i.
// - An FP8 cache multiplies in f16 (MmaOperands<true>): a code pair widens to an f16 pair in one
//   instruction, where widening to bf16 through f32 and rounding in software cost ~6 a code and
//   left these kernels 1.2-1.5x slower than the FMA ones (s11); V's codes are paired by prmt
//   before they widen. q and p are rounded to f16 (11 bits: finer than bf16; a q element past
//   65504 would overflow, which no model's attention inputs reach).
// Softmax is online per warp (the running max, sum and output rescaled per tile), in the log2
// domain with the K scale folded into the score scale; the four warps combine in shared memory.
// The kernel waits (pdl_wait) before its first cache read, so launched programmatically it
// overlaps only its launch with the previous kernel.

#ifndef DENALI_HIP
// The mma's operands by cache type: a bf16 cache multiplies in bf16 as loaded; an FP8 cache in
// f16, its E4M3 codes widened exactly a pair an instruction (every E4M3 value is an f16), with q
// and the probabilities rounded to f16 (11 bits where bf16 keeps 8).
template <bool FP8>
struct MmaOperands;

template <>
struct MmaOperands<false> {
  // 8 elements of a cache row as four pairs (element 2i low, 2i + 1 high).
  static __device__ __forceinline__ void words(const uint4 r, uint32_t (&w)[4]) {
    w[0] = r.x;
    w[1] = r.y;
    w[2] = r.z;
    w[3] = r.w;
  }
  // Two bf16 of q, as the operand type.
  static __device__ __forceinline__ uint32_t q(uint32_t bf16x2) { return bf16x2; }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return bf16_pack2(lo, hi); }
  // V's B fragments of one 64-d slab: d-tile i pairs tokens (2t, 2t + 1) (b[i][0]) and (2t + 8,
  // 2t + 9) (b[i][1]) of rows r[0..3] at d 8g + i.
  static __device__ __forceinline__ void vPairs(const uint4 (&r)[4], uint32_t (&b)[8][2]) {
    uint32_t w[4][4];
#pragma unroll
    for (int k = 0; k < 4; k++) words(r[k], w[k]);
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const uint32_t sel = (i & 1) ? 0x7632u : 0x5410u;
      b[i][0] = prmt(w[0][i >> 1], w[1][i >> 1], sel);
      b[i][1] = prmt(w[2][i >> 1], w[3][i >> 1], sel);
    }
  }
};

template <>
struct MmaOperands<true> {
  static __device__ __forceinline__ void words(const uint2 r, uint32_t (&w)[4]) {
    w[0] = e4m3x2_to_f16x2(r.x);
    w[1] = e4m3x2_to_f16x2(r.x >> 16);
    w[2] = e4m3x2_to_f16x2(r.y);
    w[3] = e4m3x2_to_f16x2(r.y >> 16);
  }
  static __device__ __forceinline__ uint32_t q(uint32_t bf16x2) {
    return pack_f16x2(__uint_as_float(bf16x2 << 16), __uint_as_float(bf16x2 & 0xffff0000u));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack_f16x2(lo, hi); }
  // The codes are paired before widening: prmt takes byte i of two rows' words side by side
  // (0x5140: d 0 then d 1; 0x7362: d 2 then d 3), and each 16-bit half widens to one pair.
  static __device__ __forceinline__ void vPairs(const uint2 (&r)[4], uint32_t (&b)[8][2]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
      for (int s = 0; s < 2; s++) {
        const uint32_t a = h ? r[2 * s].y : r[2 * s].x, c = h ? r[2 * s + 1].y : r[2 * s + 1].x;
        const uint32_t d01 = prmt(a, c, 0x5140u), d23 = prmt(a, c, 0x7362u);
        b[4 * h + 0][s] = e4m3x2_to_f16x2(d01);
        b[4 * h + 1][s] = e4m3x2_to_f16x2(d01 >> 16);
        b[4 * h + 2][s] = e4m3x2_to_f16x2(d23);
        b[4 * h + 3][s] = e4m3x2_to_f16x2(d23 >> 16);
      }
    }
  }
};

// QS: q's A fragments live in shared memory, not registers (16 fewer at head dim 128), so the
// FP8 d128 kernels fit four blocks an SM (128 registers) without spilling; q is the same for
// every warp, so warp 0 converts it once and the others read it back, one LDS.128 a 32-d chunk.
template <int D, int GT, bool FP8, bool QS = false>
__device__ __forceinline__ void decode_mma_partition(
    float* __restrict__ partOut, float* __restrict__ partMl, uint16_t* __restrict__ out,
    const uint16_t* __restrict__ q, const typename KvCache<FP8>::Elem* __restrict__ kCache,
    const typename KvCache<FP8>::Elem* __restrict__ vCache, const int32_t* __restrict__ blockTables,
    const int32_t* __restrict__ contextLens, int numHeads, int numKvHeads, int blockSize,
    int maxBlocks, int maxContext, int partSize, int numParts, int numBlocks, float scale,
    uint32_t* __restrict__ counters, float kScale, float vScale) {
  using C = KvCache<FP8>;
  using Raw = typename C::Raw;
  constexpr int KCH = D / 32;  // 32-d chunks of a K row: one 16-byte (8-element) load each
  constexpr int SLABS = D / 64;  // 64-d slabs of a V row
  // The warps' outputs [warp][head][d], then (fused reduce) the partitions' weights [head][part].
  constexpr int RED = ATTN_WARPS * GT * D > GT * DECODE_CHUNK ? ATTN_WARPS * GT * D : GT * DECODE_CHUNK;
  __shared__ __align__(16) float red[RED];
  __shared__ float redM[ATTN_WARPS][GT];
  __shared__ float redL[ATTN_WARPS][GT];
  auto redO = [&](int w, int h, int d) -> float& { return red[(w * GT + h) * D + d]; };
  pdl_launch_dependents();

  const DecodeBlock blk = decode_block<GT>(numHeads, numKvHeads, contextLens, maxContext, partSize,
                                           numParts, counters != nullptr);
  pdl_wait();
  if (decode_past_context<D>(blk, out, numHeads, blk.direct || counters != nullptr)) return;
  partSize = blk.partSize;
  const int kvh = blk.kvh, b = blk.b, part = blk.part, headBase = blk.headBase;
  const int validHeads = blk.validHeads, start = blk.start;
  const bool direct = blk.direct;
  const int tid = threadIdx.x;
  const int n = min(partSize, blk.ctx - start);
  const int lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int shift = log2_pow2(blockSize);
  const int32_t* table = blockTables + static_cast<size_t>(b) * maxBlocks;
  auto rowAt = [&](int j) { return cache_row(table, start + j, shift, kvh, numKvHeads, numBlocks, D); };

  using Op = MmaOperands<FP8>;

  // Q as A: row g (head headBase + g), k-steps 2j and 2j + 1 from one 16-byte load. Under QS
  // lane l's four words of chunk j sit at qs[j][l] (consecutive lanes, consecutive 16 bytes: no
  // bank conflict).
  uint32_t qa[QS ? 1 : 2 * KCH][2];
  __shared__ __align__(16) uint4 qs[QS ? KCH : 1][32];
  const bool headRow = g < validHeads;
  if (!QS || warp == 0) {
#pragma unroll
    for (int j = 0; j < KCH; j++) {
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (headRow) v = ld_fresh(q + (static_cast<size_t>(b) * numHeads + headBase + g) * D + 32 * j + 8 * t);
      const uint4 a = make_uint4(Op::q(v.x), Op::q(v.y), Op::q(v.z), Op::q(v.w));
      if (QS) {
        qs[j][lane] = a;
      } else {
        qa[2 * j][0] = a.x;
        qa[2 * j][1] = a.y;
        qa[2 * j + 1][0] = a.z;
        qa[2 * j + 1][1] = a.w;
      }
    }
  }
  if (QS) __syncthreads();
  // The A words of chunk c: k-step 2c (x, y), then 2c + 1 (z, w).
  auto qChunk = [&](int c) -> uint4 {
    if (QS) return qs[c][lane];
    return make_uint4(qa[2 * c][0], qa[2 * c][1], qa[2 * c + 1][0], qa[2 * c + 1][1]);
  };
  const float qscale = scale * LOG2E * kScale;

  float m = -INFINITY, l = 0.0f;
  float o[SLABS][8][2];
#pragma unroll
  for (int sl = 0; sl < SLABS; sl++) {
#pragma unroll
    for (int i = 0; i < 8; i++) o[sl][i][0] = o[sl][i][1] = 0.0f;
  }

  for (int base = warp * 16; base < n; base += ATTN_WARPS * 16) {
    // The tile's K and V rows, all loads issued before the first use (zeros past the partition).
    Raw kr[2][KCH];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const int j = base + 8 * nt + g;
      const bool in = j < n;
      const size_t at = in ? rowAt(j) : 0;
#pragma unroll
      for (int c = 0; c < KCH; c++) kr[nt][c] = in ? C::fresh(kCache + at + 32 * c + 8 * t) : C::zero();
    }
    Raw vr[SLABS][4];  // V rows 2t, 2t + 1, 2t + 8, 2t + 9 of the tile
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int j = base + 2 * t + (r & 1) + 8 * (r >> 1);
      const bool in = j < n;
      const size_t at = in ? rowAt(j) : 0;
#pragma unroll
      for (int sl = 0; sl < SLABS; sl++) {
        vr[sl][r] = in ? C::fresh(vCache + at + 64 * sl + 8 * g) : C::zero();
      }
    }

    // Scores of head g for tokens base + 2t, + 1 (tile 0) and base + 8 + 2t, + 1 (tile 1).
    float sc[2][2];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      sc[nt][0] = sc[nt][1] = 0.0f;
#pragma unroll
      for (int c = 0; c < KCH; c++) {
        uint32_t w[4];
        Op::words(kr[nt][c], w);
        const uint4 a = qChunk(c);
        mma_rows0<FP8>(sc[nt][0], sc[nt][1], a.x, a.y, w[0], w[1]);
        mma_rows0<FP8>(sc[nt][0], sc[nt][1], a.z, a.w, w[2], w[3]);
      }
    }
    float x[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int j = base + 8 * (e >> 1) + 2 * t + (e & 1);
      x[e] = j < n ? sc[e >> 1][e & 1] * qscale : -INFINITY;
    }
    float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
    mx = fmaxf(mx, shfl_xor(mx, 1));
    mx = fmaxf(mx, shfl_xor(mx, 2));
    const float mNew = fmaxf(m, mx);  // finite: the tile has a token below n
    const float corr = exp2f(m - mNew);
    float p[4];
#pragma unroll
    for (int e = 0; e < 4; e++) p[e] = exp2f(x[e] - mNew);
    l = l * corr + (p[0] + p[1]) + (p[2] + p[3]);
    m = mNew;
    const uint32_t pa0 = Op::pack(p[0], p[1]), pa2 = Op::pack(p[2], p[3]);
#pragma unroll
    for (int sl = 0; sl < SLABS; sl++) {
      uint32_t pb[8][2];
      Op::vPairs(vr[sl], pb);
#pragma unroll
      for (int i = 0; i < 8; i++) {
        o[sl][i][0] *= corr;
        o[sl][i][1] *= corr;
        mma_rows0<FP8>(o[sl][i][0], o[sl][i][1], pa0, pa2, pb[i][0], pb[i][1]);
      }
    }
  }

  // The warp's sum over its four t lanes; m is already the same on them.
  l += shfl_xor(l, 1);
  l += shfl_xor(l, 2);
  if (headRow) {
    if (t == 0) {
      redM[warp][g] = m;
      redL[warp][g] = l;
    }
#pragma unroll
    for (int sl = 0; sl < SLABS; sl++) {
#pragma unroll
      for (int i = 0; i < 8; i++) {
        redO(warp, g, 64 * sl + 16 * t + i) = o[sl][i][0];
        redO(warp, g, 64 * sl + 16 * t + 8 + i) = o[sl][i][1];
      }
    }
  }
  __syncthreads();  // only valid heads' rows are written, and only they are combined
  for (int e = tid; e < validHeads * D; e += ATTN_THREADS) {
    const int h = e / D;
    const int d = e - h * D;
    float mx = redM[0][h];
#pragma unroll
    for (int w = 1; w < ATTN_WARPS; w++) mx = fmaxf(mx, redM[w][h]);
    float sum = 0.0f, total = 0.0f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) {
      // A warp without tokens has m = -inf: weight 0 (and its O and l are zeros).
      const float wgt = redM[w][h] == -INFINITY ? 0.0f : exp2f(redM[w][h] - mx);
      sum += wgt * redO(w, h, d);
      total += wgt * redL[w][h];
    }
    sum *= vScale;
    const size_t head = static_cast<size_t>(b) * numHeads + headBase + h;
    if (direct) {
      out[head * D + d] = f32_to_bf16(sum / total);
    } else {
      partOut[(head * numParts + part) * D + d] = sum;
      if (d == 0) {
        const size_t row = head * numParts + part;
        partMl[row * 2] = mx;
        partMl[row * 2 + 1] = total;
      }
    }
  }
  if (!direct && counters != nullptr) {
    decode_last_block_reduce<D>(partOut, partMl, out, counters, red, b, headBase, validHeads,
                                numHeads, (blk.ctx + partSize - 1) / partSize, numParts);
  }
}
#define DECODE_MMA_BODY(D, GT, FP8, ...) decode_mma_partition<D, GT, FP8>(__VA_ARGS__)
#define DECODE_MMA_QS_BODY(D, GT, ...) decode_mma_partition<D, GT, true, true>(__VA_ARGS__)
#else
#define DECODE_MMA_BODY(D, GT, FP8, ...) denali_trap()
#define DECODE_MMA_QS_BODY(D, GT, ...) denali_trap()
#endif  // !DENALI_HIP

// Entry points: the FMA kernels' signatures (DECODE_ARGS, then the fused reduce's counters or
// null); the bf16 ones scale by 1.
// Three blocks an SM: at four (128 registers) head dim 128 spills; 12 warps of 16-token tiles
// keep ~48 KB of loads in flight an SM.
#define DECODE_MMA_BLOCKS 3
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d64_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(64, 1, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d64_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(64, 2, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d64_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(64, 4, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d64_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(64, 8, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d128_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(128, 1, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d128_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(128, 2, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d128_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(128, 4, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_mma_d128_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters) {
  DECODE_MMA_BODY(128, 8, false, DECODE_ARGS, counters, 1.0f, 1.0f);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d64_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(64, 1, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d64_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(64, 2, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d64_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(64, 4, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d64_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(64, 8, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d128_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(128, 1, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d128_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(128, 2, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d128_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(128, 4, true, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, DECODE_MMA_BLOCKS) decode_attn_fp8_mma_d128_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_BODY(128, 8, true, DECODE_ARGS, counters, kScale, vScale);
}

// The FP8 head-dim-128 kernels at four blocks an SM (q's fragments in shared memory: 127
// registers, no spill), the grid of one wave that the fma kernels' four an SM make at 32-64 rows
// fitting them too: the default on an FP8 cache since session 25 (decodeMmaBlocks in
// ops/gpu/attention.ts; the FP8-cache step 0.94-0.97x at 32-256 rows on an H100). Head dim 64
// already fits four at 94-102 registers.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_fp8_mma4_d128_g1(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_QS_BODY(128, 1, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_fp8_mma4_d128_g2(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_QS_BODY(128, 2, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_fp8_mma4_d128_g4(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_QS_BODY(128, 4, DECODE_ARGS, counters, kScale, vScale);
}
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, 4) decode_attn_fp8_mma4_d128_g8(float* partOut, float* partMl, uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* blockTables, const int32_t* contextLens, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t maxContext, int32_t partSize, int32_t numParts, int32_t numBlocks, float scale, uint32_t* counters, float kScale, float vScale) {
  DECODE_MMA_QS_BODY(128, 8, DECODE_ARGS, counters, kScale, vScale);
}

// Combines a sequence's partitions: M = max m_p, out = Σ 2^(m_p - M)·o_p / Σ 2^(m_p - M)·l_p.
// Grid (numHeads, batch), DECODE_REDUCE_THREADS threads. Every step is spread over the
// partitions, so a sequence split 64 ways costs a few memory round trips, not 64: thread
// (slice, v) sums float4 column v of the partitions p ≡ slice (mod slices), four loads at a
// time, and the slices meet in shared memory. Launched programmatically, it reads only
// contextLens before pdl_wait.
#define DECODE_REDUCE_THREADS 512
#define DECODE_REDUCE_CHUNK 512

__device__ __forceinline__ float block_reduce(float v, bool isMax, float* scratch) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const float o = shfl_xor(v, off);
    v = isMax ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < DECODE_REDUCE_THREADS / 32; w++) {
    r = isMax ? fmaxf(r, scratch[w]) : r + scratch[w];
  }
  return r;
}

extern "C" __global__ void decode_reduce(uint16_t* out, const float* partOut, const float* partMl, const int32_t* contextLens, int32_t numHeads, int32_t headDim, int32_t maxContext, int32_t partSize, int32_t numParts) {
  __shared__ float weight[DECODE_REDUCE_CHUNK];
  __shared__ float scratch[DECODE_REDUCE_THREADS / 32];
  __shared__ __align__(16) float4 slicesum[DECODE_REDUCE_THREADS];
  pdl_launch_dependents();
  const int h = blockIdx.x;
  const int b = blockIdx.y;
  const int tid = threadIdx.x;
  int ctx = contextLens[b];
  ctx = max(0, min(ctx, maxContext));
  // The partials come from the kernel before (decode_attn_*); out may still be read by it.
  pdl_wait();
  const int parts = (ctx + partSize - 1) / partSize;
  const size_t head = static_cast<size_t>(b) * numHeads + h;
  const float* ml = partMl + head * numParts * 2;
  const int vecs = headDim / 4;  // float4 columns of a partial row
  const int slices = DECODE_REDUCE_THREADS / vecs;
  const int v = tid % vecs, slice = tid / vecs;
  const float4* o = reinterpret_cast<const float4*>(partOut + head * numParts * headDim) + v;

  float mx = -INFINITY;
  for (int p = tid; p < parts; p += DECODE_REDUCE_THREADS) mx = fmaxf(mx, ml[2 * p]);
  mx = block_reduce(mx, true, scratch);

  float sum = 0.0f;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int base = 0; base < parts; base += DECODE_REDUCE_CHUNK) {
    const int n = min(DECODE_REDUCE_CHUNK, parts - base);
    __syncthreads();  // the previous chunk's weights are consumed
    for (int i = tid; i < n; i += DECODE_REDUCE_THREADS) {
      const float w = exp2f(ml[2 * (base + i)] - mx);
      weight[i] = w;
      sum = fmaf(w, ml[2 * (base + i) + 1], sum);
    }
    __syncthreads();
    int i = slice;
    for (; i + 3 * slices < n; i += 4 * slices) {
      float4 x[4];
#pragma unroll
      for (int u = 0; u < 4; u++) x[u] = o[static_cast<size_t>(base + i + u * slices) * vecs];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const float w = weight[i + u * slices];
        acc.x = fmaf(w, x[u].x, acc.x);
        acc.y = fmaf(w, x[u].y, acc.y);
        acc.z = fmaf(w, x[u].z, acc.z);
        acc.w = fmaf(w, x[u].w, acc.w);
      }
    }
    for (; i < n; i += slices) {
      const float4 x = o[static_cast<size_t>(base + i) * vecs];
      const float w = weight[i];
      acc.x = fmaf(w, x.x, acc.x);
      acc.y = fmaf(w, x.y, acc.y);
      acc.z = fmaf(w, x.z, acc.z);
      acc.w = fmaf(w, x.w, acc.w);
    }
  }
  sum = block_reduce(sum, false, scratch);
  slicesum[tid] = acc;
  __syncthreads();
  if (tid < vecs) {
    float4 total = slicesum[tid];
    for (int s2 = 1; s2 < slices; s2++) {
      const float4 x = slicesum[s2 * vecs + tid];
      total.x += x.x;
      total.y += x.y;
      total.z += x.z;
      total.w += x.w;
    }
    // An empty context has no softmax; its output is defined as zeros.
    const float inv = parts > 0 ? 1.0f / sum : 0.0f;
    uint2 packed;
    packed.x = bf16_pack2(total.x * inv, total.y * inv);
    packed.y = bf16_pack2(total.z * inv, total.w * inv);
    *reinterpret_cast<uint2*>(out + head * headDim + tid * 4) = packed;
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill attention. Block (tile, head): 64 query rows of one sequence (the tiles of every
// sequence are numbered one after another, each sequence's heaviest — last — tile first), for one
// query head, iterating over key tiles (64 keys with tensor cores, 32 in the portable kernel) up
// to the tile's causal limit with an online softmax in fp32. Grid
// (floor((tokens + 63·seqs) / 64), numHeads), 128 threads; blocks past the real tile count exit.

#define PREFILL_BM 64

struct PrefillTile {
  int qStart;   // packed index of the tile's first query row
  int rows;     // valid query rows in the tile (1..64)
  int firstPos; // position of the first row
  int kvEnd;    // keys [0, kvEnd) are visible to some row of the tile
  int seq;
};

// Finds this block's tile by walking the sequences; false if the block has no tile.
__device__ __forceinline__ bool prefill_tile(const int32_t* queryStarts,
                                             const int32_t* contextLens, int seqs, int tileIndex,
                                             int cacheTokens, PrefillTile& t) {
  int index = tileIndex;
  for (int s = 0; s < seqs; s++) {
    const int qs = queryStarts[s];
    const int nq = max(0, queryStarts[s + 1] - qs);
    const int tiles = (nq + PREFILL_BM - 1) / PREFILL_BM;
    if (index < tiles) {
      const int tile = tiles - 1 - index;
      const int ctx = max(0, min(contextLens[s], cacheTokens));
      t.qStart = qs + tile * PREFILL_BM;
      t.rows = min(PREFILL_BM, nq - tile * PREFILL_BM);
      t.firstPos = max(0, ctx - nq) + tile * PREFILL_BM;
      t.kvEnd = min(t.firstPos + t.rows, ctx);
      t.seq = s;
      return true;
    }
    index -= tiles;
  }
  return false;
}

// Portable path (HIP, and a reference for the tensor-core path): BN = 32 keys per tile. Thread
// (row = tid / 2, half = tid % 2) scores 16 keys of its row and accumulates half of the row's
// output dimensions.
template <int D, bool FP8 = false>
__device__ __forceinline__ void prefill_simt(
    uint16_t* __restrict__ out, const uint16_t* __restrict__ q,
    const typename KvCache<FP8>::Elem* __restrict__ kCache,
    const typename KvCache<FP8>::Elem* __restrict__ vCache,
    const int32_t* __restrict__ queryStarts, const int32_t* __restrict__ contextLens,
    const int32_t* __restrict__ blockTables, int seqs, int numHeads, int numKvHeads,
    int blockSize, int maxBlocks, int numBlocks, float scale, int /*stages: static smem here*/,
    float kScale = 1.0f, float vScale = 1.0f) {
  constexpr int BN = 32;
  constexpr int QS = D + 2;   // padded rows (in bf16) so the 16 rows of a warp hit 16 banks
  constexpr int KS = D + 2;
  constexpr int PS = BN + 1;
  constexpr int HALF = D / 2;
  __shared__ __align__(16) uint16_t Qs[PREFILL_BM * QS];
  __shared__ __align__(16) uint16_t Ks[BN * KS];
  __shared__ __align__(16) uint16_t Vs[BN * D];
  __shared__ float Ps[PREFILL_BM * PS];

  PrefillTile t;
  if (!prefill_tile(queryStarts, contextLens, seqs, blockIdx.x, maxBlocks * blockSize, t)) return;
  const int h = blockIdx.y;
  const int kvh = h / (numHeads / numKvHeads);
  const int tid = threadIdx.x;
  const int row = tid >> 1;
  const int half = tid & 1;
  const int shift = log2_pow2(blockSize);
  const int32_t* table = blockTables + static_cast<size_t>(t.seq) * maxBlocks;
  constexpr int CH = D / 8;

  for (int c = tid; c < PREFILL_BM * CH; c += ATTN_THREADS) {
    const int r = c / CH, col = (c % CH) * 8;
    const uint4 x = r < t.rows
                        ? load16(q + (static_cast<size_t>(t.qStart + r) * numHeads + h) * D + col)
                        : make_uint4(0u, 0u, 0u, 0u);
    uint32_t* dst = reinterpret_cast<uint32_t*>(Qs + r * QS + col);
    dst[0] = x.x;
    dst[1] = x.y;
    dst[2] = x.z;
    dst[3] = x.w;
  }
  // Rows past the sequence take the last row's position: finite, never stored.
  const int pos = t.firstPos + min(row, t.rows - 1);
  const float qscale = scale * LOG2E;
  float acc[HALF];
#pragma unroll
  for (int i = 0; i < HALF; i++) acc[i] = 0.0f;
  float mRow = -INFINITY, lRow = 0.0f;

  for (int kv0 = 0; kv0 < t.kvEnd; kv0 += BN) {
    __syncthreads();  // the previous tile's K/V/P are consumed (and Qs is written, first time)
    for (int c = tid; c < BN * CH; c += ATTN_THREADS) {
      const int r = c / CH, col = (c % CH) * 8;
      const int kv = kv0 + r;
      uint4 kx = make_uint4(0u, 0u, 0u, 0u), vx = kx;
      if (kv < t.kvEnd) {
        const size_t at = cache_row(table, kv, shift, kvh, numKvHeads, numBlocks, D) + col;
        kx = KvCache<FP8>::bf16x8(kCache + at, kScale);
        vx = KvCache<FP8>::bf16x8(vCache + at, vScale);
      }
      uint32_t* kd = reinterpret_cast<uint32_t*>(Ks + r * KS + col);
      kd[0] = kx.x;
      kd[1] = kx.y;
      kd[2] = kx.z;
      kd[3] = kx.w;
      store16(Vs + r * D + col, vx);
    }
    __syncthreads();

    float s[BN / 2];
#pragma unroll
    for (int j = 0; j < BN / 2; j++) s[j] = 0.0f;
    for (int d = 0; d < D; d += 2) {
      const uint32_t qq = *reinterpret_cast<const uint32_t*>(Qs + row * QS + d);
      const float q0 = __uint_as_float(qq << 16), q1 = __uint_as_float(qq & 0xffff0000u);
#pragma unroll
      for (int j = 0; j < BN / 2; j++) {
        const uint32_t kk = *reinterpret_cast<const uint32_t*>(Ks + (half * (BN / 2) + j) * KS + d);
        s[j] = fmaf(q0, __uint_as_float(kk << 16), s[j]);
        s[j] = fmaf(q1, __uint_as_float(kk & 0xffff0000u), s[j]);
      }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 2; j++) {
      const int kv = kv0 + half * (BN / 2) + j;
      s[j] = (kv <= pos && kv < t.kvEnd) ? s[j] * qscale : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    mx = fmaxf(mx, shfl_xor(mx, 1));
    const float mNew = fmaxf(mRow, mx);
    // Every row sees key 0 in the first tile, so mNew is finite; the guard keeps NaN out anyway.
    const float mUse = mNew == -INFINITY ? 0.0f : mNew;
    const float alpha = exp2f(mRow - mUse);
    mRow = mNew;
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < BN / 2; j++) {
      const float p = exp2f(s[j] - mUse);
      sum += p;
      Ps[row * PS + half * (BN / 2) + j] = p;
    }
    lRow = lRow * alpha + sum;
#pragma unroll
    for (int i = 0; i < HALF; i++) acc[i] *= alpha;
    __syncthreads();
    for (int j = 0; j < BN; j++) {
      const float p = Ps[row * PS + j];
#pragma unroll
      for (int c = 0; c < HALF; c += 8) {
        float vf[8];
        unpack8(load16(Vs + j * D + half * HALF + c), vf);
#pragma unroll
        for (int i = 0; i < 8; i++) acc[c + i] = fmaf(p, vf[i], acc[c + i]);
      }
    }
  }
  lRow += shfl_xor(lRow, 1);
  if (row < t.rows) {
    // lRow is 0 only for a row that sees no key (a context shorter than its new tokens).
    const float inv = lRow > 0.0f ? 1.0f / lRow : 0.0f;
    uint16_t* dst = out + (static_cast<size_t>(t.qStart + row) * numHeads + h) * D + half * HALF;
#pragma unroll
    for (int c = 0; c < HALF; c += 8) {
      uint4 x;
      x.x = bf16_pack2(acc[c] * inv, acc[c + 1] * inv);
      x.y = bf16_pack2(acc[c + 2] * inv, acc[c + 3] * inv);
      x.z = bf16_pack2(acc[c + 4] * inv, acc[c + 5] * inv);
      x.w = bf16_pack2(acc[c + 6] * inv, acc[c + 7] * inv);
      store16(dst + c, x);
    }
  }
}

#ifndef DENALI_HIP
// Tensor-core path (sm_80+): warp w owns query rows 16w..16w+15 of the tile; S = Q·Kᵀ and
// O += P·V with mma.sync m16n8k16 (bf16 in, fp32 accumulate), P rounded to bf16 for the second
// product as FlashAttention does. BN = 64; shared rows padded by 16 bytes so the fragment loads
// and ldmatrix phases are conflict-free.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 b16 matrices from shared memory: lanes 8i..8i+7 address the rows of matrix i; lane t
// receives row t/4, columns 2(t%4) and 2(t%4)+1 of each (the B-fragment layout for K rows).
__device__ __forceinline__ void ldmatrix_x4(const uint16_t* p, uint32_t& r0, uint32_t& r1,
                                            uint32_t& r2, uint32_t& r3) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}

// bf16_pack2 in one instruction (round to nearest even, as f32_to_bf16).
__device__ __forceinline__ uint32_t pack_bf16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void ldmatrix_x4_trans(const uint16_t* p, uint32_t& r0, uint32_t& r1,
                                                  uint32_t& r2, uint32_t& r3) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}

// Shared bytes of one pipeline stage of prefill_mma<D>: a K and a V tile of 64 padded rows.
#define PREFILL_STAGE_BYTES(D) (2 * 64 * ((D) + 8) * 2)

template <int D, bool FP8 = false>
__device__ __forceinline__ void prefill_mma(
    uint16_t* __restrict__ out, const uint16_t* __restrict__ q,
    const typename KvCache<FP8>::Elem* __restrict__ kCache,
    const typename KvCache<FP8>::Elem* __restrict__ vCache,
    const int32_t* __restrict__ queryStarts, const int32_t* __restrict__ contextLens,
    const int32_t* __restrict__ blockTables, int seqs, int numHeads, int numKvHeads,
    int blockSize, int maxBlocks, int numBlocks, float scale, int stages, float kScale = 1.0f,
    float vScale = 1.0f) {
  constexpr int BN = 64;
  constexpr int STR = D + 8;          // bf16 per shared row: 16 bytes of padding
  constexpr int CH = D / 8;           // 16-byte chunks per row
  constexpr int LOADS = BN * CH / ATTN_THREADS;
  constexpr int KSTEPS = D / 16;      // k-steps of Q·Kᵀ
  constexpr int NT = BN / 8;          // n-tiles of S
  constexpr int DT = D / 8;           // n-tiles of O
  constexpr int STAGE = 2 * BN * STR; // bf16 per stage: K tile, then V tile
  // `stages` (1 or 2) stages of PREFILL_STAGE_BYTES(D) each, sized by the launch.
  extern __shared__ __align__(16) uint16_t prefillSmem[];

  PrefillTile t;
  if (!prefill_tile(queryStarts, contextLens, seqs, blockIdx.x, maxBlocks * blockSize, t)) return;
  const int h = blockIdx.y;
  const int kvh = h / (numHeads / numKvHeads);
  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tig = lane & 3;
  const int shift = log2_pow2(blockSize);
  const int32_t* table = blockTables + static_cast<size_t>(t.seq) * maxBlocks;

  // Q tile through stage 0 into A fragments, kept in registers for the whole key loop.
  uint16_t* stage0 = prefillSmem;
#pragma unroll
  for (int i = 0; i < PREFILL_BM * CH / ATTN_THREADS; i++) {
    const int c = tid + i * ATTN_THREADS;
    const int r = c / CH, col = (c % CH) * 8;
    const uint4 x = r < t.rows
                        ? load16(q + (static_cast<size_t>(t.qStart + r) * numHeads + h) * D + col)
                        : make_uint4(0u, 0u, 0u, 0u);
    store16(stage0 + r * STR + col, x);
  }
  __syncthreads();
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  uint32_t qa[KSTEPS][4];
#pragma unroll
  for (int kk = 0; kk < KSTEPS; kk++) {
    const int c = kk * 16 + tig * 2;
    qa[kk][0] = *reinterpret_cast<const uint32_t*>(stage0 + r0 * STR + c);
    qa[kk][1] = *reinterpret_cast<const uint32_t*>(stage0 + r1 * STR + c);
    qa[kk][2] = *reinterpret_cast<const uint32_t*>(stage0 + r0 * STR + c + 8);
    qa[kk][3] = *reinterpret_cast<const uint32_t*>(stage0 + r1 * STR + c + 8);
  }
  __syncthreads();  // stage 0 is free for the first K/V tile
  // Rows past the sequence take the last row's position: finite, never stored.
  const int pos0 = t.firstPos + min(r0, t.rows - 1);
  const int pos1 = t.firstPos + min(r1, t.rows - 1);
  const float qscale = scale * LOG2E;

  // Issues the cp.async copies of key tile `tile` into `stage` (rows past the keys zero-filled).
  // An fp8 cache has no copy to issue: its codes are loaded, widened to bf16 and stored by the
  // threads themselves, so the tile is in shared memory once the __syncthreads after the
  // (then empty) cp_async_wait passes; with two stages those loads still precede the compute.
  auto issue = [&](int tile, int stage) {
    uint16_t* ks = prefillSmem + stage * STAGE;
    uint16_t* vs = ks + BN * STR;
#pragma unroll
    for (int i = 0; i < LOADS; i++) {
      const int c = tid + i * ATTN_THREADS;
      const int row = c / CH, col = (c % CH) * 8;
      const int kv = tile * BN + row;
      const bool valid = kv < t.kvEnd;
      const size_t at =
          valid ? cache_row(table, kv, shift, kvh, numKvHeads, numBlocks, D) + col : 0;
      if (FP8) {
        const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
        store16(ks + row * STR + col, valid ? KvCache<FP8>::bf16x8(kCache + at, kScale) : zero);
        store16(vs + row * STR + col, valid ? KvCache<FP8>::bf16x8(vCache + at, vScale) : zero);
      } else {
        // A row past the keys is zero-filled (src-size 0 reads nothing).
        cp_async16(smem_addr(ks + row * STR + col), kCache + at, valid ? 16 : 0);
        cp_async16(smem_addr(vs + row * STR + col), vCache + at, valid ? 16 : 0);
      }
    }
    cp_async_commit();
  };

  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  const int tiles = (t.kvEnd + BN - 1) / BN;
  issue(0, 0);
  for (int tile = 0; tile < tiles; tile++) {
    // Two stages: the next tile's copies fly while this one is computed.
    if (stages == 2 && tile + 1 < tiles) {
      issue(tile + 1, (tile + 1) & 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies of this tile have landed
    const uint16_t* Ks = prefillSmem + (stages == 2 ? (tile & 1) : 0) * STAGE;
    const uint16_t* Vs = Ks + BN * STR;
    const int kv0 = tile * BN;

    float s[NT][4];
    // Lanes 0-7 address key rows 8nt..8nt+7 at dims [16kk, +8), lanes 8-15 at [16kk+8, +8),
    // lanes 16-31 the same for k-step kk+1: the four matrices are b0,b1 of two k-steps.
    const uint16_t* kbase = Ks + (lane & 7) * STR + (lane >> 3) * 8;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(kbase + nt * 8 * STR + kk * 16, b0, b1, b2, b3);
        mma_bf16(s[nt], qa[kk], b0, b1);
        mma_bf16(s[nt], qa[kk + 1], b2, b3);
      }
    }
    // Tiles wholly below the diagonal (every row sees every key) skip the mask.
    const bool open = kv0 + BN - 1 <= t.firstPos && kv0 + BN <= t.kvEnd;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kv = kv0 + nt * 8 + tig * 2 + (e & 1);
        const int pos = e < 2 ? pos0 : pos1;
        s[nt][e] = (open || (kv <= pos && kv < t.kvEnd)) ? s[nt][e] * qscale : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    // The four lanes of a quad share rows g and g + 8.
    mx0 = fmaxf(mx0, shfl_xor(mx0, 1));
    mx0 = fmaxf(mx0, shfl_xor(mx0, 2));
    mx1 = fmaxf(mx1, shfl_xor(mx1, 1));
    mx1 = fmaxf(mx1, shfl_xor(mx1, 2));
    const float mNew0 = fmaxf(m0, mx0), mNew1 = fmaxf(m1, mx1);
    // Every row sees key 0 in the first tile, so these are finite; the guard keeps NaN out.
    const float mUse0 = mNew0 == -INFINITY ? 0.0f : mNew0;
    const float mUse1 = mNew1 == -INFINITY ? 0.0f : mNew1;
    const float alpha0 = exp2f(m0 - mUse0), alpha1 = exp2f(m1 - mUse1);
    m0 = mNew0;
    m1 = mNew1;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      s[nt][0] = exp2f(s[nt][0] - mUse0);
      s[nt][1] = exp2f(s[nt][1] - mUse0);
      s[nt][2] = exp2f(s[nt][2] - mUse1);
      s[nt][3] = exp2f(s[nt][3] - mUse1);
      sum0 += s[nt][0] + s[nt][1];
      sum1 += s[nt][2] + s[nt][3];
    }
    // Quad-partial sums; all four lanes scale by the same alpha, so they combine at the end.
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
#pragma unroll
    for (int i = 0; i < DT; i++) {
      o[i][0] *= alpha0;
      o[i][1] *= alpha0;
      o[i][2] *= alpha1;
      o[i][3] *= alpha1;
    }
    // The S accumulator layout is the A-fragment layout of P: two n-tiles make one k-step.
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      uint32_t pa[4];
      pa[0] = pack_bf16x2_rn(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack_bf16x2_rn(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack_bf16x2_rn(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack_bf16x2_rn(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      // Lanes 0-7 address rows k0..k0+7 of dims [8n, 8n+8), lanes 8-15 rows k0+8.., lanes
      // 16-31 the same for dims [8n+8, 8n+16): the four matrices are b0,b1 of two n-tiles.
      const uint16_t* vrow =
          Vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * STR + (lane >> 4) * 8;
#pragma unroll
      for (int nd = 0; nd < DT; nd += 2) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(vrow + nd * 8, b0, b1, b2, b3);
        mma_bf16(o[nd], pa, b0, b1);
        mma_bf16(o[nd + 1], pa, b2, b3);
      }
    }
    __syncthreads();  // this stage is consumed; the next issue may overwrite it
    if (stages != 2 && tile + 1 < tiles) issue(tile + 1, 0);
  }
  l0 += shfl_xor(l0, 1);
  l0 += shfl_xor(l0, 2);
  l1 += shfl_xor(l1, 1);
  l1 += shfl_xor(l1, 2);
  // l is 0 only for a row that sees no key (a context shorter than its new tokens).
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  if (r0 < t.rows) {
    uint16_t* dst = out + (static_cast<size_t>(t.qStart + r0) * numHeads + h) * D + tig * 2;
#pragma unroll
    for (int i = 0; i < DT; i++) {
      *reinterpret_cast<uint32_t*>(dst + i * 8) = bf16_pack2(o[i][0] * inv0, o[i][1] * inv0);
    }
  }
  if (r1 < t.rows) {
    uint16_t* dst = out + (static_cast<size_t>(t.qStart + r1) * numHeads + h) * D + tig * 2;
#pragma unroll
    for (int i = 0; i < DT; i++) {
      *reinterpret_cast<uint32_t*>(dst + i * 8) = bf16_pack2(o[i][2] * inv1, o[i][3] * inv1);
    }
  }
}
#endif

#define PREFILL_ARGS                                                                          \
  out, q, kCache, vCache, queryStarts, contextLens, blockTables, seqs, numHeads, numKvHeads, \
      blockSize, maxBlocks, numBlocks, scale, stages
#ifdef DENALI_HIP
#define PREFILL_FAST prefill_simt
#else
#define PREFILL_FAST prefill_mma
#endif

// prefill_attn_*: the tensor-core kernel on CUDA (the portable one under HIP, which has no
// mma.sync); prefill_attn_simt_*: the portable kernel everywhere, so CUDA tests can check it.
// On CUDA prefill_attn_d* takes `stages` (1 or 2) × PREFILL_STAGE_BYTES(D) of dynamic shared
// memory; the portable kernels use static shared memory, take 0 and ignore `stages`.
extern "C" __global__ void prefill_attn_d64(uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages) {
  PREFILL_FAST<64>(PREFILL_ARGS);
}
extern "C" __global__ void prefill_attn_d128(uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages) {
  PREFILL_FAST<128>(PREFILL_ARGS);
}
extern "C" __global__ void prefill_attn_simt_d64(uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages) {
  prefill_simt<64>(PREFILL_ARGS);
}
extern "C" __global__ void prefill_attn_simt_d128(uint16_t* out, const uint16_t* q, const uint16_t* kCache, const uint16_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages) {
  prefill_simt<128>(PREFILL_ARGS);
}

// The prefill kernels over an fp8 cache: the same bodies, K/V widened to bf16 (code · kScale,
// code · vScale) as they enter shared memory. Same grid, threads and dynamic shared memory.
#define PREFILL_FP8_ARGS PREFILL_ARGS, kScale, vScale
extern "C" __global__ void prefill_attn_fp8_d64(uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages, float kScale, float vScale) {
  PREFILL_FAST<64, true>(PREFILL_FP8_ARGS);
}
extern "C" __global__ void prefill_attn_fp8_d128(uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages, float kScale, float vScale) {
  PREFILL_FAST<128, true>(PREFILL_FP8_ARGS);
}
extern "C" __global__ void prefill_attn_simt_fp8_d64(uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages, float kScale, float vScale) {
  prefill_simt<64, true>(PREFILL_FP8_ARGS);
}
extern "C" __global__ void prefill_attn_simt_fp8_d128(uint16_t* out, const uint16_t* q, const uint8_t* kCache, const uint8_t* vCache, const int32_t* queryStarts, const int32_t* contextLens, const int32_t* blockTables, int32_t seqs, int32_t numHeads, int32_t numKvHeads, int32_t blockSize, int32_t maxBlocks, int32_t numBlocks, float scale, int32_t stages, float kScale, float vScale) {
  prefill_simt<128, true>(PREFILL_FP8_ARGS);
}
