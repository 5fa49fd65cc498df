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
