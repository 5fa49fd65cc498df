// The sampling family: argmax, log-softmax and seeded top-k / top-p / min-p sampling over f32
// logits [batch, vocab]. One block of 1024 threads per row; rows of up to 2^30 tokens.
//
// Sampling is specified in exact arithmetic wherever the CPU reference (ops/cpu/sampling.ts)
// must reach the same token, so both backends pick the same id for the same (seed, step):
//   1. Greedy (the row's lowest-index argmax) when temperature is not > 0 or the top logit is
//      not finite.
//   2. y_i = f32((f64(l_i) - f64(l_max)) * (LOG2E / f64(T))), and p_i = 2^y_i by exp2_det below:
//      a fixed polynomial rounded to f32 after every operation, identical on both backends.
//      p_i = 0 where y_i < -32 (or NaN). p is the probability relative to the top token (p = 1).
//   3. Mass in fixed point: q_i = floor(p_i * 2^32) (u64, the top token 2^32); every sum below is
//      an integer, so it is exact in any order, on any backend.
//   4. top-k (0 < k < vocab): keep p_i >= the k-th largest p (ties at the threshold kept).
//   5. top-p (topP < 1): over what top-k kept, with Zk its mass, keep p_i >= t for the largest t
//      whose kept mass reaches target = max(1, ceil(f64(topP) * Zk)), i.e. the smallest set of
//      largest probabilities with mass >= topP (ties at the threshold kept).
//   6. min-p (minP > 0): keep q_i >= min(2^32, ceil(f64(minP) * 2^32)), p >= minP · p_top.
//   7. Draw: u24 = Philox4x32-10(counter (step, 0, 0, 0), key (seed lo, seed hi)).word0 >> 8;
//      r = floor(f64(u24 * 2^-24) * Zf) with Zf the kept mass; the token is the first index i
//      (in index order) whose cumulative kept mass exceeds r.
// Filters run in HF's order: temperature, top-k, top-p, min-p. The top token always survives.
//
// Kernel source conventions (kernels/build.ts): each kernel signature on ONE line; launch bounds
// go on a separate declaration before it.
#include "compat.h"
#include "philox.h"

#define SAMPLING_THREADS 1024
#define SAMPLING_GROUPS (SAMPLING_THREADS / 32)
#define HIST_BINS 2048

// ---------------------------------------------------------------------------------------------
// 32-lane groups. Warp-level code works on groups of 32 lanes (width-32 shuffles), so it runs
// unchanged on wave64 AMD GPUs, where a wavefront holds two groups.
#ifdef DENALI_HIP
__device__ __forceinline__ uint32_t lane_xor(uint32_t v, int mask) {
  return __shfl_xor(v, mask, 32);
}
__device__ __forceinline__ uint32_t lane_up(uint32_t v, int delta) {
  return __shfl_up(v, delta, 32);
}
__device__ __forceinline__ uint32_t lane_get(uint32_t v, int src) { return __shfl(v, src, 32); }
__device__ __forceinline__ float lane_xor_f(float v, int mask) { return __shfl_xor(v, mask, 32); }
// hipcc contracts a*b+c into an FMA across inlined helpers unless told not to, which would
// change exp2_det's rounding; these spell out one IEEE operation each.
__device__ __forceinline__ float mul_rn(float a, float b) {
#pragma clang fp contract(off)
  return a * b;
}
__device__ __forceinline__ float add_rn(float a, float b) {
#pragma clang fp contract(off)
  return a + b;
}
__device__ __forceinline__ float sub_rn(float a, float b) {
#pragma clang fp contract(off)
  return a - b;
}
#else
__device__ __forceinline__ uint32_t lane_xor(uint32_t v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask, 32);
}
__device__ __forceinline__ uint32_t lane_up(uint32_t v, int delta) {
  return __shfl_up_sync(0xffffffffu, v, delta, 32);
}
__device__ __forceinline__ uint32_t lane_get(uint32_t v, int src) {
  return __shfl_sync(0xffffffffu, v, src, 32);
}
__device__ __forceinline__ float lane_xor_f(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask, 32);
}
// __fmul_rn and friends are never merged into an FMA (CUDA guarantees it).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
#endif

