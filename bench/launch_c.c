// C baseline for the kernel-launch benchmark: host cost of cuLaunchKernel and of CUDA-graph nodes.
//
//   nvcc -O2 -o launch_c bench/launch_c.c -lcuda && ./launch_c kernels/ptx/runtime_test.sm_90.ptx
//
// Method (shared by every launch benchmark so the numbers compare): warm-up, then R rounds of B
// launches on one non-blocking stream; only the B host calls are timed, the stream sync is outside
// the timed region (so the queue never fills up and blocks the host). Output lines:
//   RESULT <name> mean_ns=<total ns / (R*B)> median_ns=<median over rounds of round ns / B>
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WARMUP 2000
#define R 200
#define B 200

#define CK(call)                                                              \
  do {                                                                        \
    CUresult rc_ = (call);                                                    \
    if (rc_ != CUDA_SUCCESS) {                                                \
      const char* name_ = "?";                                                \
      cuGetErrorName(rc_, &name_);                                            \
      fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", __FILE__, __LINE__, #call, \
              name_, (int)rc_);                                               \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

// round_ns[i] is the timed ns of round i (B launches).
// Prints mean = total / (R*B) and the median over rounds of round_ns[i] / B.
static void report(const char* name, const long long* round_ns) {
  double per[R];
  long long total = 0;
  for (int i = 0; i < R; i++) {
    total += round_ns[i];
    per[i] = (double)round_ns[i] / B;
  }
  qsort(per, R, sizeof(double), cmp_double);
  printf("RESULT %s mean_ns=%.1f median_ns=%.1f\n", name, (double)total / ((double)R * B),
         (per[R / 2 - 1] + per[R / 2]) / 2);
}

static char* read_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) { perror(path); exit(1); }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = malloc(n + 1);  // PTX must be NUL-terminated for cuModuleLoadDataEx
  if (fread(buf, 1, n, f) != (size_t)n) { perror(path); exit(1); }
  buf[n] = 0;
  fclose(f);
  return buf;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s runtime_test.ptx\n", argv[0]); return 2; }
  char* ptx = read_file(argv[1]);

  CUdevice dev;
  CUcontext ctx;
  char dev_name[256];
  int drv = 0;
  CK(cuInit(0));
  CK(cuDeviceGet(&dev, 0));
  CK(cuDeviceGetName(dev_name, sizeof dev_name, dev));
  CK(cuDriverGetVersion(&drv));
  // Primary context: its API is stable across CUDA versions (cuCtxCreate changed in 13).
  CK(cuDevicePrimaryCtxRetain(&ctx, dev));
  CK(cuCtxSetCurrent(ctx));
  printf("device: %s, driver API %d\n", dev_name, drv);

  // Surface the JIT log on failure; a bare CUDA_ERROR_INVALID_PTX says nothing useful.
  char log[8192] = {0};
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void* vals[] = {log, (void*)(size_t)sizeof log};
  CUmodule mod;
  CUresult lr = cuModuleLoadDataEx(&mod, ptx, 2, opts, vals);
  if (lr != CUDA_SUCCESS) fprintf(stderr, "PTX JIT log:\n%s\n", log);
  CK(lr);
  CUfunction fn;
  CK(cuModuleGetFunction(&fn, mod, "args8"));

  CUdeviceptr a, b, c, d;
  CK(cuMemAlloc(&a, 256));
  CK(cuMemAlloc(&b, 256));
  CK(cuMemAlloc(&c, 256));
  CK(cuMemAlloc(&d, 256));
  int n = 32, m = 7;  // n >= 0: the kernel's store is never taken
  float x = 1.5f, y = 2.5f;
  void* params[8] = {&a, &b, &c, &d, &n, &m, &x, &y};

  CUstream s;
  CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

  // --- plain cuLaunchKernel ---
  long long round_ns[R];
  for (int i = 0; i < WARMUP; i++) CK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
  CK(cuStreamSynchronize(s));
  for (int r = 0; r < R; r++) {
    long long t0 = now_ns();
    for (int i = 0; i < B; i++) CK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
    round_ns[r] = now_ns() - t0;
    CK(cuStreamSynchronize(s));
  }
  report("c_cuLaunchKernel", round_ns);

  // --- CUDA graph of B identical launches ---
  CUgraph graph;
  CUgraphExec exec;
  CK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
  for (int i = 0; i < B; i++) CK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
  CK(cuStreamEndCapture(s, &graph));
  CK(cuGraphInstantiateWithFlags(&exec, graph, 0));  // exists in CUDA 11.4+ and 12/13 alike
  for (int i = 0; i < 20; i++) CK(cuGraphLaunch(exec, s));  // first launch uploads the graph
  CK(cuStreamSynchronize(s));

  long long dev_ns[R];
  for (int r = 0; r < R; r++) {
    long long t0 = now_ns();
    CK(cuGraphLaunch(exec, s));
    long long t1 = now_ns();
    CK(cuStreamSynchronize(s));
    round_ns[r] = t1 - t0;             // host cost of the launch call only
    dev_ns[r] = now_ns() - t0;         // launch + execution of all B nodes + sync
  }
  report("cuda_graph_node_host", round_ns);
  report("cuda_graph_node_device", dev_ns);

  CK(cuGraphExecDestroy(exec));
  CK(cuGraphDestroy(graph));
  CK(cuStreamDestroy(s));
  CK(cuMemFree(a));
  CK(cuMemFree(b));
  CK(cuMemFree(c));
  CK(cuMemFree(d));
  CK(cuModuleUnload(mod));
  CK(cuDevicePrimaryCtxRelease(dev));
  free(ptx);
  return 0;
}
