// Elementwise and normalisation kernels of the forward pass: embedding gather, RMSNorm (plain
// and fused with the residual add), per-head q/k RMSNorm, the q/k/v bias add, rotary embedding,
// SiLU-and-multiply, the f32 <-> bf16 casts, and the seeded random fill behind random weights.
// All but the fill are memory-bound; most have a 16-byte path (uint4 = 8 bf16) taken when
// their sizes and pointers allow, and a scalar path for the rest (the per-head norm and the
// bias add, a few KB per token, have only the scalar one). The kernels check alignment themselves (a uniform
// branch), so any slice of a buffer is correct.
//
// Rounding follows HF transformers with bf16 weights, step for step, and ops/cpu/
// elementwise.ts rounds at exactly the same places (see each kernel). Signatures stay on one
// line each for kernels/build.ts.
//
// Programmatic dependent launch (pdl.h): the kernels that sit between a decode step's GEMVs
// (both RMSNorms, qkv_rope, silu_mul, cast_bf16_to_f32) open with launch_dependents, so the next
// GEMV starts streaming its weights while they run, and they wait (every block, before any read
// of what an earlier kernel wrote, and before any write) so that they may themselves launch
// while the GEMV before them drains. Every block reaching pdl_wait also keeps the stream's order
// transitive: such a kernel completes only after everything enqueued before it has.
#include "compat.h"
#include "fp8.h"
#include "pdl.h"
#include "philox.h"
#include "rms.h"
#include "silu.h"

#ifdef DENALI_HIP
#define DENALI_WARP warpSize
#else
#define DENALI_WARP 32
#endif

// Rows of up to RMS_CACHED_VECS * blockDim.x vectors stay in registers between the two passes
// of RMSNorm (2 x 1024 x 8 = 16384 elements); wider rows are read twice.
#define RMS_CACHED_VECS 2

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

__device__ __forceinline__ float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

__device__ __forceinline__ void unpack8(const uint4 v, float f[8]) {
  f[0] = bf16_lo(v.x); f[1] = bf16_hi(v.x);
  f[2] = bf16_lo(v.y); f[3] = bf16_hi(v.y);
  f[4] = bf16_lo(v.z); f[5] = bf16_hi(v.z);
  f[6] = bf16_lo(v.w); f[7] = bf16_hi(v.w);
}

__device__ __forceinline__ uint4 pack8(const float f[8]) {
  return make_uint4(bf16_pack2(f[0], f[1]), bf16_pack2(f[2], f[3]), bf16_pack2(f[4], f[5]), bf16_pack2(f[6], f[7]));
}