__device__ __forceinline__ uint64_t lane_xor64(uint64_t v, int mask) {
  const uint32_t hi = lane_xor(static_cast<uint32_t>(v >> 32), mask);
  const uint32_t lo = lane_xor(static_cast<uint32_t>(v), mask);
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
__device__ __forceinline__ uint64_t lane_up64(uint64_t v, int delta) {
  const uint32_t hi = lane_up(static_cast<uint32_t>(v >> 32), delta);
  const uint32_t lo = lane_up(static_cast<uint32_t>(v), delta);
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
__device__ __forceinline__ uint64_t lane_get64(uint64_t v, int src) {
  const uint32_t hi = lane_get(static_cast<uint32_t>(v >> 32), src);
  const uint32_t lo = lane_get(static_cast<uint32_t>(v), src);
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
__device__ __forceinline__ uint64_t group_sum64(uint64_t v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += lane_xor64(v, m);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Argmax with the lowest index on ties: (v, i) beats (bv, bi) if larger, or equal and earlier.
__device__ __forceinline__ void take_better(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

// Reduces every thread's (bv, bi) to the block's best; all threads receive it.
__device__ void block_argmax(float& bv, int& bi, float* s_v, int* s_i) {
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const int other = static_cast<int>(lane_xor(static_cast<uint32_t>(bi), m));
    take_better(bv, bi, lane_xor_f(bv, m), other);
  }
  if (lane == 0) {
    s_v[group] = bv;
    s_i[group] = bi;
  }
  __syncthreads();
  // Every group reduces the 32 partials itself, so the result needs no second broadcast.
  bv = s_v[lane];
  bi = s_i[lane];
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const int other = static_cast<int>(lane_xor(static_cast<uint32_t>(bi), m));
    take_better(bv, bi, lane_xor_f(bv, m), other);
  }
  __syncthreads();  // the partials may be overwritten right after
}

// One row's argmax: each thread walks its elements in increasing index order (VEC = 4 reads
// float4s and needs vocab % 4 == 0 and a 16-byte aligned row).
template <int VEC>
__device__ void row_argmax(const float* x, int vocab, float& bv, int& bi, float* s_v, int* s_i) {
  bv = -INFINITY;
  bi = 0x7fffffff;
  if (VEC == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int n4 = vocab / 4;
    for (int base = threadIdx.x; base < n4; base += 4 * SAMPLING_THREADS) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int j = base + u * SAMPLING_THREADS;
        v[u] = j < n4 ? x4[j] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int j = 4 * (base + u * SAMPLING_THREADS);
        if (j < vocab) {
          take_better(bv, bi, v[u].x, j);
          take_better(bv, bi, v[u].y, j + 1);
          take_better(bv, bi, v[u].z, j + 2);
          take_better(bv, bi, v[u].w, j + 3);
        }
      }
    }
  } else {
    for (int base = threadIdx.x; base < vocab; base += 8 * SAMPLING_THREADS) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; u++) {
        const int i = base + u * SAMPLING_THREADS;
        v[u] = i < vocab ? x[i] : -INFINITY;
      }
#pragma unroll
      for (int u = 0; u < 8; u++) {
        const int i = base + u * SAMPLING_THREADS;
        if (i < vocab) take_better(bv, bi, v[u], i);
      }
    }
  }
  block_argmax(bv, bi, s_v, s_i);
  if (bi >= vocab) bi = 0;  // only for NaN-only rows, which the contract excludes
}

// ids[b] = argmax(logits[b, :]), lowest index on ties. Grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) argmax_f32(int32_t* ids, const float* __restrict__ logits, int32_t vocab);
extern "C" __global__ void argmax_f32(int32_t* ids, const float* __restrict__ logits, int32_t vocab) {
  __shared__ float s_v[SAMPLING_GROUPS];
  __shared__ int s_i[SAMPLING_GROUPS];
  float bv;
  int bi;
  row_argmax<1>(logits + static_cast<size_t>(blockIdx.x) * vocab, vocab, bv, bi, s_v, s_i);
  if (threadIdx.x == 0) ids[blockIdx.x] = bi;
}

// The same with float4 reads: every row starts 16-byte aligned.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) argmax_f32_v4(int32_t* ids, const float* __restrict__ logits, int32_t vocab);
// variant-of argmax_f32: logits=aligned16 vocab=div16
extern "C" __global__ void argmax_f32_v4(int32_t* ids, const float* __restrict__ logits, int32_t vocab) {
  __shared__ float s_v[SAMPLING_GROUPS];
  __shared__ int s_i[SAMPLING_GROUPS];
  float bv;
  int bi;
  row_argmax<4>(logits + static_cast<size_t>(blockIdx.x) * vocab, vocab, bv, bi, s_v, s_i);
  if (threadIdx.x == 0) ids[blockIdx.x] = bi;
}

// ---------------------------------------------------------------------------------------------
// Log-softmax: an online (max, sum of exp) pass, then out = (x - m) - log(sum), all fp32.

// Adds x to the running (m, s): s = sum of exp(x_j - m) over the values seen so far.
__device__ __forceinline__ void lse_add(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;  // m = -inf at first: s * 0 + 1
    m = x;
  } else if (x > -INFINITY) {
    s += expf(x - m);
  }
}

// Merges (m2, s2) into (m, s).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    const float tm = m, ts = s;
    m = m2;
    s = s2;
    m2 = tm;
    s2 = ts;
  }
  if (m2 > -INFINITY) s += s2 * expf(m2 - m);
}

