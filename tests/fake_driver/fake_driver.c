// A fake GPU driver library, so CI machines without a GPU can exercise Denali's CUDA and HIP
// backends and its kernel launcher byte for byte.
//
//   gcc -O2 -shared -fPIC -o libfake_cuda.so fake_driver.c                  # libcuda symbols
//   gcc -O2 -shared -fPIC -DFAKE_HIP -o libfake_hip.so fake_driver.c        # libamdhip64 symbols
//   add -DFAKE_OMIT_GRAPH_LAUNCH to leave out cuGraphLaunch / hipGraphLaunch
//   add -DFAKE_LAUNCH_EX (CUDA only) to export cuLaunchKernelEx, which the default build leaves
//   out, like a driver older than CUDA 11.8, so that every launch goes through cuLaunchKernel
//
// Every driver body is written once: `API(cu, hip)` picks the exported name for the build, so the
// two builds cannot drift apart. The exported C signatures mirror backends/driver_ffi.ts,
// backends/cuda_ffi.ts and backends/hip_ffi.ts (result codes are int, device pointers uint64_t).
//
// The "device" is host memory: an allocation's device pointer is a real 256-byte-aligned host
// address, and copies happen synchronously, so tests can read back exactly what a kernel launch
// would have seen. Launches execute nothing; they record what was passed (see fake_last_launch).
//
// Control and query entry points (the same in every build), for tests and benchmarks:
//
//   void     fake_set_device_count(int n);
//   void     fake_set_compute_capability(int major, int minor);
//   void     fake_set_driver_version(int version);
//   int      fake_set_param_sizes(const uint32_t* sizes, uint32_t count);
//   int      fake_fail_next(const char* role_or_symbol_name, int code);
//   int      fake_set_blocks_per_sm(const char* kernel_name, int blocks);
//   void     fake_advance_clock_ns(uint64_t ns);
//   void     fake_freeze_clock(int frozen);
//   uint64_t fake_launch_count(void);
//   uint64_t fake_graph_nodes_replayed(void);
//   uint64_t fake_bytes_allocated(void);
//   void     fake_reset(void);
//   int      fake_last_launch(uint8_t* out, uint32_t cap);
//   int      fake_last_captured_launch(uint8_t* out, uint32_t cap);
//
// Launch record layout written by fake_last_launch / fake_last_captured_launch (little-endian):
//
//   offset  size  field
//        0     4  u32 gridX
//        4     4  u32 gridY
//        8     4  u32 gridZ
//       12     4  u32 blockX
//       16     4  u32 blockY
//       20     4  u32 blockZ
//       24     4  u32 sharedMem (dynamic shared memory bytes)
//       28     4  u32 argBytes
//       32     8  u64 stream handle (0 for the default stream)
//       40    64  char[64] function name, NUL padded (truncated to 63 bytes)
//      104     4  u32 flags: 1 = launched through cuLaunchKernelEx, 2 = with programmatic stream
//                 serialization allowed (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
//      108     4  u32 zero
//      112     n  argBytes bytes of packed kernel arguments
//
// Both return the total bytes written (112 + argBytes), 0 if no launch was recorded since load
// or fake_reset, or -1 if `cap` is too small.
//
// Not thread safe: Deno calls FFI symbols from the JS thread, one at a time.

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FAKE_HIP
#define API(cu, hip) hip
#define FAKE_LAUNCH_END 3 // HIP_LAUNCH_PARAM_END
#else
#define API(cu, hip) cu
#define FAKE_LAUNCH_END 0 // CU_LAUNCH_PARAM_END
#endif

#define EXPORT __attribute__((visibility("default")))

// Result codes. CUDA and HIP agree on every value the fake returns.
enum {
  R_SUCCESS = 0,
  R_INVALID_VALUE = 1,
  R_OUT_OF_MEMORY = 2,
  R_NO_DEVICE = 100,
  R_INVALID_DEVICE = 101,
  R_INVALID_PTX = 218, // CUDA_ERROR_INVALID_PTX / hipErrorInvalidKernelFile
  R_INVALID_HANDLE = 400,
  R_ILLEGAL_STATE = 401,
  R_NOT_FOUND = 500,
};

#define TOTAL_MEMORY ((uint64_t)1 << 30)
#define DEVICE_NAME "Denali Fake GPU"
#define ARCH_NAME "gfx90a"
#define MAX_ARG_BYTES 4096 // the classic CUDA kernel parameter limit
#define MAX_PARAMS 256
#define NAME_BYTES 64
#define RECORD_HEADER_BYTES 112
#define FLAG_LAUNCH_EX 1u
#define FLAG_PROGRAMMATIC 2u
#define MAX_FAILURES 32
#define MAX_EXTRA_SLOTS 16
#ifdef FAKE_HIP
// gfx90a has 64 KiB of LDS and needs no opt-in to use all of it.
#define DEFAULT_DYNAMIC_SMEM 65536
#define MAX_DYNAMIC_SMEM 65536
#else
// Like an H100: 48 KiB without opt-in, up to 227 KiB after cuFuncSetAttribute.
#define DEFAULT_DYNAMIC_SMEM 49152
#define MAX_DYNAMIC_SMEM 232448
#endif

// Opaque handles carry a magic word so a handle of the wrong kind (or garbage) is reported as
// an invalid handle instead of crashing the test process.
enum {
  MAGIC_STREAM = 0x5354524d,
  MAGIC_EVENT = 0x4556454e,
  MAGIC_MODULE = 0x4d4f4455,
  MAGIC_FUNCTION = 0x46554e43,
  MAGIC_GRAPH = 0x47524150,
  MAGIC_EXEC = 0x45584543,
  MAGIC_DEAD = 0x44454144,
};

typedef struct {
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t shared_mem;
  uint32_t arg_bytes;
  uint64_t stream;
  char name[NAME_BYTES];
  uint32_t flags;
  uint8_t args[MAX_ARG_BYTES];
} launch_record;

typedef struct fake_function {
  uint32_t magic;
  uint32_t max_dynamic_smem;
  struct fake_function* next; // the owning module's list, freed on unload
  char name[NAME_BYTES];
} fake_function;

