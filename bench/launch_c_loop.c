// The C floor for launch cost, callable from Deno: a plain C loop of cuLaunchKernel calls. Timed
// in the same process, context and rounds as Denali's launchers (bench/launch_denali.ts), so the
// ratio compares launch paths alone, not two processes' driver or CPU state.
// Build: cc -O2 -shared -fPIC -o liblaunch_c_loop.so bench/launch_c_loop.c -lcuda
#include <cuda.h>

// Launches `f` `count` times (grid 1, block 32) with the given kernelParams; returns the first
// non-zero CUresult, or 0.
int c_launch_loop(CUfunction f, CUstream stream, void** params, int count) {
  for (int i = 0; i < count; i++) {
    CUresult rc = cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, stream, params, NULL);
    if (rc != CUDA_SUCCESS) return (int)rc;
  }
  return 0;
}

// The same single launch, but clearing the upper AVX register halves first. Diagnostic: if the
// JS-to-C alternation costs come from AVX/SSE transition penalties (V8 code leaving dirty upper
// state before SSE-heavy driver code), this variant runs as fast as the tight C loop.
int c_launch_one_vzeroupper(CUfunction f, CUstream stream, void** params) {
#if defined(__x86_64__)
  __asm__ volatile("vzeroupper" ::: "memory");
#endif
  CUresult rc = cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, stream, params, NULL);
  return (int)rc;
}