template <int VEC>
__device__ void row_log_softmax(float* out, const float* x, int vocab) {
  __shared__ float s_m[SAMPLING_GROUPS], s_s[SAMPLING_GROUPS];
  float m = -INFINITY, s = 0.0f;
  if (VEC == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int n4 = vocab / 4;
    for (int base = threadIdx.x; base < n4; base += 4 * SAMPLING_THREADS) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int j = base + u * SAMPLING_THREADS;
        v[u] = j < n4 ? x4[j] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
#pragma unroll
      for (int u = 0; u < 4; u++) {
        lse_add(m, s, v[u].x);
        lse_add(m, s, v[u].y);
        lse_add(m, s, v[u].z);
        lse_add(m, s, v[u].w);
      }
    }
  } else {
    for (int base = threadIdx.x; base < vocab; base += 8 * SAMPLING_THREADS) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; u++) {
        const int i = base + u * SAMPLING_THREADS;
        v[u] = i < vocab ? x[i] : -INFINITY;
      }
#pragma unroll
      for (int u = 0; u < 8; u++) lse_add(m, s, v[u]);
    }
  }
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) lse_merge(m, s, lane_xor_f(m, k), lane_xor_f(s, k));
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
  if (lane == 0) {
    s_m[group] = m;
    s_s[group] = s;
  }
  __syncthreads();
  m = s_m[lane];
  s = s_s[lane];
#pragma unroll
  for (int k = 16; k > 0; k >>= 1) lse_merge(m, s, lane_xor_f(m, k), lane_xor_f(s, k));
  const float log_sum = logf(s);
  if (VEC == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* o4 = reinterpret_cast<float4*>(out);
    const int n4 = vocab / 4;
    for (int j = threadIdx.x; j < n4; j += SAMPLING_THREADS) {
      const float4 v = x4[j];
      o4[j] = make_float4((v.x - m) - log_sum, (v.y - m) - log_sum, (v.z - m) - log_sum,
                          (v.w - m) - log_sum);
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += SAMPLING_THREADS) out[i] = (x[i] - m) - log_sum;
  }
}

// out[b, :] = log_softmax(logits[b, :]). Grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) log_softmax_f32(float* out, const float* __restrict__ logits, int32_t vocab);
extern "C" __global__ void log_softmax_f32(float* out, const float* __restrict__ logits, int32_t vocab) {
  const size_t row = static_cast<size_t>(blockIdx.x) * vocab;
  row_log_softmax<1>(out + row, logits + row, vocab);
}

// The same with float4 reads and writes: every row starts 16-byte aligned.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) log_softmax_f32_v4(float* out, const float* __restrict__ logits, int32_t vocab);
// variant-of log_softmax_f32: out=aligned16 logits=aligned16 vocab=div16
extern "C" __global__ void log_softmax_f32_v4(float* out, const float* __restrict__ logits, int32_t vocab) {
  const size_t row = static_cast<size_t>(blockIdx.x) * vocab;
  row_log_softmax<4>(out + row, logits + row, vocab);
}


// Test hook: out[4i..4i+3] = Philox4x32-10(counters[4i..4i+3], keys[2i], keys[2i+1]).
extern "C" __global__ void philox4x32_10_test(uint32_t* out, const uint32_t* counters, const uint32_t* keys, int32_t n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t c[4] = {counters[4 * i], counters[4 * i + 1], counters[4 * i + 2], counters[4 * i + 3]};
  philox4x32_10(c, keys[2 * i], keys[2 * i + 1]);
  out[4 * i] = c[0];
  out[4 * i + 1] = c[1];
  out[4 * i + 2] = c[2];
  out[4 * i + 3] = c[3];
}

// ---------------------------------------------------------------------------------------------
// The deterministic 2^y for y in [-32, 0]: y = n + f with n = floor(f32(y + 0.5)) and
// |f| <= 0.5 (exact), 2^f by its degree-7 Taylor polynomial (truncation 5e-9) in Horner form,
// every step one f32 rounding, then an exact scaling by 2^n. Within 2 ulps of 2^y. The
// coefficients are (ln 2)^j / j! rounded to f32, given by their bits.
__device__ __forceinline__ float exp2_det(float y) {
  const float n = floorf(add_rn(y, 0.5f));
  const float f = sub_rn(y, n);
  float r = __uint_as_float(0x377fe5feu);
  r = add_rn(mul_rn(r, f), __uint_as_float(0x39218489u));
  r = add_rn(mul_rn(r, f), __uint_as_float(0x3aaec3ffu));
  r = add_rn(mul_rn(r, f), __uint_as_float(0x3c1d955bu));
  r = add_rn(mul_rn(r, f), __uint_as_float(0x3d635847u));
  r = add_rn(mul_rn(r, f), __uint_as_float(0x3e75fdf0u));
  r = add_rn(mul_rn(r, f), __uint_as_float(0x3f317218u));
  r = add_rn(mul_rn(r, f), 1.0f);
  return mul_rn(r, __int_as_float((127 + static_cast<int>(n)) << 23));
}

