// Weight prefetch into L2 (sm_90+). In a small decode step the GEMVs stream weights at the
// memory's pace, but between them run kernels that read almost nothing (attention over a few
// short contexts, the RMSNorms, RoPE, SiLU): the memory idles for them, and each GEMV starts
// from a cold L2. l2_prefetch, enqueued after a GEMV, asks L2 for the first bytes of the weight
// the next GEMV reads, so those bytes stream in while the small kernels run and the next GEMV
// finds them there.
//
// Each thread issues one bulk prefetch (cp.async.bulk.prefetch.L2, the TMA unit's
// fire-and-forget hint) of PREFETCH_CHUNK bytes at a time; the host sizes the grid so that
// several SMs' TMA units share the requests. With `evictLast` the lines come in at L2 priority
// evict_last, so the GEMV still streaming past them (evict_normal) does not push them out first.
//
// Programmatic dependent launch (pdl.h): it reads no memory, so it issues its prefetches at
// once, while the GEMV before it runs, and then waits for that GEMV before it exits, which keeps
// the stream's order transitive for the kernel after it. Launched plainly it is a short extra
// kernel; on older archs and HIP only the wait (a no-op) is left, and the host does not launch it.
#include "compat.h"
#include "pdl.h"

#define PREFETCH_THREADS 32
#define PREFETCH_CHUNK 16384

extern "C" __global__ void __launch_bounds__(PREFETCH_THREADS) l2_prefetch(const uint8_t* data, uint64_t bytes, int32_t evictLast) {
  pdl_launch_dependents();
#if !defined(DENALI_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint64_t policy;
  if (evictLast) {
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  }
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * PREFETCH_THREADS * PREFETCH_CHUNK;
  uint64_t at = (static_cast<uint64_t>(blockIdx.x) * PREFETCH_THREADS + threadIdx.x) * PREFETCH_CHUNK;
  for (; at < bytes; at += stride) {
    // A multiple of 16 bytes from a 16-byte aligned address, as the instruction requires.
    const uint64_t left = bytes - at;
    const uint32_t size = static_cast<uint32_t>(left < PREFETCH_CHUNK ? left : PREFETCH_CHUNK) & ~15u;
    if (size != 0) {
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;"
                   :
                   : "l"(data + at), "r"(size), "l"(policy)
                   : "memory");
    }
  }
#endif
  pdl_wait();
}