__device__ __forceinline__ float warp_sum(float v) {
#ifdef DENALI_HIP
  for (int offset = warpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor(v, offset);
#else
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
#endif
  return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 64 (whole
// warps on both vendors). Every warp re-reduces the per-warp partials itself, so one barrier
// suffices and the order, hence the result, is fixed for a given block size.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % DENALI_WARP;
  const int warp = threadIdx.x / DENALI_WARP;
  const int warps = blockDim.x / DENALI_WARP;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// out[t, :] = table[ids[t], :]; an id outside [0, vocab) gives a zero row rather than a read
// out of bounds. Grid: one block per token; block: any multiple of 32 threads.
extern "C" __global__ void embedding_bf16(uint16_t* __restrict__ out, const uint16_t* __restrict__ table, const int32_t* __restrict__ ids, uint32_t hidden, uint32_t vocab) {
  const size_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool valid = id >= 0 && static_cast<uint32_t>(id) < vocab;
  const uint16_t* src = table + static_cast<size_t>(valid ? id : 0) * hidden;
  uint16_t* dst = out + t * hidden;
  if (hidden % 8 == 0 && aligned16(out) && aligned16(table)) {
    const uint32_t nvec = hidden / 8;
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* d = reinterpret_cast<uint4*>(dst);
    for (uint32_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      d[i] = valid ? s[i] : make_uint4(0u, 0u, 0u, 0u);
    }
  } else {
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = valid ? src[i] : 0;
  }
}

// RMSNorm of one row per block, as HF LlamaRMSNorm computes it in bf16:
//   h = x (fp32); inv = 1 / sqrt(mean(h^2) + eps) (fp32); out = bf16(w * bf16(h * inv)).
// FUSED: the pre-norm step first sets residual = bf16(residual + x) and normalises that.
// `out` may alias `x` or `residual`: every element is read and written by the same thread, and
// all first-pass reads precede the barrier in block_sum.
// Grid: one block per token; block: a multiple of 64 threads, at most 1024.
template <bool FUSED>
__device__ __forceinline__ void rms_norm_row(uint16_t* out, const uint16_t* x, const uint16_t* weight, uint16_t* residual, uint32_t hidden, float eps) {
  __shared__ float scratch[32];
  pdl_launch_dependents();
  pdl_wait();
  const size_t base = static_cast<size_t>(blockIdx.x) * hidden;
  const uint16_t* xr = x + base;
  uint16_t* rr = FUSED ? residual + base : nullptr;
  uint16_t* outr = out + base;
  const bool vec = hidden % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(weight) &&
                   (!FUSED || aligned16(residual));
  const float n = static_cast<float>(hidden);
  if (vec) {
    const uint32_t nvec = hidden / 8;
    const uint4* x4 = reinterpret_cast<const uint4*>(xr);
    uint4* r4 = reinterpret_cast<uint4*>(rr);
    const uint4* w4 = reinterpret_cast<const uint4*>(weight);
    uint4* o4 = reinterpret_cast<uint4*>(outr);
    if (nvec <= RMS_CACHED_VECS * blockDim.x) {
      float v[RMS_CACHED_VECS][8];
      float ss = 0.0f;
#pragma unroll
      for (int j = 0; j < RMS_CACHED_VECS; j++) {
        const uint32_t i = threadIdx.x + j * blockDim.x;
        if (i < nvec) {
          unpack8(x4[i], v[j]);
          if (FUSED) {
            float r[8];
            unpack8(r4[i], r);
#pragma unroll
            for (int e = 0; e < 8; e++) v[j][e] = round_bf16(v[j][e] + r[e]);
            r4[i] = pack8(v[j]);
          }
#pragma unroll
          for (int e = 0; e < 8; e++) ss += v[j][e] * v[j][e];
        }
      }
      const float inv = rms_scale(block_sum(ss, scratch), n, eps);
#pragma unroll
      for (int j = 0; j < RMS_CACHED_VECS; j++) {
        const uint32_t i = threadIdx.x + j * blockDim.x;
        if (i < nvec) {
          float w[8];
          unpack8(w4[i], w);
#pragma unroll
          for (int e = 0; e < 8; e++) v[j][e] = w[e] * round_bf16(v[j][e] * inv);
          o4[i] = pack8(v[j]);
        }
      }
    } else {
      float ss = 0.0f;
      for (uint32_t i = threadIdx.x; i < nvec; i += blockDim.x) {
        float v[8];
        unpack8(x4[i], v);
        if (FUSED) {
          float r[8];
          unpack8(r4[i], r);
#pragma unroll
          for (int e = 0; e < 8; e++) v[e] = round_bf16(v[e] + r[e]);
          r4[i] = pack8(v);
        }
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[e] * v[e];
      }
      const float inv = rms_scale(block_sum(ss, scratch), n, eps);
      const uint4* src = FUSED ? r4 : x4;
      for (uint32_t i = threadIdx.x; i < nvec; i += blockDim.x) {
        float v[8], w[8];
        unpack8(src[i], v);
        unpack8(w4[i], w);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = w[e] * round_bf16(v[e] * inv);
        o4[i] = pack8(v);
      }
    }
  } else {
    float ss = 0.0f;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      float v = bf16_to_f32(xr[i]);
      if (FUSED) {
        const uint16_t sum = f32_to_bf16(v + bf16_to_f32(rr[i]));
        rr[i] = sum;
        v = bf16_to_f32(sum);
      }
      ss += v * v;
    }
    const float inv = rms_scale(block_sum(ss, scratch), n, eps);
    const uint16_t* src = FUSED ? rr : xr;
    for (uint32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      outr[i] = f32_to_bf16(bf16_to_f32(weight[i]) * round_bf16(bf16_to_f32(src[i]) * inv));
    }
  }
}

// out = rmsnorm(x) * weight, one row per block.
extern "C" __global__ void rms_norm_bf16(uint16_t* out, const uint16_t* x, const uint16_t* weight, uint32_t hidden, float eps) {
  rms_norm_row<false>(out, x, weight, nullptr, hidden, eps);
}

// residual = bf16(residual + x); out = rmsnorm(residual) * weight, one row per block.
extern "C" __global__ void rms_norm_residual_bf16(uint16_t* out, const uint16_t* x, const uint16_t* weight, uint16_t* residual, uint32_t hidden, float eps) {
  rms_norm_row<true>(out, x, weight, residual, hidden, eps);
}

// RMSNorm of every head of q and k in place (Qwen3's q_norm and k_norm), rounded as
// rms_norm_row rounds: out = bf16(w * bf16(h * inv)). One warp per head row: lane i takes
// elements i, i + warp, ...; each element is read and written by the same lane, so in place is
// safe. Grid: one block per token; block: whole warps (rows are dealt to them in turn).
extern "C" __global__ void qk_norm_bf16(uint16_t* q, uint16_t* k, const uint16_t* __restrict__ q_weight, const uint16_t* __restrict__ k_weight, uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, float eps) {
  const uint32_t lane = threadIdx.x % DENALI_WARP;
  const uint32_t warps = blockDim.x / DENALI_WARP;
  const float n = static_cast<float>(head_dim);
  for (uint32_t r = threadIdx.x / DENALI_WARP; r < num_heads + num_kv_heads; r += warps) {
    const bool is_q = r < num_heads;
    uint16_t* row = is_q ? q + (static_cast<size_t>(blockIdx.x) * num_heads + r) * head_dim
                         : k + (static_cast<size_t>(blockIdx.x) * num_kv_heads + (r - num_heads)) * head_dim;
    const uint16_t* w = is_q ? q_weight : k_weight;
    float ss = 0.0f;
    for (uint32_t i = lane; i < head_dim; i += DENALI_WARP) {
      const float v = bf16_to_f32(row[i]);
      ss += v * v;
    }
    const float inv = rms_scale(warp_sum(ss), n, eps);
    for (uint32_t i = lane; i < head_dim; i += DENALI_WARP) {
      const float h = round_bf16(bf16_to_f32(row[i]) * inv);
      row[i] = f32_to_bf16(bf16_to_f32(w[i]) * h);
    }
  }
}

// q, k and v += their slices of the fused bias [q_width + 2 * kv_width], each sum rounded to
// bf16 (Qwen2's biased projections). Grid: one block per token; block: any size.
extern "C" __global__ void qkv_bias_bf16(uint16_t* q, uint16_t* k, uint16_t* v, const uint16_t* __restrict__ bias, uint32_t q_width, uint32_t kv_width) {
  const size_t t = blockIdx.x;
  const uint32_t total = q_width + 2 * kv_width;
  for (uint32_t i = threadIdx.x; i < total; i += blockDim.x) {
    uint16_t* p = i < q_width ? q + t * q_width + i
                : i < q_width + kv_width ? k + t * kv_width + (i - q_width)
                : v + t * kv_width + (i - q_width - kv_width);
    *p = f32_to_bf16(bf16_to_f32(*p) + bf16_to_f32(bias[i]));
  }
}

// One token's cos (cs[0, half)) and sin (cs[half, 2·half)) at angle position · inv_freq[i],
// computed by the whole block into shared memory; returns after the block's barrier.
__device__ __forceinline__ void rope_trig(float* cs, int32_t position, const float* inv_freq, uint32_t half) {
  const float pos = static_cast<float>(position);
  for (uint32_t i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    // Accurate sincosf (not __sincosf): angles reach tens of thousands of radians.
    sincosf(pos * inv_freq[i], &s, &c);
    cs[i] = c;
    cs[half + i] = s;
  }
  __syncthreads();
}

// Rotary embedding in place, HF "rotate_half" pairing (element i with i + headDim/2):
//   angle = fp32(positions[t]) * invFreq[i] (one fp32 multiply); c, s = cos, sin (fp32);
//   x1' = bf16(x1 c - x2 s), x2' = bf16(x2 c + x1 s).
// HF rounds cos and sin to bf16 first; keeping them fp32 is more accurate and what Denali's CPU
// reference does too. Grid: one block per token; block: any multiple of 32 threads; dynamic
// shared memory: headDim floats (cos then sin of this token).
extern "C" __global__ void rope_bf16(uint16_t* q, uint16_t* k, const int32_t* positions, const float* inv_freq, uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim) {
  extern __shared__ float4 rope_shared[];
  float* cs = reinterpret_cast<float*>(rope_shared);
  const uint32_t half = head_dim / 2;
  const size_t t = blockIdx.x;
  rope_trig(cs, positions[t], inv_freq, half);
  const uint32_t heads = num_heads + num_kv_heads;
  uint16_t* qt = q + t * num_heads * head_dim;
  uint16_t* kt = k + t * num_kv_heads * head_dim;
  if (half % 8 == 0 && aligned16(q) && aligned16(k)) {
    const uint32_t groups = half / 8;
    const uint32_t items = heads * groups;
    for (uint32_t item = threadIdx.x; item < items; item += blockDim.x) {
      const uint32_t h = item / groups;
      const uint32_t g = item - h * groups;
      uint16_t* head = h < num_heads ? qt + h * head_dim : kt + (h - num_heads) * head_dim;
      uint4* p1 = reinterpret_cast<uint4*>(head + g * 8);
      uint4* p2 = reinterpret_cast<uint4*>(head + half + g * 8);
      float a[8], b[8], c[8], s[8];
      unpack8(*p1, a);
      unpack8(*p2, b);
      // half % 8 == 0 keeps these float4 reads 16-byte aligned.
      const float4* c4 = reinterpret_cast<const float4*>(cs + g * 8);
      const float4* s4 = reinterpret_cast<const float4*>(cs + half + g * 8);
      const float4 c0 = c4[0], c1 = c4[1], s0 = s4[0], s1 = s4[1];
      c[0] = c0.x; c[1] = c0.y; c[2] = c0.z; c[3] = c0.w;
      c[4] = c1.x; c[5] = c1.y; c[6] = c1.z; c[7] = c1.w;
      s[0] = s0.x; s[1] = s0.y; s[2] = s0.z; s[3] = s0.w;
      s[4] = s1.x; s[5] = s1.y; s[6] = s1.z; s[7] = s1.w;
      float o1[8], o2[8];
#pragma unroll
      for (int e = 0; e < 8; e++) {
        o1[e] = a[e] * c[e] - b[e] * s[e];
        o2[e] = b[e] * c[e] + a[e] * s[e];
      }
      *p1 = pack8(o1);
      *p2 = pack8(o2);
    }
  } else {
    const uint32_t items = heads * half;
    for (uint32_t item = threadIdx.x; item < items; item += blockDim.x) {
      const uint32_t h = item / half;
      const uint32_t i = item - h * half;
      uint16_t* head = h < num_heads ? qt + h * head_dim : kt + (h - num_heads) * head_dim;
      const float a = bf16_to_f32(head[i]);
      const float b = bf16_to_f32(head[half + i]);
      const float c = cs[i], s = cs[half + i];
      head[i] = f32_to_bf16(a * c - b * s);
      head[half + i] = f32_to_bf16(b * c + a * s);
    }
  }
}

// The fused q|k|v projection split into contiguous q, k and v, with Qwen2's bias, Qwen3's per-head
// RMSNorm of q and k, and RoPE of q and k on the way, rounding to bf16 at the steps qkv_bias_bf16,
// qk_norm_bf16 and rope_bf16 round: flags bit 0 adds `bias`, bit 1 norms with q_norm and k_norm.
// Flag bit 2 also scatters the token's finished k and v rows into the paged KV cache at
// slots[token] (kv_write's layout and its skip of a negative or out-of-cache slot), as bf16, or
// with bit 3 as e4m3(bf16 value / scale), kv_write_fp8's codes; the decode step then needs no
// kv_write launch. Writing the cache, a block waits before it lets the next kernel start (as
// kv_write does): the decode attention after it reads earlier cache rows before its own wait,
// which is safe only once everything enqueued before this kernel is complete.
// Grid: (tokens, row blocks); block: whole warps, a warp per head row in turn (q heads, then k,
// then v), the token's rows dealt over its row blocks (several where few tokens leave SMs idle,
// so a decode token's rows run side by side rather than three deep a warp). A lane owns the rotated pairs (p, p + head_dim / 2) for p = lane, lane + warp, ..., so
// RoPE needs no exchange, and the norm's sum of squares is a warp reduction over the lanes'
// shares. Up to 8 pairs a lane: head_dim <= 16 · warp size. Dynamic shared memory: head_dim
// floats (this token's cos, then sin).
#define QKV_ROPE_MAX_PAIRS 8
extern "C" __global__ void qkv_rope_bf16(uint16_t* __restrict__ q, uint16_t* __restrict__ k, uint16_t* __restrict__ v, const uint16_t* __restrict__ qkv, const int32_t* __restrict__ positions, const float* __restrict__ inv_freq, const uint16_t* __restrict__ bias, const uint16_t* __restrict__ q_norm, const uint16_t* __restrict__ k_norm, uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, float eps, uint32_t flags, void* __restrict__ k_cache, void* __restrict__ v_cache, const int32_t* __restrict__ slots, uint32_t block_size, uint32_t num_blocks, float k_scale, float v_scale) {
  extern __shared__ float4 qkv_rope_shared[];
  float* cs = reinterpret_cast<float*>(qkv_rope_shared);
  const uint32_t half = head_dim / 2;
  const size_t t = blockIdx.x;
  const bool add_bias = (flags & 1u) != 0, norm = (flags & 2u) != 0;
  const bool to_cache = (flags & 4u) != 0, fp8_cache = (flags & 8u) != 0;
  if (to_cache) {
    pdl_wait();
    pdl_launch_dependents();
  } else {
    pdl_launch_dependents();
    pdl_wait();
  }
  rope_trig(cs, positions[t], inv_freq, half);
  // The token's row in the cache: a block and an offset in it, or none (-1).
  long long cache_row = -1;
  if (to_cache) {
    const int32_t slot = slots[t];
    if (slot >= 0 && static_cast<uint32_t>(slot) < num_blocks * block_size) {
      cache_row = static_cast<long long>(slot / block_size) * num_kv_heads * block_size +
                  slot % block_size;
    }
  }
  const uint32_t lane = threadIdx.x % DENALI_WARP;
  const uint32_t warps = blockDim.x / DENALI_WARP;
  const uint32_t rows = num_heads + 2 * num_kv_heads;
  const uint16_t* src = qkv + t * rows * head_dim;
  for (uint32_t r = blockIdx.y * warps + threadIdx.x / DENALI_WARP; r < rows; r += warps * gridDim.y) {
    const uint32_t col = r * head_dim;
    const bool is_q = r < num_heads, is_k = !is_q && r < num_heads + num_kv_heads;
    uint16_t* dst = is_q ? q + (t * num_heads + r) * head_dim
                  : is_k ? k + (t * num_kv_heads + (r - num_heads)) * head_dim
                         : v + (t * num_kv_heads + (r - num_heads - num_kv_heads)) * head_dim;
    float a[QKV_ROPE_MAX_PAIRS], b[QKV_ROPE_MAX_PAIRS];
    float ss = 0.0f;
#pragma unroll
    for (uint32_t j = 0; j < QKV_ROPE_MAX_PAIRS; j++) {
      const uint32_t p = lane + j * DENALI_WARP;
      a[j] = 0.0f;
      b[j] = 0.0f;
      if (p < half) {
        a[j] = bf16_to_f32(src[col + p]);
        b[j] = bf16_to_f32(src[col + half + p]);
        if (add_bias) {
          a[j] = round_bf16(a[j] + bf16_to_f32(bias[col + p]));
          b[j] = round_bf16(b[j] + bf16_to_f32(bias[col + half + p]));
        }
        ss += a[j] * a[j];
        ss += b[j] * b[j];
      }
    }
    if (is_q || is_k) {
      if (norm) {
        // The whole warp takes this branch together (r is the same across its lanes).
        const float inv = rms_scale(warp_sum(ss), static_cast<float>(head_dim), eps);
        const uint16_t* w = is_q ? q_norm : k_norm;
#pragma unroll
        for (uint32_t j = 0; j < QKV_ROPE_MAX_PAIRS; j++) {
          const uint32_t p = lane + j * DENALI_WARP;
          if (p < half) {
            a[j] = round_bf16(bf16_to_f32(w[p]) * round_bf16(a[j] * inv));
            b[j] = round_bf16(bf16_to_f32(w[half + p]) * round_bf16(b[j] * inv));
          }
        }
      }
#pragma unroll
      for (uint32_t j = 0; j < QKV_ROPE_MAX_PAIRS; j++) {
        const uint32_t p = lane + j * DENALI_WARP;
        if (p < half) {
          const float c = cs[p], s = cs[half + p];
          const float x1 = a[j], x2 = b[j];
          a[j] = x1 * c - x2 * s;
          b[j] = x2 * c + x1 * s;
        }
      }
    }
#pragma unroll
    for (uint32_t j = 0; j < QKV_ROPE_MAX_PAIRS; j++) {
      const uint32_t p = lane + j * DENALI_WARP;
      if (p < half) {
        dst[p] = f32_to_bf16(a[j]);
        dst[half + p] = f32_to_bf16(b[j]);
      }
    }
    if (!is_q && cache_row >= 0) {
      // Head h of the token sits at row (block · numKvHeads + h) · blockSize + offset.
      const uint32_t head = is_k ? r - num_heads : r - num_heads - num_kv_heads;
      const size_t at = static_cast<size_t>(cache_row + static_cast<long long>(head) * block_size) *
                        head_dim;
      void* cache = is_k ? k_cache : v_cache;
      const float scale = is_k ? k_scale : v_scale;
#pragma unroll
      for (uint32_t j = 0; j < QKV_ROPE_MAX_PAIRS; j++) {
        const uint32_t p = lane + j * DENALI_WARP;
        if (p < half) {
          if (fp8_cache) {
            // kv_write_fp8 quantizes the bf16 row as stored: round first.
            uint8_t* c = static_cast<uint8_t*>(cache) + at;
            c[p] = f32_to_e4m3(round_bf16(a[j]) / scale);
            c[half + p] = f32_to_e4m3(round_bf16(b[j]) / scale);
          } else {
            uint16_t* c = static_cast<uint16_t*>(cache) + at;
            c[p] = f32_to_bf16(a[j]);
            c[half + p] = f32_to_bf16(b[j]);
          }
        }
      }
    }
  }
}

// SiLU as HF computes it in bf16: the activation is rounded to bf16 before the multiply.
// out[t, i] = bf16(bf16(silu(gate[t, i])) * up[t, i]), gateUp = [gate | up] per row.
// tokens * inter * 2 must stay below 2^32. Grid-stride, so any grid and block are correct.
extern "C" __global__ void silu_mul_bf16(uint16_t* __restrict__ out, const uint16_t* __restrict__ gate_up, uint32_t tokens, uint32_t inter) {
  pdl_launch_dependents();
  pdl_wait();
  const uint32_t stride = gridDim.x * blockDim.x;
  if (inter % 8 == 0 && aligned16(out) && aligned16(gate_up)) {
    const uint32_t row = inter / 8;
    const uint32_t total = tokens * row;
    const uint4* gu = reinterpret_cast<const uint4*>(gate_up);
    uint4* o = reinterpret_cast<uint4*>(out);
    for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < total; v += stride) {
      const uint32_t t = v / row;
      const uint32_t j = v - t * row;
      const size_t g_at = static_cast<size_t>(t) * 2 * row + j;
      float g[8], u[8];
      unpack8(gu[g_at], g);
      unpack8(gu[g_at + row], u);
#pragma unroll
      for (int e = 0; e < 8; e++) g[e] = silu_mul(g[e], u[e]);
      o[v] = pack8(g);
    }
  } else {
    const uint32_t total = tokens * inter;
    for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < total; v += stride) {
      const uint32_t t = v / inter;
      const uint32_t i = v - t * inter;
      const size_t g_at = static_cast<size_t>(t) * 2 * inter + i;
      out[v] = f32_to_bf16(silu_mul(bf16_to_f32(gate_up[g_at]), bf16_to_f32(gate_up[g_at + inter])));
    }
  }
}