// p = 2^y relative to the top logit; 0 below 2^-32, where the fixed-point mass is 0 anyway.
__device__ __forceinline__ float prob_of(float logit, double lmax, double scale) {
  const float y = static_cast<float>((static_cast<double>(logit) - lmax) * scale);
  return y >= -32.0f ? exp2_det(y) : 0.0f;
}

// q = floor(p * 2^32): exact (p * 2^32 is a power-of-two scaling), at most 2^32.
__device__ __forceinline__ uint64_t mass_of(float p) {
  return static_cast<uint64_t>(mul_rn(p, 4294967296.0f));
}

struct SampleShared {
  uint32_t count[HIST_BINS];
  unsigned long long mass[HIST_BINS];
  unsigned long long red_a[SAMPLING_GROUPS], red_b[SAMPLING_GROUPS];
  unsigned long long seg[SAMPLING_GROUPS];
  float arg_v[SAMPLING_GROUPS];
  int arg_i[SAMPLING_GROUPS];
  // find_bin's answer
  int bin;
  unsigned long long above_count, above_mass, bin_count, bin_mass;
  // the walk's answer
  int pick;
  unsigned long long rest;
};

// Block sums of two u64 values; every thread receives both.
__device__ void block_sum2(uint64_t& a, uint64_t& b, SampleShared& sh) {
  a = group_sum64(a);
  b = group_sum64(b);
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
  if (lane == 0) {
    sh.red_a[group] = a;
    sh.red_b[group] = b;
  }
  __syncthreads();
  a = group_sum64(sh.red_a[lane]);
  b = group_sum64(sh.red_b[lane]);
  __syncthreads();
}

// Exclusive prefix sums over thread order of two u64 values.
__device__ void block_exclusive_scan2(uint64_t a, uint64_t b, uint64_t& ea, uint64_t& eb,
                                      SampleShared& sh) {
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
  uint64_t ia = a, ib = b;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint64_t ta = lane_up64(ia, d), tb = lane_up64(ib, d);
    if (lane >= d) {
      ia += ta;
      ib += tb;
    }
  }
  if (lane == 31) {
    sh.red_a[group] = ia;
    sh.red_b[group] = ib;
  }
  __syncthreads();
  uint64_t ga = sh.red_a[lane], gb = sh.red_b[lane];
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint64_t ta = lane_up64(ga, d), tb = lane_up64(gb, d);
    if (lane >= d) {
      ga += ta;
      gb += tb;
    }
  }
  const int src = group > 0 ? group - 1 : 0;
  const uint64_t pa = lane_get64(ga, src), pb = lane_get64(gb, src);
  ea = (group > 0 ? pa : 0) + ia - a;
  eb = (group > 0 ? pb : 0) + ib - b;
  __syncthreads();
}

// In the histogram, finds bin b with W(above b) < rest <= W(above b) + W(b), W the bin counts
// (by_count) or masses, scanning from the top bin down; publishes it with the counts and masses
// above it and in it. Needs 1 <= rest <= the histogram's total weight.
__device__ void find_bin(SampleShared& sh, bool by_count, uint64_t rest) {
  const int hi = HIST_BINS - 1 - 2 * static_cast<int>(threadIdx.x), lo = hi - 1;
  const uint64_t ch = sh.count[hi], cl = sh.count[lo], mh = sh.mass[hi], ml = sh.mass[lo];
  if (threadIdx.x == 0) {  // a defined answer even if the precondition were broken
    sh.bin = 0;
    sh.above_count = sh.above_mass = sh.bin_count = sh.bin_mass = 0;
  }
  uint64_t ec, em;
  block_exclusive_scan2(ch + cl, mh + ml, ec, em, sh);
  const uint64_t e = by_count ? ec : em;
  const uint64_t wh = by_count ? ch : mh, wl = by_count ? cl : ml;
  if (e < rest && rest <= e + wh) {
    sh.bin = hi;
    sh.above_count = ec;
    sh.above_mass = em;
    sh.bin_count = ch;
    sh.bin_mass = mh;
  } else if (e + wh < rest && rest <= e + wh + wl) {
    sh.bin = lo;
    sh.above_count = ec + ch;
    sh.above_mass = em + mh;
    sh.bin_count = cl;
    sh.bin_mass = ml;
  }
  __syncthreads();
}