typedef struct {
  uint32_t magic;
  fake_function* functions;
} fake_module;

typedef struct {
  uint32_t magic;
  int capturing;
  uint64_t capture_epoch; // capture state is void once fake_reset bumps g_epoch
  uint64_t captured;
  launch_record* last_captured; // allocated on first capture, so plain streams stay small
} fake_stream;

typedef struct {
  uint32_t magic;
  int recorded;
  uint64_t ns;
} fake_event;

typedef struct {
  uint32_t magic;
  uint64_t nodes;
  int has_last;
  launch_record last;
} fake_graph;

typedef struct {
  uint32_t magic;
  uint64_t nodes;
} fake_exec;

typedef struct {
  uint64_t ptr;
  uint64_t size;
  int host;
} allocation;

typedef struct {
  char name[NAME_BYTES];
  int code;
} failure;

// ---- State -------------------------------------------------------------------------------------

static int g_device_count = 1;
#ifdef FAKE_HIP
#define DEFAULT_DRIVER_VERSION 60200000 // ROCm 6.2
#else
#define DEFAULT_DRIVER_VERSION 12040 // CUDA 12.4
#endif
static int g_cc_major = 9, g_cc_minor = 0; // an H100
static int g_driver_version = DEFAULT_DRIVER_VERSION;
static uint64_t g_launches;
static uint64_t g_nodes_replayed;
static uint64_t g_bytes_allocated;
static uint64_t g_epoch = 1;
static uint64_t g_clock_offset_ns;
static int g_clock_frozen;
static uint64_t g_frozen_ns;

static uint32_t g_param_sizes[MAX_PARAMS];
static uint32_t g_param_count;

// What the occupancy query answers: per kernel name where a test set it (fake_set_blocks_per_sm),
// else DEFAULT_BLOCKS_PER_SM, so that no launch choice changes unless a test asks.
#define DEFAULT_BLOCKS_PER_SM 2
#define MAX_OCCUPANCIES 16
typedef struct {
  char name[NAME_BYTES];
  int blocks;
} occupancy;
static occupancy g_occupancies[MAX_OCCUPANCIES];
static int g_occupancy_count;

// Three records and pointer swaps: a launch is built into the scratch record and swapped in
// only once it succeeded, so a failed launch leaves the last good record intact at no copy cost.
static launch_record g_records[3];
static launch_record* g_last = &g_records[0];
static launch_record* g_last_captured = &g_records[1];
static launch_record* g_scratch = &g_records[2];
static int g_has_last;
static int g_has_last_captured;

static allocation* g_allocs;
static size_t g_alloc_count;
static size_t g_alloc_cap;

static failure g_failures[MAX_FAILURES];
static int g_failure_count;

#ifndef FAKE_HIP
static int g_primary_context; // its address is the one CUcontext handed out
#endif

// ---- Helpers -----------------------------------------------------------------------------------

static uint64_t monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t fake_now_ns(void) {
  return (g_clock_frozen ? g_frozen_ns : monotonic_ns()) + g_clock_offset_ns;
}

// Consumes the first pending failure injected for this symbol (or its role name).
static int take_failure(const char* symbol, const char* role, int* code) {
  for (int i = 0; i < g_failure_count; i++) {
    if (strcmp(g_failures[i].name, symbol) == 0 || strcmp(g_failures[i].name, role) == 0) {
      *code = g_failures[i].code;
      memmove(&g_failures[i], &g_failures[i + 1],
              (size_t)(g_failure_count - i - 1) * sizeof(failure));
      g_failure_count--;
      return 1;
    }
  }
  return 0;
}