// bf16(x), round to nearest even, NaN kept NaN. Works on bit patterns, so subnormals and NaN
// payloads never meet a floating-point unit (no flush to zero). Grid-stride.
extern "C" __global__ void cast_f32_to_bf16(uint16_t* __restrict__ out, const float* __restrict__ x, uint32_t count) {
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  uint32_t done = 0;
  if (aligned16(out) && aligned16(x)) {
    const uint32_t nvec = count / 8;
    const uint4* x4 = reinterpret_cast<const uint4*>(x);
    uint4* o4 = reinterpret_cast<uint4*>(out);
    for (uint32_t v = first; v < nvec; v += stride) {
      const uint4 a = x4[2 * v], b = x4[2 * v + 1];
      o4[v] = make_uint4(
          static_cast<uint32_t>(f32_to_bf16(__uint_as_float(a.x))) | (static_cast<uint32_t>(f32_to_bf16(__uint_as_float(a.y))) << 16),
          static_cast<uint32_t>(f32_to_bf16(__uint_as_float(a.z))) | (static_cast<uint32_t>(f32_to_bf16(__uint_as_float(a.w))) << 16),
          static_cast<uint32_t>(f32_to_bf16(__uint_as_float(b.x))) | (static_cast<uint32_t>(f32_to_bf16(__uint_as_float(b.y))) << 16),
          static_cast<uint32_t>(f32_to_bf16(__uint_as_float(b.z))) | (static_cast<uint32_t>(f32_to_bf16(__uint_as_float(b.w))) << 16));
    }
    done = nvec * 8;
  }
  const uint32_t* xb = reinterpret_cast<const uint32_t*>(x);
  for (uint32_t i = done + first; i < count; i += stride) out[i] = f32_to_bf16(__uint_as_float(xb[i]));
}