// Radix descent over the bit patterns of p (31 bits: levels of 11, 10 and 10 bits) among the
// elements with p > 0 and key >= low. by_count: the threshold is the k-th largest key
// (target = k). Otherwise: the largest key whose suffix mass reaches target. Returns the
// threshold as a key; keeping key >= threshold keeps the same elements as the exact threshold
// (a level stops early only when its whole bin is kept, or holds one element). kept_mass gets the
// mass kept. With have_level0, sh already holds the level-0 histogram of exactly these elements.
// Not inlined: two inlined copies (top-k, top-p) push the kernel past 64 registers into spills.
__device__ __noinline__ uint32_t radix_select(SampleShared& sh, const float* p, int vocab,
                                              bool by_count, uint64_t target, uint32_t low,
                                              bool have_level0, uint64_t& kept_mass) {
  uint32_t prefix = 0;
  uint64_t above_mass = 0, rest = target;
  for (int level = 0; level < 3; level++) {
    const int shift = level == 0 ? 20 : level == 1 ? 10 : 0;
    const int prefix_shift = level == 0 ? 31 : level == 1 ? 20 : 10;
    const uint32_t digit_mask = level == 0 ? 0x7ffu : 0x3ffu;
    if (level > 0 || !have_level0) {
      for (int b = threadIdx.x; b < HIST_BINS; b += SAMPLING_THREADS) {
        sh.count[b] = 0;
        sh.mass[b] = 0;
      }
      __syncthreads();
      for (int base = threadIdx.x; base < vocab; base += 4 * SAMPLING_THREADS) {
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
          const int i = base + u * SAMPLING_THREADS;
          v[u] = i < vocab ? p[i] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
          const uint32_t key = __float_as_uint(v[u]);
          if (v[u] > 0.0f && key >= low && (key >> prefix_shift) == prefix) {
            const uint32_t b = (key >> shift) & digit_mask;
            atomicAdd(&sh.count[b], 1u);
            const uint64_t q = mass_of(v[u]);
            if (q != 0) atomicAdd(&sh.mass[b], static_cast<unsigned long long>(q));
          }
        }
      }
      __syncthreads();
    }
    find_bin(sh, by_count, rest);
    const uint32_t b = static_cast<uint32_t>(sh.bin);
    const uint64_t bin_count = sh.bin_count, bin_mass = sh.bin_mass;
    above_mass += sh.above_mass;
    rest -= by_count ? sh.above_count : sh.above_mass;
    prefix = (prefix << (level == 0 ? 11 : 10)) | b;
    const bool whole_bin = by_count ? bin_count == rest : (bin_mass == rest || bin_count == 1);
    if (level == 2 || whole_bin) {
      kept_mass = above_mass + bin_mass;
      // A whole bin may straddle `low`; only its part at or above `low` was counted.
      const uint32_t threshold = prefix << shift;
      return threshold > low ? threshold : low;
    }
  }
  return 0;  // not reached: level 2 always returns
}

// The kept mass of one element under the final thresholds.
__device__ __forceinline__ uint64_t kept_mass_of(float p, uint32_t threshold, uint64_t min_q) {
  const uint64_t q = mass_of(p);
  return (__float_as_uint(p) >= threshold && q >= min_q) ? q : 0;
}

// Sums the kept mass of [begin, end) split into 32 consecutive parts, one per 32-lane group,
// then (thread 0) finds the part holding offset `rest` and publishes it with the offset inside.
__device__ void locate_part(SampleShared& sh, const float* p, int begin, int end,
                            uint32_t threshold, uint64_t min_q, uint64_t rest) {
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
  const int part = (end - begin + SAMPLING_GROUPS - 1) / SAMPLING_GROUPS;
  const int a = begin + group * part;
  const int e = min(end, a + part);
  uint64_t s = 0;
  for (int i = a + lane; i < e; i += 32) s += kept_mass_of(p[i], threshold, min_q);
  s = group_sum64(s);
  if (lane == 0) sh.seg[group] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int j = 0;
    while (j < SAMPLING_GROUPS - 1 && rest >= sh.seg[j]) {
      rest -= sh.seg[j];
      j++;
    }
    sh.pick = j;
    sh.rest = rest;
  }
  __syncthreads();
}

