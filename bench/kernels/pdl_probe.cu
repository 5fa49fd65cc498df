// Probe of programmatic dependent launch and of what plain reads reach, in the timing of
// bench/kernels/measure.ts (10 back-to-back calls behind a 512 MiB memset, median of 30):
// - spin: kernels that busy-wait before and/or after griddepcontrol.wait, launched plainly or
//   programmatically, with or without griddepcontrol.launch_dependents: does the pre-wait part
//   of call k+1 overlap call k?
// - read: 8 and 32 MB read once per call (rotated over 256 MB) by 16/32/64 KiB blocks, the loads
//   before or after the wait: what any kernel reading that many bytes per call can reach.
// - copy: cudaMemcpyAsync device to device of the same bytes.
// A standalone CUDA C program (runtime API), so its numbers owe nothing to Denali's launchers.
// On the GPU machine: nvcc -O2 -arch=sm_90 -std=c++17 bench/kernels/pdl_probe.cu -o /tmp/pdl_probe
//   && /tmp/pdl_probe
#include <cstdio>
#include <cuda_runtime.h>
#include <vector>
#include <algorithm>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

__device__ __forceinline__ unsigned long long now() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
__device__ __forceinline__ void trig() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void gwait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// mode bit0: trigger at start; pre-wait spin `preNs`; post-wait spin `postNs`; then one store.
__global__ void spin(int* out, long preNs, long postNs, int trigger) {
  if (trigger) trig();
  unsigned long long t0 = now();
  while (now() - t0 < (unsigned long long)preNs) {}
  gwait();
  t0 = now();
  while (now() - t0 < (unsigned long long)postNs) {}
  if (threadIdx.x == 0) out[blockIdx.x] += 1;
}

// Streaming read: block reads `per` bytes of w (16 B/thread/iter), all loads before the wait when
// early=1, then waits, then sums and stores one float per block.
__global__ void readk(float* out, const uint4* w, int perChunks, int early, int trigger) {
  if (trigger) trig();
  const uint4* p = w + (size_t)blockIdx.x * perChunks;
  uint4 v[16];
  int n = perChunks / blockDim.x;  // <= 16
  if (early) {
#pragma unroll
    for (int i = 0; i < 16; i++) if (i < n) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v[i].x), "=r"(v[i].y), "=r"(v[i].z), "=r"(v[i].w) : "l"(p + threadIdx.x + i * blockDim.x));
    gwait();
  } else {
    gwait();
#pragma unroll
    for (int i = 0; i < 16; i++) if (i < n) v[i] = p[threadIdx.x + i * blockDim.x];
  }
  float s = 0;
#pragma unroll
  for (int i = 0; i < 16; i++) if (i < n) s += __uint_as_float(v[i].x) + __uint_as_float(v[i].w);
  __shared__ float red[32];
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(~0u, s, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) { float t = 0; for (int i = 0; i < blockDim.x / 32; i++) t += red[i]; out[blockIdx.x] = t; }
}

template <typename F>
float timeChain(cudaStream_t s, void* cover, F launch, int inner = 10, int reps = 30) {
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  std::vector<float> ts;
  for (int r = 0; r < reps + 3; r++) {
    cudaMemsetAsync(cover, r, 512u << 20, s);
    cudaEventRecord(a, s);
    for (int i = 0; i < inner; i++) launch(r * inner + i);
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b);
    if (r >= 3) ts.push_back(ms * 1000 / inner);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main() {
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* cover; CK(cudaMalloc(&cover, 512u << 20));
  int* out; CK(cudaMalloc(&out, 1 << 20));
  const size_t pool = 256u << 20;
  uint4* w; CK(cudaMalloc(&w, pool)); CK(cudaMemset(w, 1, pool));
  auto launchEx = [&](bool pdl, dim3 g, dim3 bl, auto kern, auto... args) {
    cudaLaunchConfig_t cfg = {}; cfg.gridDim = g; cfg.blockDim = bl; cfg.stream = s;
    cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at; cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, args...);
    if (e != cudaSuccess) printf("launch: %s\n", cudaGetErrorString(e));
  };
  for (int blocks : {128, 512}) {
    for (long pre : {0L, 3000L}) for (long post : {0L, 3000L}) for (int pdl : {0, 1}) for (int trig : {0, 1}) {
      if (!pdl && trig) continue;
      float us = timeChain(s, cover, [&](int) { launchEx(pdl, dim3(blocks), dim3(256), spin, out, pre, post, trig); });
      printf("spin blocks=%d pre_ns=%ld post_ns=%ld pdl=%d trigger=%d us_per_call=%.2f\n", blocks, pre, post, pdl, trig, us);
    }
  }
  // 8 MB and 32 MB streaming reads, rotated over the pool.
  for (size_t bytes : {8u << 20, 32u << 20}) {
    int sets = pool / bytes;
    for (int threads : {256}) for (int perKB : {16, 32, 64}) {
      int perChunks = perKB * 1024 / 16; int blocks = bytes / (perKB * 1024);
      if (perChunks / threads > 16) continue;
      for (int pdl : {0, 1}) for (int early : {0, 1}) {
        if (!pdl && early) continue;
        float us = timeChain(s, cover, [&](int i) { launchEx(pdl, dim3(blocks), dim3(threads), readk, (float*)out, (const uint4*)((char*)w + (size_t)(i % sets) * bytes), perChunks, early, pdl); });
        printf("read bytes=%zu blocks=%d per_kb=%d pdl=%d early=%d us_per_call=%.2f read_gbps=%.0f\n", bytes, blocks, perKB, pdl, early, us, bytes / (us * 1e3));
      }
    }
    float cu = timeChain(s, cover, [&](int i) { cudaMemcpyAsync(cover, (char*)w + (size_t)(i % sets) * bytes, bytes, cudaMemcpyDeviceToDevice, s); });
    printf("copy bytes=%zu us_per_call=%.2f copy_gbps(2x)=%.0f\n", bytes, cu, 2 * bytes / (cu * 1e3));
  }
  return 0;
}