// f32(x): exact, a shift of the bit pattern. Grid-stride.
extern "C" __global__ void cast_bf16_to_f32(float* __restrict__ out, const uint16_t* __restrict__ x, uint32_t count) {
  pdl_launch_dependents();
  pdl_wait();
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  uint32_t done = 0;
  uint32_t* ob = reinterpret_cast<uint32_t*>(out);
  if (aligned16(out) && aligned16(x)) {
    const uint32_t nvec = count / 8;
    const uint4* x4 = reinterpret_cast<const uint4*>(x);
    uint4* o4 = reinterpret_cast<uint4*>(out);
    for (uint32_t v = first; v < nvec; v += stride) {
      const uint4 a = x4[v];
      o4[2 * v] = make_uint4(a.x << 16, a.x & 0xffff0000u, a.y << 16, a.y & 0xffff0000u);
      o4[2 * v + 1] = make_uint4(a.z << 16, a.z & 0xffff0000u, a.w << 16, a.w & 0xffff0000u);
    }
    done = nvec * 8;
  }
  for (uint32_t i = done + first; i < count; i += stride) ob[i] = static_cast<uint32_t>(x[i]) << 16;
}

// out[i] = bf16(scale * (2u - 1)), u = (Philox4x32-10(counter (i lo, i hi, 0, 0), key (seed lo,
// seed hi)).word0 >> 8) * 2^-24, for i < count (LlamaOps.fillRandom). u, 2u and 2u - 1 are exact
// in f32 (24-bit values), so the one rounding is the final multiply; the _rn intrinsics keep the
// compilers from fusing anything, so the bits equal the CPU's Math.fround steps. A 64-bit index,
// so tensors past 2^32 elements keep distinct counters. Grid-stride, so any grid and block are
// correct; a thread writes 2 bytes a step (the work is Philox's multiplies, not the stores).
extern "C" __global__ void fill_random_bf16(uint16_t* __restrict__ out, uint64_t count, uint64_t seed, float scale) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    uint32_t c[4] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), 0u, 0u};
    philox4x32_10(c, k0, k1);
    const float u = __fmul_rn(static_cast<float>(c[0] >> 8), 5.9604644775390625e-8f);  // 2^-24
    const float v = __fadd_rn(__fmul_rn(2.0f, u), -1.0f);
    out[i] = f32_to_bf16(__fmul_rn(scale, v));
  }
}