// ids[b] = a token sampled from logits[b, :] as the header describes. workspace: f32
// [batch, vocab], left holding p of each sampled (non-greedy) row. Grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) sample_f32(int32_t* ids, const float* __restrict__ logits, const float* temperature, const int32_t* top_k, const float* top_p, const float* min_p, const uint64_t* seed, const int32_t* step, float* workspace, int32_t vocab);
extern "C" __global__ void sample_f32(int32_t* ids, const float* __restrict__ logits, const float* temperature, const int32_t* top_k, const float* top_p, const float* min_p, const uint64_t* seed, const int32_t* step, float* workspace, int32_t vocab) {
  __shared__ SampleShared sh;
  const int row = blockIdx.x;
  const float* x = logits + static_cast<size_t>(row) * vocab;
  float* p = workspace + static_cast<size_t>(row) * vocab;

  float lmax;
  int top;
  row_argmax<1>(x, vocab, lmax, top, sh.arg_v, sh.arg_i);
  const float temp = temperature[row];
  if (!(temp > 0.0f) || !(fabsf(lmax) <= 3.402823466e38f)) {
    if (threadIdx.x == 0) ids[row] = top;
    return;
  }
  const double lmax_d = static_cast<double>(lmax);
  const double scale = 1.4426950408889634 / static_cast<double>(temp);  // log2(e) / T
  const int32_t k = top_k[row];
  const float tp = top_p[row], mp = min_p[row];
  const bool use_k = k > 0 && k < vocab;
  const bool use_p = tp < 1.0f;
  const bool hist0 = use_k || use_p;

  // p for every token into the workspace, the total count and mass of p > 0 and, when a filter
  // needs it, the level-0 histogram of radix_select.
  if (hist0) {
    for (int b = threadIdx.x; b < HIST_BINS; b += SAMPLING_THREADS) {
      sh.count[b] = 0;
      sh.mass[b] = 0;
    }
    __syncthreads();
  }
  uint64_t positive = 0, total = 0;
  for (int base = threadIdx.x; base < vocab; base += 4 * SAMPLING_THREADS) {
    float v[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int i = base + u * SAMPLING_THREADS;
      v[u] = i < vocab ? x[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int i = base + u * SAMPLING_THREADS;
      if (i < vocab) {
        const float pv = prob_of(v[u], lmax_d, scale);
        p[i] = pv;
        if (pv > 0.0f) {
          const uint64_t q = mass_of(pv);
          positive++;
          total += q;
          if (hist0) {
            const uint32_t b = __float_as_uint(pv) >> 20;
            atomicAdd(&sh.count[b], 1u);
            if (q != 0) atomicAdd(&sh.mass[b], static_cast<unsigned long long>(q));
          }
        }
      }
    }
  }
  block_sum2(positive, total, sh);  // its barrier also completes the histogram and p

  uint32_t threshold = 0;
  uint64_t kept = total;
  bool level0_ready = hist0;
  if (use_k && static_cast<uint64_t>(k) < positive) {
    threshold = radix_select(sh, p, vocab, true, static_cast<uint64_t>(k), 0, true, kept);
    level0_ready = false;  // top-p must count only what top-k kept
  }
  if (use_p) {
    const double t = ceil(static_cast<double>(tp) * static_cast<double>(kept));
    const uint64_t target = t < 1.0 ? 1 : static_cast<uint64_t>(t);
    uint64_t unused;
    threshold = radix_select(sh, p, vocab, false, target, threshold, level0_ready, unused);
  }
  uint64_t min_q = 0;
  if (mp > 0.0f) {
    const double t = ceil(static_cast<double>(mp) * 4294967296.0);
    min_q = t >= 4294967296.0 ? 4294967296ull : static_cast<uint64_t>(t);
  }

  // The draw, then the walk in index order: 32 parts of the row, 32 parts of the chosen part,
  // then one group scans the last part 32 tokens at a time.
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
  {
    const int part = (vocab + SAMPLING_GROUPS - 1) / SAMPLING_GROUPS;
    const int a = group * part;
    const int e = min(vocab, a + part);
    uint64_t s = 0;
    for (int i = a + lane; i < e; i += 32) s += kept_mass_of(p[i], threshold, min_q);
    s = group_sum64(s);
    if (lane == 0) sh.seg[group] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    uint64_t zf = 0;
    for (int j = 0; j < SAMPLING_GROUPS; j++) zf += sh.seg[j];
    const uint64_t s64 = seed[row];
    uint32_t c[4] = {static_cast<uint32_t>(step[row]), 0u, 0u, 0u};
    philox4x32_10(c, static_cast<uint32_t>(s64), static_cast<uint32_t>(s64 >> 32));
    const double u = static_cast<double>(c[0] >> 8) * 5.9604644775390625e-8;  // 2^-24
    uint64_t r = static_cast<uint64_t>(floor(u * static_cast<double>(zf)));
    int j = 0;
    while (j < SAMPLING_GROUPS - 1 && r >= sh.seg[j]) {
      r -= sh.seg[j];
      j++;
    }
    sh.pick = j;
    sh.rest = r;
  }
  __syncthreads();
  const int part = (vocab + SAMPLING_GROUPS - 1) / SAMPLING_GROUPS;
  const int begin = sh.pick * part;
  const int end = min(vocab, begin + part);
  const uint64_t rest1 = sh.rest;
  __syncthreads();  // sh.pick and sh.rest are rewritten next
  locate_part(sh, p, begin, end, threshold, min_q, rest1);
  const int sub = (end - begin + SAMPLING_GROUPS - 1) / SAMPLING_GROUPS;
  const int c0 = begin + sh.pick * sub;
  const int c1 = min(end, c0 + sub);
  const uint64_t rest2 = sh.rest;
  if (group == 0) {
    uint64_t run = 0;
    int found = top;  // not reached: rest2 lies inside [c0, c1)'s kept mass
    for (int base = c0; base < c1; base += 32) {
      const int i = base + lane;
      const uint64_t v = i < c1 ? kept_mass_of(p[i], threshold, min_q) : 0;
      uint64_t incl = v;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const uint64_t t = lane_up64(incl, d);
        if (lane >= d) incl += t;
      }
      const uint64_t chunk = lane_get64(incl, 31);
      if (run + chunk > rest2) {
        // Cumulative sums rise with the lane, so the lanes still at or below rest2 come first.
        uint32_t before = run + incl <= rest2 ? 1u : 0u;
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) before += lane_xor(before, m);
        found = base + static_cast<int>(before);
        break;
      }
      run += chunk;
    }
    if (lane == 0) ids[row] = found;
  }
}

