// Programmatic dependent launch (sm_90+). A kernel launched with programmatic stream
// serialization may start while the previous kernel of its stream still runs:
// - pdl_launch_dependents() lets the next such launch start early in turn, once every block of
//   this kernel has called it (or exited);
// - pdl_wait() returns when the previous kernel has completed and its writes are visible.
// Before pdl_wait a kernel may read only what that kernel cannot be writing. Launched plainly,
// or compiled for an older arch or HIP, both do nothing.
#pragma once
#include "compat.h"

__device__ __forceinline__ void pdl_launch_dependents() {
#if !defined(DENALI_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if !defined(DENALI_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// DENALI_LD16(name, ".qualifiers") defines `uint4 name(const T* p)`: a 16-byte global load
// spelled with those PTX qualifiers (".nc", ".cg", ".nc.L1::no_allocate.L2::256B", or "" for a
// plain coherent load), volatile so the compiler keeps it on its side of pdl_wait. Under HIP,
// which has no programmatic launch, a plain load.
#ifdef DENALI_HIP
#define DENALI_LD16(name, qualifiers)               \
  template <typename T>                             \
  __device__ __forceinline__ uint4 name(const T* p) { \
    return *reinterpret_cast<const uint4*>(p);      \
  }
#else
#define DENALI_LD16(name, qualifiers)                                                  \
  template <typename T>                                                                \
  __device__ __forceinline__ uint4 name(const T* p) {                                  \
    uint4 v;                                                                           \
    asm volatile("ld.global" qualifiers ".v4.u32 {%0,%1,%2,%3}, [%4];"                 \
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)                          \
                 : "l"(p));                                                            \
    return v;                                                                          \
  }
#endif