// First statement of every driver entry point; one predictable branch when nothing is injected.
#define FAIL_POINT(role)                                                                           \
  do {                                                                                             \
    if (g_failure_count) {                                                                         \
      int rc_;                                                                                     \
      if (take_failure(__func__, #role, &rc_)) return rc_;                                        \
    }                                                                                              \
  } while (0)

static int valid_device(int dev) { return dev >= 0 && dev < g_device_count; }

static allocation* find_alloc(uint64_t ptr) {
  for (size_t i = g_alloc_count; i-- > 0;) {
    if (g_allocs[i].ptr == ptr) return &g_allocs[i];
  }
  return NULL;
}

// Whether [ptr, ptr + n) lies inside one live allocation: out-of-bounds copies fail with 1
// instead of corrupting the test process's heap.
static int valid_range(uint64_t ptr, size_t n) {
  if (n == 0) return 1;
  for (size_t i = g_alloc_count; i-- > 0;) {
    const allocation* a = &g_allocs[i];
    if (ptr >= a->ptr && ptr - a->ptr <= a->size && n <= a->size - (ptr - a->ptr)) return 1;
  }
  return 0;
}

static int track(uint64_t ptr, uint64_t size, int host) {
  if (g_alloc_count == g_alloc_cap) {
    size_t cap = g_alloc_cap ? g_alloc_cap * 2 : 64;
    allocation* grown = realloc(g_allocs, cap * sizeof(allocation));
    if (!grown) return 0;
    g_allocs = grown;
    g_alloc_cap = cap;
  }
  g_allocs[g_alloc_count++] = (allocation){ptr, size, host};
  return 1;
}

static void untrack(allocation* a) { *a = g_allocs[--g_alloc_count]; }

static int alloc_memory(uint64_t* out, size_t bytes, int host) {
  if (!out) return R_INVALID_VALUE;
  if (!host && bytes > TOTAL_MEMORY - g_bytes_allocated) return R_OUT_OF_MEMORY;
  void* p = NULL;
  size_t rounded = (bytes + 255) & ~(size_t)255;
  if (posix_memalign(&p, 256, rounded ? rounded : 256) != 0) return R_OUT_OF_MEMORY;
  if (!track((uint64_t)(uintptr_t)p, bytes, host)) {
    free(p);
    return R_OUT_OF_MEMORY;
  }
  if (!host) g_bytes_allocated += bytes;
  *out = (uint64_t)(uintptr_t)p;
  return R_SUCCESS;
}

static int free_memory(uint64_t ptr, int host) {
  allocation* a = find_alloc(ptr);
  if (!a || a->host != host) return R_INVALID_VALUE;
  if (!host) g_bytes_allocated -= a->size;
  free((void*)(uintptr_t)ptr);
  untrack(a);
  return R_SUCCESS;
}

static fake_stream* as_stream(void* h) {
  fake_stream* s = h;
  return s && s->magic == MAGIC_STREAM ? s : NULL;
}

static int stream_capturing(const fake_stream* s) {
  return s && s->capturing && s->capture_epoch == g_epoch;
}

// NULL is the legacy default stream, which is always valid.
static int valid_stream(void* h) { return !h || as_stream(h); }

static void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static int serialise(const launch_record* r, int has, uint8_t* out, uint32_t cap) {
  if (!has) return 0;
  uint32_t total = RECORD_HEADER_BYTES + r->arg_bytes;
  if (!out || cap < total) return -1;
  for (int i = 0; i < 3; i++) put_u32(out + 4 * i, r->grid[i]);
  for (int i = 0; i < 3; i++) put_u32(out + 12 + 4 * i, r->block[i]);
  put_u32(out + 24, r->shared_mem);
  put_u32(out + 28, r->arg_bytes);
  put_u64(out + 32, r->stream);
  memcpy(out + 40, r->name, NAME_BYTES);
  put_u32(out + 104, r->flags);
  put_u32(out + 108, 0);
  memcpy(out + RECORD_HEADER_BYTES, r->args, r->arg_bytes);
  return (int)total;
}

// ---- Error text --------------------------------------------------------------------------------

typedef struct {
  int code;
  const char* cu_name;
  const char* hip_name;
  const char* message;
} error_text;

static const error_text ERRORS[] = {
    {0, "CUDA_SUCCESS", "hipSuccess", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "hipErrorInvalidValue", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "hipErrorOutOfMemory", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "hipErrorNotInitialized", "initialization error"},
#ifdef FAKE_HIP
    {100, "CUDA_ERROR_NO_DEVICE", "hipErrorNoDevice", "no ROCm-capable device is detected"},
#else
    {100, "CUDA_ERROR_NO_DEVICE", "hipErrorNoDevice", "no CUDA-capable device is detected"},
#endif
    {101, "CUDA_ERROR_INVALID_DEVICE", "hipErrorInvalidDevice", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "hipErrorInvalidImage", "device kernel image is invalid"},
#ifdef FAKE_HIP
    {218, "CUDA_ERROR_INVALID_PTX", "hipErrorInvalidKernelFile", "invalid kernel file"},
#else
    {218, "CUDA_ERROR_INVALID_PTX", "hipErrorInvalidKernelFile", "a PTX JIT compilation failed"},
#endif
    {400, "CUDA_ERROR_INVALID_HANDLE", "hipErrorInvalidHandle", "invalid resource handle"},
    {401, "CUDA_ERROR_ILLEGAL_STATE", "hipErrorIllegalState",
     "the operation cannot be performed in the present state"},
    {500, "CUDA_ERROR_NOT_FOUND", "hipErrorNotFound", "named symbol not found"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "hipErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {999, "CUDA_ERROR_UNKNOWN", "hipErrorUnknown", "unknown error"},
};

static const error_text* find_error(int code) {
  for (size_t i = 0; i < sizeof(ERRORS) / sizeof(ERRORS[0]); i++) {
    if (ERRORS[i].code == code) return &ERRORS[i];
  }
  return NULL;
}

// ---- Initialisation and device queries ---------------------------------------------------------

EXPORT int API(cuInit, hipInit)(unsigned int flags) {
  FAIL_POINT(init);
  (void)flags;
  return g_device_count > 0 ? R_SUCCESS : R_NO_DEVICE;
}

EXPORT int API(cuDriverGetVersion, hipDriverGetVersion)(int* version) {
  FAIL_POINT(driverGetVersion);
  if (!version) return R_INVALID_VALUE;
  *version = g_driver_version;
  return R_SUCCESS;
}

EXPORT int API(cuDeviceGetCount, hipGetDeviceCount)(int* count) {
  FAIL_POINT(deviceGetCount);
  if (!count) return R_INVALID_VALUE;
  *count = g_device_count;
#ifdef FAKE_HIP
  // Real HIP reports the empty machine through the result code as well as the count.
  if (g_device_count == 0) return R_NO_DEVICE;
#endif
  return R_SUCCESS;
}

EXPORT int API(cuDeviceGetName, hipDeviceGetName)(char* name, int len, int dev) {
  FAIL_POINT(deviceGetName);
  if (!name || len <= 0) return R_INVALID_VALUE;
  if (!valid_device(dev)) return R_INVALID_DEVICE;
  strncpy(name, DEVICE_NAME, (size_t)len - 1);
  name[len - 1] = '\0';
  return R_SUCCESS;
}

EXPORT int API(cuDeviceGetAttribute, hipDeviceGetAttribute)(int* value, int attribute, int dev) {
  FAIL_POINT(deviceGetAttribute);
  if (!value) return R_INVALID_VALUE;
  if (!valid_device(dev)) return R_INVALID_DEVICE;
  // Unknown attributes fail rather than read as 0, so a backend asking for something the fake
  // does not model finds out in CI instead of computing with a silent zero.
  switch (attribute) {
#ifdef FAKE_HIP
  case 23: *value = g_cc_major; return R_SUCCESS; // hipDeviceAttributeComputeCapabilityMajor
  case 61: *value = g_cc_minor; return R_SUCCESS; // hipDeviceAttributeComputeCapabilityMinor
  case 63: *value = 132; return R_SUCCESS; // hipDeviceAttributeMultiprocessorCount
#else
  case 1: *value = 1024; return R_SUCCESS;              // MAX_THREADS_PER_BLOCK
  case 8: *value = 49152; return R_SUCCESS;             // MAX_SHARED_MEMORY_PER_BLOCK
  case 10: *value = 32; return R_SUCCESS;               // WARP_SIZE
  case 16: *value = 132; return R_SUCCESS;              // MULTIPROCESSOR_COUNT
  case 75: *value = g_cc_major; return R_SUCCESS;       // COMPUTE_CAPABILITY_MAJOR
  case 76: *value = g_cc_minor; return R_SUCCESS;       // COMPUTE_CAPABILITY_MINOR
  case 97: *value = MAX_DYNAMIC_SMEM; return R_SUCCESS; // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
#endif
  default: return R_INVALID_VALUE;
  }
}

EXPORT int API(cuCtxSynchronize, hipDeviceSynchronize)(void) {
  FAIL_POINT(deviceSynchronize);
  return R_SUCCESS;
}

#ifdef FAKE_HIP

EXPORT int hipSetDevice(int dev) {
  FAIL_POINT(hipSetDevice);
  return valid_device(dev) ? R_SUCCESS : R_INVALID_DEVICE;
}

// Real hipDeviceProp_t changes layout between ROCm releases and Denali only scans it for "gfx",
// so the fake writes just the first 1024 bytes: the name at 0 and the arch name at 512.
EXPORT int hipGetDeviceProperties(void* prop, int dev) {
  FAIL_POINT(hipGetDeviceProperties);
  if (!prop) return R_INVALID_VALUE;
  if (!valid_device(dev)) return R_INVALID_DEVICE;
  char* p = prop;
  memset(p, 0, 1024);
  memcpy(p, DEVICE_NAME, sizeof(DEVICE_NAME));
  memcpy(p + 512, ARCH_NAME, sizeof(ARCH_NAME));
  return R_SUCCESS;
}

// HIP returns error text directly; these cannot report failure, so they have no fail point.
EXPORT const char* hipGetErrorName(int code) {
  const error_text* e = find_error(code);
  return e ? e->hip_name : "hipErrorUnknown";
}

EXPORT const char* hipGetErrorString(int code) {
  const error_text* e = find_error(code);
  return e ? e->message : "unknown error";
}

#else

EXPORT int cuDeviceGet(int* device, int ordinal) {
  FAIL_POINT(cuDeviceGet);
  if (!device) return R_INVALID_VALUE;
  if (!valid_device(ordinal)) return R_INVALID_DEVICE;
  *device = ordinal;
  return R_SUCCESS;
}

EXPORT int cuDevicePrimaryCtxRetain(void** ctx, int dev) {
  FAIL_POINT(cuDevicePrimaryCtxRetain);
  if (!ctx) return R_INVALID_VALUE;
  if (!valid_device(dev)) return R_INVALID_DEVICE;
  *ctx = &g_primary_context;
  return R_SUCCESS;
}

EXPORT int cuDevicePrimaryCtxRelease_v2(int dev) {
  FAIL_POINT(cuDevicePrimaryCtxRelease_v2);
  return valid_device(dev) ? R_SUCCESS : R_INVALID_DEVICE;
}

EXPORT int cuCtxSetCurrent(void* ctx) {
  FAIL_POINT(cuCtxSetCurrent);
  return !ctx || ctx == &g_primary_context ? R_SUCCESS : R_INVALID_HANDLE;
}

EXPORT int cuGetErrorName(int code, const char** out) {
  FAIL_POINT(cuGetErrorName);
  const error_text* e = find_error(code);
  if (!e || !out) return R_INVALID_VALUE;
  *out = e->cu_name;
  return R_SUCCESS;
}

EXPORT int cuGetErrorString(int code, const char** out) {
  FAIL_POINT(cuGetErrorString);
  const error_text* e = find_error(code);
  if (!e || !out) return R_INVALID_VALUE;
  *out = e->message;
  return R_SUCCESS;
}

#endif

// ---- Memory ------------------------------------------------------------------------------------

EXPORT int API(cuMemGetInfo_v2, hipMemGetInfo)(size_t* free_bytes, size_t* total_bytes) {
  FAIL_POINT(memGetInfo);
  if (!free_bytes || !total_bytes) return R_INVALID_VALUE;
  *free_bytes = (size_t)(TOTAL_MEMORY - g_bytes_allocated);
  *total_bytes = (size_t)TOTAL_MEMORY;
  return R_SUCCESS;
}

EXPORT int API(cuMemAlloc_v2, hipMalloc)(uint64_t* dptr, size_t bytes) {
  FAIL_POINT(memAlloc);
#ifdef FAKE_HIP
  if (bytes == 0 && dptr) { // hipMalloc(0) succeeds with a null pointer
    *dptr = 0;
    return R_SUCCESS;
  }
#else
  if (bytes == 0) return R_INVALID_VALUE; // as cuMemAlloc does
#endif
  return alloc_memory(dptr, bytes, 0);
}

EXPORT int API(cuMemFree_v2, hipFree)(uint64_t dptr) {
  FAIL_POINT(memFree);
#ifdef FAKE_HIP
  if (dptr == 0) return R_SUCCESS; // hipFree(nullptr) is a no-op
#endif
  return free_memory(dptr, 0);
}

EXPORT int API(cuMemHostAlloc, hipHostMalloc)(void** ptr, size_t bytes, unsigned int flags) {
  FAIL_POINT(hostAlloc);
  (void)flags;
  if (!ptr) return R_INVALID_VALUE;
  uint64_t p;
  int rc = alloc_memory(&p, bytes, 1);
  if (rc == R_SUCCESS) *ptr = (void*)(uintptr_t)p;
  return rc;
}

EXPORT int API(cuMemFreeHost, hipHostFree)(void* ptr) {
  FAIL_POINT(hostFree);
  return free_memory((uint64_t)(uintptr_t)ptr, 1);
}

// The Async copies run synchronously: the fake has no device timeline, and tests want the bytes
// in place as soon as the call returns.
EXPORT int API(cuMemsetD8Async, hipMemsetD8Async)(uint64_t dst, unsigned char value, size_t n,
                                                  void* stream) {
  FAIL_POINT(memsetD8Async);
  if (!valid_stream(stream)) return R_INVALID_HANDLE;
  if (!valid_range(dst, n)) return R_INVALID_VALUE;
  if (n) memset((void*)(uintptr_t)dst, value, n);
  return R_SUCCESS;
}

EXPORT int API(cuMemcpyHtoDAsync_v2, hipMemcpyHtoDAsync)(uint64_t dst, const void* src, size_t n,
                                                         void* stream) {
  FAIL_POINT(memcpyHtoDAsync);
  if (!valid_stream(stream)) return R_INVALID_HANDLE;
  if (!valid_range(dst, n) || (n && !src)) return R_INVALID_VALUE;
  if (n) memcpy((void*)(uintptr_t)dst, src, n);
  return R_SUCCESS;
}

EXPORT int API(cuMemcpyDtoHAsync_v2, hipMemcpyDtoHAsync)(void* dst, uint64_t src, size_t n,
                                                         void* stream) {
  FAIL_POINT(memcpyDtoHAsync);
  if (!valid_stream(stream)) return R_INVALID_HANDLE;
  if (!valid_range(src, n) || (n && !dst)) return R_INVALID_VALUE;
  if (n) memcpy(dst, (const void*)(uintptr_t)src, n);
  return R_SUCCESS;
}

EXPORT int API(cuMemcpyDtoDAsync_v2, hipMemcpyDtoDAsync)(uint64_t dst, uint64_t src, size_t n,
                                                         void* stream) {
  FAIL_POINT(memcpyDtoDAsync);
  if (!valid_stream(stream)) return R_INVALID_HANDLE;
  if (!valid_range(dst, n) || !valid_range(src, n)) return R_INVALID_VALUE;
  if (n) memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
  return R_SUCCESS;
}

// ---- Streams and events ------------------------------------------------------------------------

EXPORT int API(cuStreamCreate, hipStreamCreateWithFlags)(void** out, unsigned int flags) {
  FAIL_POINT(streamCreate);
  (void)flags;
  if (!out) return R_INVALID_VALUE;
  fake_stream* s = calloc(1, sizeof(fake_stream));
  if (!s) return R_OUT_OF_MEMORY;
  s->magic = MAGIC_STREAM;
  *out = s;
  return R_SUCCESS;
}

EXPORT int API(cuStreamDestroy_v2, hipStreamDestroy)(void* stream) {
  FAIL_POINT(streamDestroy);
  fake_stream* s = as_stream(stream);
  if (!s) return R_INVALID_HANDLE;
  s->magic = MAGIC_DEAD;
  free(s->last_captured);
  free(s);
  return R_SUCCESS;
}

EXPORT int API(cuStreamSynchronize, hipStreamSynchronize)(void* stream) {
  FAIL_POINT(streamSynchronize);
  if (!valid_stream(stream)) return R_INVALID_HANDLE;
  // Synchronising a capturing stream is illegal on a real driver, and a classic capture bug.
  if (stream_capturing(as_stream(stream))) return R_ILLEGAL_STATE;
  return R_SUCCESS;
}

EXPORT int API(cuEventCreate, hipEventCreateWithFlags)(void** out, unsigned int flags) {
  FAIL_POINT(eventCreate);
  (void)flags;
  if (!out) return R_INVALID_VALUE;
  fake_event* e = calloc(1, sizeof(fake_event));
  if (!e) return R_OUT_OF_MEMORY;
  e->magic = MAGIC_EVENT;
  *out = e;
  return R_SUCCESS;
}

EXPORT int API(cuEventRecord, hipEventRecord)(void* event, void* stream) {
  FAIL_POINT(eventRecord);
  fake_event* e = event;
  if (!e || e->magic != MAGIC_EVENT || !valid_stream(stream)) return R_INVALID_HANDLE;
  e->recorded = 1;
  e->ns = fake_now_ns();
  return R_SUCCESS;
}

EXPORT int API(cuEventSynchronize, hipEventSynchronize)(void* event) {
  FAIL_POINT(eventSynchronize);
  fake_event* e = event;
  return e && e->magic == MAGIC_EVENT ? R_SUCCESS : R_INVALID_HANDLE;
}

EXPORT int API(cuEventQuery, hipEventQuery)(void* event) {
  FAIL_POINT(eventQuery);
  fake_event* e = event;
  return e && e->magic == MAGIC_EVENT ? R_SUCCESS : R_INVALID_HANDLE;
}

EXPORT int API(cuEventElapsedTime, hipEventElapsedTime)(float* ms, void* start, void* end) {
  FAIL_POINT(eventElapsedTime);
  fake_event* a = start;
  fake_event* b = end;
  if (!ms) return R_INVALID_VALUE;
  if (!a || !b || a->magic != MAGIC_EVENT || b->magic != MAGIC_EVENT) return R_INVALID_HANDLE;
  if (!a->recorded || !b->recorded) return R_INVALID_HANDLE; // as the CUDA docs specify
  *ms = (float)(((double)b->ns - (double)a->ns) / 1e6);
  return R_SUCCESS;
}

EXPORT int API(cuEventDestroy_v2, hipEventDestroy)(void* event) {
  FAIL_POINT(eventDestroy);
  fake_event* e = event;
  if (!e || e->magic != MAGIC_EVENT) return R_INVALID_HANDLE;
  e->magic = MAGIC_DEAD;
  free(e);
  return R_SUCCESS;
}

// ---- Modules and kernels -----------------------------------------------------------------------

#define JIT_ERROR_LOG_BUFFER 5
#define JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6
static const char JIT_ERROR[] = "fake jit: ptxas syntax error at line 3";

EXPORT int API(cuModuleLoadDataEx, hipModuleLoadDataEx)(void** out, const void* image,
                                                        unsigned int num_options,
                                                        const int* options, void** values) {
  FAIL_POINT(moduleLoadDataEx);
  if (!out || !image) return R_INVALID_VALUE;
  if (num_options && (!options || !values)) return R_INVALID_VALUE;

  char* log = NULL;
  int size_slot = -1;
  size_t log_size = 0;
  for (unsigned int i = 0; i < num_options; i++) {
    if (options[i] == JIT_ERROR_LOG_BUFFER) log = values[i];
    if (options[i] == JIT_ERROR_LOG_BUFFER_SIZE_BYTES) {
      size_slot = (int)i;
      log_size = (size_t)(uintptr_t)values[i];
    }
  }

  if (strstr(image, "FAKE_BAD_PTX")) {
    size_t written = 0;
    if (log && log_size > 0) {
      written = strlen(JIT_ERROR);
      if (written > log_size - 1) written = log_size - 1;
      memcpy(log, JIT_ERROR, written);
      log[written] = '\0';
    }
    // Like the real driver, report back how much of the buffer holds log text.
    if (size_slot >= 0) values[size_slot] = (void*)(uintptr_t)written;
    return R_INVALID_PTX;
  }
  if (size_slot >= 0) values[size_slot] = (void*)(uintptr_t)0;

  fake_module* m = calloc(1, sizeof(fake_module));
  if (!m) return R_OUT_OF_MEMORY;
  m->magic = MAGIC_MODULE;
  *out = m;
  return R_SUCCESS;
}

EXPORT int API(cuModuleUnload, hipModuleUnload)(void* module) {
  FAIL_POINT(moduleUnload);
  fake_module* m = module;
  if (!m || m->magic != MAGIC_MODULE) return R_INVALID_HANDLE;
  for (fake_function* f = m->functions; f;) {
    fake_function* next = f->next;
    f->magic = MAGIC_DEAD;
    free(f);
    f = next;
  }
  m->magic = MAGIC_DEAD;
  free(m);
  return R_SUCCESS;
}

EXPORT int API(cuModuleGetFunction, hipModuleGetFunction)(void** out, void* module,
                                                          const char* name) {
  FAIL_POINT(moduleGetFunction);
  fake_module* m = module;
  if (!out || !name) return R_INVALID_VALUE;
  if (!m || m->magic != MAGIC_MODULE) return R_INVALID_HANDLE;
  if (strcmp(name, "missing_kernel") == 0) return R_NOT_FOUND;
  fake_function* f = calloc(1, sizeof(fake_function));
  if (!f) return R_OUT_OF_MEMORY;
  f->magic = MAGIC_FUNCTION;
  f->max_dynamic_smem = DEFAULT_DYNAMIC_SMEM;
  strncpy(f->name, name, NAME_BYTES - 1);
  f->next = m->functions;
  m->functions = f;
  *out = f;
  return R_SUCCESS;
}

#define FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8

EXPORT int API(cuFuncSetAttribute, hipFuncSetAttribute)(void* func, int attribute, int value) {
  FAIL_POINT(funcSetAttribute);
  fake_function* f = func;
  if (!f || f->magic != MAGIC_FUNCTION) return R_INVALID_HANDLE;
  if (attribute == FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
    if (value < 0 || value > MAX_DYNAMIC_SMEM) return R_INVALID_VALUE;
    f->max_dynamic_smem = (uint32_t)value;
  }
  return R_SUCCESS;
}

EXPORT int API(cuOccupancyMaxActiveBlocksPerMultiprocessor,
               hipModuleOccupancyMaxActiveBlocksPerMultiprocessor)(int* blocks, void* func,
                                                                  int threads, size_t shared) {
  FAIL_POINT(occupancyMaxActiveBlocksPerMultiprocessor);
  fake_function* f = func;
  if (!blocks) return R_INVALID_VALUE;
  if (!f || f->magic != MAGIC_FUNCTION) return R_INVALID_HANDLE;
  if (threads <= 0 || threads > 1024) return R_INVALID_VALUE;
  int n = DEFAULT_BLOCKS_PER_SM;
  for (int i = 0; i < g_occupancy_count; i++) {
    if (strcmp(g_occupancies[i].name, f->name) == 0) n = g_occupancies[i].blocks;
  }
  *blocks = shared > f->max_dynamic_smem ? 0 : n;
  return R_SUCCESS;
}

// Gathers the launch's argument bytes into `r`, from exactly one of kernelParams and extra.
static int gather_args(launch_record* r, void** params, void** extra) {
  if ((params == NULL) == (extra == NULL)) return R_INVALID_VALUE;
  if (extra) {
    const void* buffer = NULL;
    const size_t* size = NULL;
    for (int i = 0; i < MAX_EXTRA_SLOTS; i++) {
      uintptr_t key = (uintptr_t)extra[i];
      if (key == FAKE_LAUNCH_END) {
        if (!buffer || !size || *size > MAX_ARG_BYTES) return R_INVALID_VALUE;
        memcpy(r->args, buffer, *size);
        r->arg_bytes = (uint32_t)*size;
        return R_SUCCESS;
      }
      if (i + 1 >= MAX_EXTRA_SLOTS) break;
      if (key == 1) buffer = extra[++i];                   // *_LAUNCH_PARAM_BUFFER_POINTER
      else if (key == 2) size = (const size_t*)extra[++i]; // *_LAUNCH_PARAM_BUFFER_SIZE
      else return R_INVALID_VALUE; // includes the other driver's END marker
    }
    return R_INVALID_VALUE; // no END marker within MAX_EXTRA_SLOTS
  }
  // kernelParams holds one pointer per parameter; the fake cannot see the kernel's signature,
  // so the test supplies the sizes and the natural (size-aligned) packing is rebuilt here.
  uint32_t offset = 0;
  for (uint32_t i = 0; i < g_param_count; i++) {
    uint32_t sz = g_param_sizes[i];
    offset = (offset + sz - 1) & ~(sz - 1);
    if (offset + sz > MAX_ARG_BYTES || !params[i]) return R_INVALID_VALUE;
    memcpy(r->args + offset, params[i], sz);
    offset += sz;
  }
  r->arg_bytes = offset;
  return R_SUCCESS;
}

// Validates and records one launch; `flags` says how it was made (FLAG_*).
static int launch(void* func, const uint32_t grid[3], const uint32_t block[3],
                  unsigned int shared_mem, void* stream, void** params, void** extra,
                  uint32_t flags) {
  fake_function* f = func;
  if (!f || f->magic != MAGIC_FUNCTION || !valid_stream(stream)) return R_INVALID_HANDLE;
  if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2]) {
    return R_INVALID_VALUE;
  }
  if ((uint64_t)block[0] * block[1] * block[2] > 1024) return R_INVALID_VALUE;
  if (shared_mem > f->max_dynamic_smem) return R_INVALID_VALUE;

  fake_stream* s = stream;
  int capturing = stream_capturing(s);
  if (capturing && !s->last_captured) {
    s->last_captured = malloc(sizeof(launch_record));
    if (!s->last_captured) return R_OUT_OF_MEMORY;
  }
  launch_record* r = g_scratch;
  int rc = gather_args(r, params, extra);
  if (rc != R_SUCCESS) return rc;
  memcpy(r->grid, grid, sizeof(r->grid));
  memcpy(r->block, block, sizeof(r->block));
  r->shared_mem = shared_mem;
  r->stream = (uint64_t)(uintptr_t)stream;
  memcpy(r->name, f->name, NAME_BYTES);
  r->flags = flags;

  if (capturing) {
    g_scratch = g_last_captured;
    g_last_captured = r;
    memcpy(s->last_captured, r, offsetof(launch_record, args) + r->arg_bytes);
    s->captured++;
    g_has_last_captured = 1;
  } else {
    g_scratch = g_last;
    g_last = r;
    g_has_last = 1;
    g_launches++;
  }
  return R_SUCCESS;
}

EXPORT int API(cuLaunchKernel, hipModuleLaunchKernel)(void* func, unsigned int gx, unsigned int gy,
                                                      unsigned int gz, unsigned int bx,
                                                      unsigned int by, unsigned int bz,
                                                      unsigned int shared_mem, void* stream,
                                                      void** params, void** extra) {
  FAIL_POINT(launchKernel);
  const uint32_t grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
  return launch(func, grid, block, shared_mem, stream, params, extra, 0);
}

#if defined(FAKE_LAUNCH_EX) && !defined(FAKE_HIP)

// CUlaunchAttribute and CUlaunchConfig as cuda.h (CUDA 11.8 and later) lays them out; the
// asserts pin the offsets read from the real header, so the fake checks Denali's bytes against
// the driver's layout rather than against itself.
typedef struct {
  uint32_t id; // CUlaunchAttributeID
  uint32_t pad;
  union {
    int32_t programmatic_stream_serialization_allowed;
    uint8_t bytes[64];
  } value;
} fake_launch_attribute;

typedef struct {
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t shared_mem;
  void* stream;
  const fake_launch_attribute* attrs;
  uint32_t num_attrs;
} fake_launch_config;

_Static_assert(sizeof(fake_launch_attribute) == 72, "CUlaunchAttribute is 72 bytes");
_Static_assert(offsetof(fake_launch_attribute, value) == 8, "its value starts at 8");
_Static_assert(sizeof(fake_launch_config) == 56, "CUlaunchConfig is 56 bytes");
_Static_assert(offsetof(fake_launch_config, stream) == 32, "hStream at 32");
_Static_assert(offsetof(fake_launch_config, attrs) == 40, "attrs at 40");
_Static_assert(offsetof(fake_launch_config, num_attrs) == 48, "numAttrs at 48");

#define ATTRIBUTE_IGNORE 0
#define ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION 6
#define MAX_ATTRIBUTES 16

// Accepts the attributes Denali sends (and IGNORE entries); anything else, or a value other
// than 0 or 1, is reported as invalid, so a misplaced field shows up as an error.
EXPORT int cuLaunchKernelEx(const fake_launch_config* config, void* func, void** params,
                            void** extra) {
  FAIL_POINT(launchKernelEx);
  if (!config) return R_INVALID_VALUE;
  if (config->num_attrs > MAX_ATTRIBUTES || (config->num_attrs && !config->attrs)) {
    return R_INVALID_VALUE;
  }
  uint32_t flags = FLAG_LAUNCH_EX;
  for (uint32_t i = 0; i < config->num_attrs; i++) {
    const fake_launch_attribute* a = &config->attrs[i];
    if (a->id == ATTRIBUTE_IGNORE) continue;
    if (a->id != ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION) return R_INVALID_VALUE;
    int32_t allowed = a->value.programmatic_stream_serialization_allowed;
    if (allowed != 0 && allowed != 1) return R_INVALID_VALUE;
    flags = allowed ? flags | FLAG_PROGRAMMATIC : flags & ~FLAG_PROGRAMMATIC;
  }
  return launch(func, config->grid, config->block, config->shared_mem, config->stream, params,
                extra, flags);
}

#endif

// ---- Stream capture and graphs -----------------------------------------------------------------

EXPORT int API(cuStreamBeginCapture_v2, hipStreamBeginCapture)(void* stream, int mode) {
  FAIL_POINT(streamBeginCapture);
  (void)mode;
  fake_stream* s = as_stream(stream);
  if (!s) return stream ? R_INVALID_HANDLE : R_INVALID_VALUE; // the legacy stream can't capture
  if (stream_capturing(s)) return R_ILLEGAL_STATE;
  s->capturing = 1;
  s->capture_epoch = g_epoch;
  s->captured = 0;
  return R_SUCCESS;
}

EXPORT int API(cuStreamEndCapture, hipStreamEndCapture)(void* stream, void** graph) {
  FAIL_POINT(streamEndCapture);
  fake_stream* s = as_stream(stream);
  if (!graph) return R_INVALID_VALUE;
  if (!s) return R_INVALID_HANDLE;
  if (!stream_capturing(s)) return R_ILLEGAL_STATE;
  fake_graph* g = calloc(1, sizeof(fake_graph));
  if (!g) return R_OUT_OF_MEMORY;
  g->magic = MAGIC_GRAPH;
  g->nodes = s->captured;
  if (s->captured) {
    g->has_last = 1;
    size_t bytes = offsetof(launch_record, args) + s->last_captured->arg_bytes;
    memcpy(&g->last, s->last_captured, bytes);
  }
  s->capturing = 0;
  s->captured = 0;
  *graph = g;
  return R_SUCCESS;
}

EXPORT int API(cuGraphInstantiateWithFlags, hipGraphInstantiateWithFlags)(void** out, void* graph,
                                                                          uint64_t flags) {
  FAIL_POINT(graphInstantiateWithFlags);
  (void)flags;
  fake_graph* g = graph;
  if (!out) return R_INVALID_VALUE;
  if (!g || g->magic != MAGIC_GRAPH) return R_INVALID_HANDLE;
  fake_exec* e = calloc(1, sizeof(fake_exec));
  if (!e) return R_OUT_OF_MEMORY;
  e->magic = MAGIC_EXEC;
  e->nodes = g->nodes;
  *out = e;
  return R_SUCCESS;
}

#ifndef FAKE_OMIT_GRAPH_LAUNCH
EXPORT int API(cuGraphLaunch, hipGraphLaunch)(void* exec, void* stream) {
  FAIL_POINT(graphLaunch);
  fake_exec* e = exec;
  if (!e || e->magic != MAGIC_EXEC || !valid_stream(stream)) return R_INVALID_HANDLE;
  if (stream_capturing(as_stream(stream))) return R_INVALID_VALUE;
  g_nodes_replayed += e->nodes;
  return R_SUCCESS;
}
#endif

EXPORT int API(cuGraphExecDestroy, hipGraphExecDestroy)(void* exec) {
  FAIL_POINT(graphExecDestroy);
  fake_exec* e = exec;
  if (!e || e->magic != MAGIC_EXEC) return R_INVALID_HANDLE;
  e->magic = MAGIC_DEAD;
  free(e);
  return R_SUCCESS;
}

EXPORT int API(cuGraphDestroy, hipGraphDestroy)(void* graph) {
  FAIL_POINT(graphDestroy);
  fake_graph* g = graph;
  if (!g || g->magic != MAGIC_GRAPH) return R_INVALID_HANDLE;
  g->magic = MAGIC_DEAD;
  free(g);
  return R_SUCCESS;
}

// ---- Control and query -------------------------------------------------------------------------

// n == 0 models a machine whose driver loads but sees no GPU.
EXPORT void fake_set_device_count(int n) { g_device_count = n < 0 ? 0 : n; }

// What the compute capability attributes report from now on (default 9.0).
EXPORT void fake_set_compute_capability(int major, int minor) {
  g_cc_major = major;
  g_cc_minor = minor;
}

// What cuDriverGetVersion / hipDriverGetVersion report from now on (default CUDA 12.4, ROCm 6.2).
EXPORT void fake_set_driver_version(int version) { g_driver_version = version; }

// Sizes of the parameters a kernelParams launch passes, in order; each must be 1, 2, 4, 8 or 16.
// Returns 0, or -1 (nothing changed) for a bad size or more than 256 parameters.
EXPORT int fake_set_param_sizes(const uint32_t* sizes, uint32_t count) {
  if (count > MAX_PARAMS || (count && !sizes)) return -1;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t s = sizes[i];
    if (s != 1 && s != 2 && s != 4 && s != 8 && s != 16) return -1;
  }
  if (count) memcpy(g_param_sizes, sizes, count * sizeof(uint32_t));
  g_param_count = count;
  return 0;
}