// ---------------------------------------------------------------------------------------------
// Penalties: vLLM's repetition, presence and frequency penalties, in place on f32 logits. Every
// step is one IEEE f32 operation (correctly rounded division, no FMA contraction), so the result
// equals ops/cpu/sampling.ts bit for bit.
#ifdef DENALI_HIP
// hipcc divides f32 correctly rounded by default (-fhip-fp32-correctly-rounded-divide-sqrt).
__device__ __forceinline__ float div_rn(float a, float b) {
#pragma clang fp contract(off)
  return a / b;
}
#else
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
#endif

#define PENALTY_THREADS 256

// One thread per entry e < count: (row, token, outputCount) = entries[3e .. 3e + 2]. An entry
// outside [0, batch) × [0, vocab) is skipped (the CPU op rejects it), so nothing is written out
// of bounds. Entries name distinct (row, token) pairs, so no two threads touch one logit.
// Grid (ceil(count / 256)), block 256.
extern "C" __global__ void __launch_bounds__(PENALTY_THREADS) apply_penalties_f32(float* logits, const int32_t* __restrict__ entries, const float* __restrict__ penalties, int32_t count, int32_t batch, int32_t vocab);
extern "C" __global__ void apply_penalties_f32(float* logits, const int32_t* __restrict__ entries, const float* __restrict__ penalties, int32_t count, int32_t batch, int32_t vocab) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * PENALTY_THREADS + threadIdx.x;
  if (e >= count) return;
  const int32_t row = entries[3 * e], token = entries[3 * e + 1], seen = entries[3 * e + 2];
  if (row < 0 || row >= batch || token < 0 || token >= vocab) return;
  const float repetition = penalties[3 * row];
  const float presence = penalties[3 * row + 1];
  const float frequency = penalties[3 * row + 2];
  float* at = logits + static_cast<size_t>(row) * vocab + token;
  float l = *at;
  l = l > 0.0f ? div_rn(l, repetition) : mul_rn(l, repetition);
  l = sub_rn(l, mul_rn(frequency, static_cast<float>(seen)));
  if (seen > 0) l = sub_rn(l, presence);
  *at = l;
}

// ---------------------------------------------------------------------------------------------
// Logit edits and allowed-token bitmasks: the sampler's built-in logits processors (logit_bias,
// banned and allowed ids, min_tokens, structured-output masks), before penalties and sampling.

// One thread per entry e < count: (row, token, addend bits) = entries[3e .. 3e + 2];
// logits[row, token] += addend (f32, correctly rounded; -inf bans). An entry outside
// [0, batch) × [0, vocab) is skipped (the CPU op rejects it). Entries name distinct (row, token)
// pairs. Grid (ceil(count / 256)), block 256.
extern "C" __global__ void __launch_bounds__(PENALTY_THREADS) apply_logit_edits_f32(float* logits, const int32_t* __restrict__ entries, int32_t count, int32_t batch, int32_t vocab);
extern "C" __global__ void apply_logit_edits_f32(float* logits, const int32_t* __restrict__ entries, int32_t count, int32_t batch, int32_t vocab) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * PENALTY_THREADS + threadIdx.x;
  if (e >= count) return;
  const int32_t row = entries[3 * e], token = entries[3 * e + 1];
  if (row < 0 || row >= batch || token < 0 || token >= vocab) return;
  float* at = logits + static_cast<size_t>(row) * vocab + token;
  *at = add_rn(*at, __int_as_float(entries[3 * e + 2]));
}

// Mask k (ceil(vocab / 32) words, xgrammar's layout) applies to row rows[k]: a token whose bit is
// clear gets -inf. A row outside [0, batch) is skipped (the CPU op rejects it).
// Grid (ceil(vocab / 256), count), block 256.
extern "C" __global__ void __launch_bounds__(PENALTY_THREADS) apply_token_bitmask_f32(float* logits, const int32_t* __restrict__ masks, const int32_t* __restrict__ rows, int32_t batch, int32_t vocab);
extern "C" __global__ void apply_token_bitmask_f32(float* logits, const int32_t* __restrict__ masks, const int32_t* __restrict__ rows, int32_t batch, int32_t vocab) {
  const int32_t t = blockIdx.x * PENALTY_THREADS + threadIdx.x;
  const int32_t row = rows[blockIdx.y];
  if (t >= vocab || row < 0 || row >= batch) return;
  const int32_t words = (vocab + 31) >> 5;
  const uint32_t word = static_cast<uint32_t>(masks[static_cast<size_t>(blockIdx.y) * words + (t >> 5)]);
  if (((word >> (t & 31)) & 1u) == 0) logits[static_cast<size_t>(row) * vocab + t] = -INFINITY;
}

// ---------------------------------------------------------------------------------------------
// Log-probabilities of bf16 logits: lse = max + log(sum of exp(l - max)) in f32 with the accurate
// expf / logf, then the chosen token's l - lse and the n largest l - lse.

// Calls f(value, index) for each of this thread's elements of a bf16 row, in increasing index
// order, eight loads in flight at a time.
template <typename F>
__device__ __forceinline__ void for_each_bf16(const uint16_t* x, int vocab, F f) {
  for (int base = threadIdx.x; base < vocab; base += 8 * SAMPLING_THREADS) {
    uint16_t v[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
      const int i = base + u * SAMPLING_THREADS;
      v[u] = i < vocab ? x[i] : 0;
    }
#pragma unroll
    for (int u = 0; u < 8; u++) {
      const int i = base + u * SAMPLING_THREADS;
      if (i < vocab) f(bf16_to_f32(v[u]), i);
    }
  }
}

// Block-wide max (NaN ignored, as fmaxf does) and sum of one float per thread; every thread
// receives the result.
__device__ float block_max(float v, float* s) {
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, lane_xor_f(v, m));
  if (lane == 0) s[group] = v;
  __syncthreads();
  v = s[lane];
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, lane_xor_f(v, m));
  __syncthreads();  // s may be overwritten right after
  return v;
}
__device__ float block_sum(float v, float* s) {
  const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += lane_xor_f(v, m);
  if (lane == 0) s[group] = v;
  __syncthreads();
  v = s[lane];
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += lane_xor_f(v, m);
  __syncthreads();
  return v;
}

// chosen[b] = l[ids[b]] - lse (NaN when ids[b] is outside [0, vocab)); for r < n, top_ids[b, r]
// and top_values[b, r] = l - lse of the r-th element in the order (l descending, id ascending).
// Round r is a block argmax over the elements strictly after round r - 1's pick in that order, so
// no exclusion list is kept. NaN logits are never picked; a round with nothing left to pick
// (only possible with NaN logits) writes id -1 and NaN. Grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLING_THREADS) logprobs_bf16(float* chosen, int32_t* top_ids, float* top_values, const bf16_bits* __restrict__ logits, const int32_t* __restrict__ ids, int32_t vocab, int32_t n);
extern "C" __global__ void logprobs_bf16(float* chosen, int32_t* top_ids, float* top_values, const bf16_bits* __restrict__ logits, const int32_t* __restrict__ ids, int32_t vocab, int32_t n) {
  __shared__ float s_red[SAMPLING_GROUPS];
  __shared__ float s_v[SAMPLING_GROUPS];
  __shared__ int s_i[SAMPLING_GROUPS];
  const int row = blockIdx.x;
  const uint16_t* x = logits + static_cast<size_t>(row) * vocab;

  float m = -INFINITY;
  for_each_bf16(x, vocab, [&](float v, int) { m = fmaxf(m, v); });
  m = block_max(m, s_red);
  float s = 0.0f;
  for_each_bf16(x, vocab, [&](float v, int) { s += expf(v - m); });
  s = block_sum(s, s_red);
  const float lse = m + logf(s);

  if (threadIdx.x == 0) {
    const int32_t id = ids[row];
    chosen[row] = id >= 0 && id < vocab ? bf16_to_f32(x[id]) - lse : __int_as_float(0x7fc00000);
  }

  // (pv, pi): the previous pick; (+inf, -1) puts every non-NaN element after it.
  float pv = INFINITY;
  int pi = -1;
  for (int r = 0; r < n; r++) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for_each_bf16(x, vocab, [&](float v, int i) {
      if (v < pv || (v == pv && i > pi)) take_better(bv, bi, v, i);
    });
    block_argmax(bv, bi, s_v, s_i);  // ends with a barrier, so s_v and s_i are free again
    if (threadIdx.x == 0) {
      const size_t o = static_cast<size_t>(row) * n + r;
      const bool found = bi < vocab;
      top_ids[o] = found ? bi : -1;
      top_values[o] = found ? bv - lse : __int_as_float(0x7fc00000);
    }
    pv = bv;
    pi = bi;
  }
}