// Queues one failure: the next call of the exported symbol (e.g. "cuMemAlloc_v2"), or of the
// driver_ffi.ts role (e.g. "memAlloc"), returns `code` without doing anything. Several queued
// failures for one name fail that many successive calls. Returns 0, or -1 if the queue is full
// or the name is too long.
EXPORT int fake_fail_next(const char* role_or_symbol_name, int code) {
  if (!role_or_symbol_name || strlen(role_or_symbol_name) >= NAME_BYTES) return -1;
  if (g_failure_count == MAX_FAILURES) return -1;
  strcpy(g_failures[g_failure_count].name, role_or_symbol_name);
  g_failures[g_failure_count].code = code;
  g_failure_count++;
  return 0;
}

// Moves the fake clock (seen by event records) forward, so elapsed times are predictable.
EXPORT void fake_advance_clock_ns(uint64_t ns) { g_clock_offset_ns += ns; }

// With the clock frozen only fake_advance_clock_ns moves it, so elapsed times are exact.
EXPORT void fake_freeze_clock(int frozen) {
  if (frozen && !g_clock_frozen) g_frozen_ns = monotonic_ns();
  g_clock_frozen = frozen != 0;
}

EXPORT uint64_t fake_launch_count(void) { return g_launches; }

EXPORT uint64_t fake_graph_nodes_replayed(void) { return g_nodes_replayed; }

EXPORT uint64_t fake_bytes_allocated(void) { return g_bytes_allocated; }

// Returns the fake to its freshly loaded behaviour between tests. Live allocations and handles
// survive (tests free what they allocate), but any capture in progress is abandoned.
// Sets what the occupancy query answers for kernels named `name` (until fake_reset); -1 when the
// table is full or the arguments are bad.
EXPORT int fake_set_blocks_per_sm(const char* name, int blocks) {
  if (!name || blocks < 0 || strlen(name) >= NAME_BYTES) return -1;
  int i = 0;
  while (i < g_occupancy_count && strcmp(g_occupancies[i].name, name) != 0) i++;
  if (i == MAX_OCCUPANCIES) return -1;
  if (i == g_occupancy_count) g_occupancy_count++;
  strcpy(g_occupancies[i].name, name);
  g_occupancies[i].blocks = blocks;
  return 0;
}

EXPORT void fake_reset(void) {
  g_device_count = 1;
  g_cc_major = 9;
  g_cc_minor = 0;
  g_driver_version = DEFAULT_DRIVER_VERSION;
  g_launches = 0;
  g_nodes_replayed = 0;
  g_epoch++;
  g_clock_offset_ns = 0;
  g_clock_frozen = 0;
  g_param_count = 0;
  g_has_last = 0;
  g_has_last_captured = 0;
  g_failure_count = 0;
  g_occupancy_count = 0;
}

EXPORT int fake_last_launch(uint8_t* out, uint32_t cap) {
  return serialise(g_last, g_has_last, out, cap);
}

EXPORT int fake_last_captured_launch(uint8_t* out, uint32_t cap) {
  return serialise(g_last_captured, g_has_last_captured, out, cap);
}
