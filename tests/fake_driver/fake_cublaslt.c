// A fake cuBLASLt (or, with -DFAKE_HIP, hipBLASLt), so machines without a GPU can run Denali's
// Lt GEMM engine (backends/cublaslt.ts) end to end.
//
//   gcc -O2 -shared -fPIC -o libfake_cublaslt.so fake_cublaslt.c
//   gcc -O2 -shared -fPIC -DFAKE_HIP -o libfake_hipblaslt.so fake_cublaslt.c
//
// The enum values, struct layouts and status codes below are transcribed from NVIDIA's
// cublasLt.h / cublas_api.h / library_types.h and AMD's hipblaslt.h / hipblas-common.h, and the
// entry points reject anything else with INVALID_VALUE or NOT_SUPPORTED, so a wrong enum value or
// an inconsistent shape on Denali's side fails here the way the real library would.
//
// "Device" pointers are host addresses (CpuBackend buffers), and cublasLtMatmul really computes
// D = alpha * op(A) * op(B) + beta * C on bf16 column-major matrices with fp32 accumulation, from
// the layouts alone, so the row-major to column-major mapping is checked numerically.
//
// The cuBLASLt build also multiplies FP8: A and B of CUDA_R_8F_E4M3 with C and D bf16, TN only
// (as cuBLASLt on Hopper), each side scaled by CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER as its
// CUBLASLT_MATMUL_DESC_{A,B}_SCALE_MODE says: SCALAR_32F (one f32; none means 1) or
// OUTER_VEC_32F (one f32 per row of op(A) and per column of op(B), i.e. per row and column of D),
// so D = alpha * scaleA * scaleB * (op(A) * op(B)) + beta * C. The hipBLASLt build refuses those
// attributes and types, as it refuses anything else it does not know.
//
// Control and query entry points (the same in both builds):
//
//   int      fake_lt_fail_next(const char* symbol, int skip, int status);
//                                                let `skip` calls of `symbol` through, then fail
//                                                the next one with `status` (queues up)
//   void     fake_lt_set_no_algorithm(int on);   the heuristic returns no algorithm
//   void     fake_lt_set_candidates(int n, int f); the heuristic offers n algorithms; matmul
//                                                 refuses candidate f (-1: none)
//   int      fake_lt_last_candidate(void);       the candidate the last matmul ran
//   void     fake_lt_set_no_outer_vec(int on);   setting a scale mode is INVALID_VALUE, as in a
//                                                cuBLASLt older than 12.8
//   void     fake_lt_reset(void);                clear counters, failures and flags
//   uint64_t fake_lt_live_objects(void);         handles + descriptors + layouts + preferences
//   uint64_t fake_lt_heuristic_calls(void);
//   uint64_t fake_lt_matmul_calls(void);
//   uint64_t fake_lt_last_stream(void);          stream handle of the last matmul
//   uint64_t fake_lt_last_workspace(void);       workspace pointer of the last matmul
//   uint64_t fake_lt_last_workspace_bytes(void); workspace size of the last matmul
//   uint64_t fake_lt_pref_workspace_bytes(void); MAX_WORKSPACE_BYTES at the last heuristic call
//   uint32_t fake_lt_pref_alignment(int which);  MIN_ALIGNMENT_{A,B,C,D}_BYTES (0..3) at the last
//                                                heuristic call (cuBLASLt build; 0 if never set)
//
// Not thread safe: Deno calls FFI symbols from the JS thread, one at a time.

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

#ifdef FAKE_HIP
#define LT(cu, hip) hip
enum {
  ST_SUCCESS = 0,
  ST_NOT_INITIALIZED = 1,
  ST_INVALID_VALUE = 3,
  ST_NOT_SUPPORTED = 7,
};
enum { OP_N = 111, OP_T = 112 };         // hipblasOperation_t
enum { COMPUTE_32F = 2 };                // hipblasComputeType_t
enum { DT_32F = 0, DT_16BF = 14 };       // hipDataType
enum { DESC_TRANSA = 0, DESC_TRANSB = 1 }; // hipblasLtMatmulDescAttributes_t
enum { PREF_MAX_WORKSPACE_BYTES = 1 };   // hipblasLtMatmulPreferenceAttributes_t
typedef struct {
  uint8_t data[16];
  size_t max_workspace_bytes;
} lt_algo;
#else
#define LT(cu, hip) cu
enum {
  ST_SUCCESS = 0,
  ST_NOT_INITIALIZED = 1,
  ST_INVALID_VALUE = 7,
  ST_NOT_SUPPORTED = 15,
};
enum { OP_N = 0, OP_T = 1 };             // cublasOperation_t
enum { COMPUTE_32F = 68 };               // cublasComputeType_t
enum { DT_32F = 0, DT_16BF = 14, DT_8F_E4M3 = 28 }; // cudaDataType_t
enum {                                   // cublasLtMatmulDescAttributes_t
  DESC_TRANSA = 3,
  DESC_TRANSB = 4,
  DESC_A_SCALE_POINTER = 17,
  DESC_B_SCALE_POINTER = 18,
  DESC_A_SCALE_MODE = 31,
  DESC_B_SCALE_MODE = 32,
};
enum {                                   // cublasLtMatmulPreferenceAttributes_t
  PREF_MAX_WORKSPACE_BYTES = 1,
  PREF_MIN_ALIGNMENT_A_BYTES = 5, // ... B = 6, C = 7, D = 8
};
typedef struct {
  uint64_t data[8];
} lt_algo;
#endif

// cublasLtMatmulMatrixScale_t; the hipBLASLt build never leaves SCALAR_32F (it has no way to set
// a mode).
enum { SCALE_SCALAR_32F = 0, SCALE_OUTER_VEC_32F = 3 };

typedef struct {
  lt_algo algo;
  size_t workspaceSize;
  int state;
  float wavesCount;
  int reserved[4];
} lt_heuristic_result;

#ifdef FAKE_HIP
_Static_assert(sizeof(lt_heuristic_result) == 56, "hipblasLtMatmulHeuristicResult_t is 56 bytes");
#else
_Static_assert(sizeof(lt_heuristic_result) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes");
#endif

enum {
  MAGIC_HANDLE = 0x484e444c,
  MAGIC_DESC = 0x44455343,
  MAGIC_LAYOUT = 0x4c41594f,
  MAGIC_PREF = 0x50524546,
  MAGIC_ALGO = 0x414c474f,
  MAGIC_DEAD = 0x44454144,
};

typedef struct {
  uint32_t magic;
} fake_handle;

typedef struct {
  uint32_t magic;
  int compute;
  int scale;
  int32_t transa;
  int32_t transb;
  int32_t scale_mode[2];  // A, B: SCALAR_32F (0) unless set
  uint64_t scale_ptr[2];  // A, B: device addresses of the scales, 0 unless set
} fake_desc;

typedef struct {
  uint32_t magic;
  int type;
  uint64_t rows;
  uint64_t cols;
  int64_t ld;
} fake_layout;

typedef struct {
  uint32_t magic;
  uint64_t max_workspace;
  uint32_t alignment[4];
} fake_pref;

// What the fake packs into an algorithm, so matmul can tell it was planned for these operands.
typedef struct {
  uint32_t magic;
  uint32_t workspace;
  uint32_t m, n, k; // Denali's dimensions stay below 2^24
  uint32_t index;    // which of the heuristic's candidates
} fake_algo_data;

_Static_assert(sizeof(fake_algo_data) <= sizeof(lt_algo), "the fake's algo data must fit");

// ---- State -------------------------------------------------------------------------------------

typedef struct {
  char name[64];
  int skip;
  int status;
} failure;

static failure g_failures[16];
static int g_failure_count;
static int g_no_algorithm;
static int g_no_outer_vec;
static int g_candidates = 1;
static int g_failing_candidate = -1;
static int g_last_candidate = -1;
static uint64_t g_live;
static uint64_t g_heuristic_calls;
static uint64_t g_matmul_calls;
static uint64_t g_last_stream;
static uint64_t g_last_workspace;
static uint64_t g_last_workspace_bytes;
static uint64_t g_pref_workspace_bytes;
static uint32_t g_pref_alignment[4];

static int take_failure(const char* symbol, int* status) {
  for (int i = 0; i < g_failure_count; i++) {
    if (strcmp(g_failures[i].name, symbol) == 0) {
      if (g_failures[i].skip > 0) {
        g_failures[i].skip--;
        return 0;
      }
      *status = g_failures[i].status;
      memmove(&g_failures[i], &g_failures[i + 1],
              (size_t)(g_failure_count - i - 1) * sizeof(failure));
      g_failure_count--;
      return 1;
    }
  }
  return 0;
}

#define FAIL_POINT()                                                                               \
  do {                                                                                             \
    int st_;                                                                                       \
    if (g_failure_count && take_failure(__func__, &st_)) return st_;                               \
  } while (0)

static void* make(size_t size, uint32_t magic) {
  uint32_t* p = calloc(1, size);
  if (!p) abort(); // a fake that cannot allocate a few bytes has nothing useful left to report
  *p = magic;
  g_live++;
  return p;
}

static int destroy(void* p, uint32_t magic) {
  if (!p || *(uint32_t*)p != magic) return ST_INVALID_VALUE;
  *(uint32_t*)p = MAGIC_DEAD;
  free(p);
  g_live--;
  return ST_SUCCESS;
}

static int is(const void* p, uint32_t magic) { return p && *(const uint32_t*)p == magic; }

#ifndef FAKE_HIP
// E4M3 (float8_e4m3fn): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities;
// exponent 15 with mantissa 7 is NaN; exponent 0 is subnormal, mantissa * 2^-9.
static float e4m3_to_f32(uint8_t code) {
  uint32_t sign = (uint32_t)(code & 0x80) << 24;
  uint32_t exponent = (code >> 3) & 0xf, mantissa = code & 7;
  float f;
  if (exponent == 0xf && mantissa == 7) {
    uint32_t u = sign | 0x7fc00000u;
    memcpy(&f, &u, 4);
    return f;
  }
  if (exponent == 0) {
    f = (float)mantissa * (1.0f / 512.0f); // exact
    return sign ? -f : f;
  }
  uint32_t u = sign | ((exponent - 7 + 127) << 23) | (mantissa << 20);
  memcpy(&f, &u, 4);
  return f;
}
#endif

static float bf16_to_f32(uint16_t bits) {
  uint32_t u = (uint32_t)bits << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- Handle ------------------------------------------------------------------------------------

EXPORT int LT(cublasLtCreate, hipblasLtCreate)(void** handle) {
  FAIL_POINT();
  if (!handle) return ST_INVALID_VALUE;
  *handle = make(sizeof(fake_handle), MAGIC_HANDLE);
  return ST_SUCCESS;
}

EXPORT int LT(cublasLtDestroy, hipblasLtDestroy)(void* handle) {
  FAIL_POINT();
  return destroy(handle, MAGIC_HANDLE);
}

#ifdef FAKE_HIP
EXPORT int hipblasLtGetVersion(void* handle, int* version) {
  FAIL_POINT();
  if (!is(handle, MAGIC_HANDLE)) return ST_NOT_INITIALIZED;
  *version = 1 * 100000 + 2 * 100 + 0; // hipBLASLt 1.2.0
  return ST_SUCCESS;
}
#else
EXPORT size_t cublasLtGetVersion(void) { return 13 * 10000 + 0 * 100 + 2; } // cuBLASLt 13.0.2

static const struct {
  int status;
  const char* name;
  const char* text;
} STATUS[] = {
    {0, "CUBLAS_STATUS_SUCCESS", "fake: success"},
    {1, "CUBLAS_STATUS_NOT_INITIALIZED", "fake: the library was not initialized"},
    {3, "CUBLAS_STATUS_ALLOC_FAILED", "fake: resource allocation failed"},
    {7, "CUBLAS_STATUS_INVALID_VALUE", "fake: an unsupported value or parameter was passed"},
    {13, "CUBLAS_STATUS_EXECUTION_FAILED", "fake: the GPU program failed to execute"},
    {15, "CUBLAS_STATUS_NOT_SUPPORTED", "fake: the functionality requested is not supported"},
};

EXPORT const char* cublasLtGetStatusName(int status) {
  for (size_t i = 0; i < sizeof(STATUS) / sizeof(STATUS[0]); i++) {
    if (STATUS[i].status == status) return STATUS[i].name;
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

EXPORT const char* cublasLtGetStatusString(int status) {
  for (size_t i = 0; i < sizeof(STATUS) / sizeof(STATUS[0]); i++) {
    if (STATUS[i].status == status) return STATUS[i].text;
  }
  return "fake: unknown status";
}
#endif

// ---- Matmul descriptor -------------------------------------------------------------------------

EXPORT int LT(cublasLtMatmulDescCreate, hipblasLtMatmulDescCreate)(void** desc, int compute,
                                                                   int scale) {
  FAIL_POINT();
  if (!desc) return ST_INVALID_VALUE;
  fake_desc* d = make(sizeof(fake_desc), MAGIC_DESC);
  d->compute = compute;
  d->scale = scale;
  d->transa = OP_N;
  d->transb = OP_N;
  *desc = d;
  return ST_SUCCESS;
}

EXPORT int LT(cublasLtMatmulDescDestroy, hipblasLtMatmulDescDestroy)(void* desc) {
  FAIL_POINT();
  return destroy(desc, MAGIC_DESC);
}

EXPORT int LT(cublasLtMatmulDescSetAttribute, hipblasLtMatmulDescSetAttribute)(
    void* desc, int attr, const void* buf, size_t size) {
  FAIL_POINT();
  if (!is(desc, MAGIC_DESC) || !buf) return ST_INVALID_VALUE;
  fake_desc* d = desc;
#ifndef FAKE_HIP
  if (attr == DESC_A_SCALE_POINTER || attr == DESC_B_SCALE_POINTER) {
    if (size != sizeof(uint64_t)) return ST_INVALID_VALUE;
    memcpy(&d->scale_ptr[attr - DESC_A_SCALE_POINTER], buf, sizeof(uint64_t));
    return ST_SUCCESS;
  }
  if (attr == DESC_A_SCALE_MODE || attr == DESC_B_SCALE_MODE) {
    if (g_no_outer_vec) return ST_INVALID_VALUE; // an attribute this release does not know
    if (size != sizeof(int32_t)) return ST_INVALID_VALUE;
    int32_t mode;
    memcpy(&mode, buf, sizeof mode);
    if (mode != SCALE_SCALAR_32F && mode != SCALE_OUTER_VEC_32F) return ST_INVALID_VALUE;
    d->scale_mode[attr - DESC_A_SCALE_MODE] = mode;
    return ST_SUCCESS;
  }
#endif
  if (attr != DESC_TRANSA && attr != DESC_TRANSB) return ST_INVALID_VALUE; // none other is used
  if (size != sizeof(int32_t)) return ST_INVALID_VALUE;
  int32_t op;
  memcpy(&op, buf, sizeof op);
  if (op != OP_N && op != OP_T) return ST_INVALID_VALUE;
  if (attr == DESC_TRANSA) d->transa = op;
  else d->transb = op;
  return ST_SUCCESS;
}

// ---- Matrix layouts ----------------------------------------------------------------------------

EXPORT int LT(cublasLtMatrixLayoutCreate, hipblasLtMatrixLayoutCreate)(void** layout, int type,
                                                                       uint64_t rows,
                                                                       uint64_t cols, int64_t ld) {
  FAIL_POINT();
  if (!layout) return ST_INVALID_VALUE;
  fake_layout* l = make(sizeof(fake_layout), MAGIC_LAYOUT);
  l->type = type;
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
  *layout = l;
  return ST_SUCCESS;
}

EXPORT int LT(cublasLtMatrixLayoutDestroy, hipblasLtMatrixLayoutDestroy)(void* layout) {
  FAIL_POINT();
  return destroy(layout, MAGIC_LAYOUT);
}

// ---- Heuristic preference ----------------------------------------------------------------------

EXPORT int LT(cublasLtMatmulPreferenceCreate, hipblasLtMatmulPreferenceCreate)(void** pref) {
  FAIL_POINT();
  if (!pref) return ST_INVALID_VALUE;
  *pref = make(sizeof(fake_pref), MAGIC_PREF);
  return ST_SUCCESS;
}

EXPORT int LT(cublasLtMatmulPreferenceDestroy, hipblasLtMatmulPreferenceDestroy)(void* pref) {
  FAIL_POINT();
  return destroy(pref, MAGIC_PREF);
}

EXPORT int LT(cublasLtMatmulPreferenceSetAttribute, hipblasLtMatmulPreferenceSetAttribute)(
    void* pref, int attr, const void* buf, size_t size) {
  FAIL_POINT();
  if (!is(pref, MAGIC_PREF) || !buf) return ST_INVALID_VALUE;
  fake_pref* p = pref;
  if (attr == PREF_MAX_WORKSPACE_BYTES) {
    if (size != sizeof(uint64_t)) return ST_INVALID_VALUE;
    memcpy(&p->max_workspace, buf, sizeof(uint64_t));
    return ST_SUCCESS;
  }
#ifndef FAKE_HIP
  if (attr >= PREF_MIN_ALIGNMENT_A_BYTES && attr < PREF_MIN_ALIGNMENT_A_BYTES + 4) {
    if (size != sizeof(uint32_t)) return ST_INVALID_VALUE;
    memcpy(&p->alignment[attr - PREF_MIN_ALIGNMENT_A_BYTES], buf, sizeof(uint32_t));
    return ST_SUCCESS;
  }
#endif
  return ST_INVALID_VALUE;
}

// ---- Shape checks shared by the heuristic and the matmul ---------------------------------------

typedef struct {
  uint64_t m, n, k;
} dims;

// The rows and columns of op(X) for a layout and its operation.
static void op_shape(const fake_layout* l, int op, uint64_t* rows, uint64_t* cols) {
  *rows = op == OP_N ? l->rows : l->cols;
  *cols = op == OP_N ? l->cols : l->rows;
}

// Validates descriptor and layouts as cuBLASLt would, and returns the problem's m, n and k.
static int check_problem(const fake_desc* d, const fake_layout* a, const fake_layout* b,
                         const fake_layout* c, const fake_layout* dl, dims* out) {
  if (!is(d, MAGIC_DESC) || !is(a, MAGIC_LAYOUT) || !is(b, MAGIC_LAYOUT) ||
      !is(c, MAGIC_LAYOUT) || !is(dl, MAGIC_LAYOUT)) {
    return ST_INVALID_VALUE;
  }
  if (d->compute != COMPUTE_32F || d->scale != DT_32F) return ST_NOT_SUPPORTED;
  if (c->type != DT_16BF || dl->type != DT_16BF) return ST_NOT_SUPPORTED;
  if (a->type == DT_16BF && b->type == DT_16BF) {
    // Per-row and per-column scales are an FP8 feature.
    if (d->scale_mode[0] != SCALE_SCALAR_32F || d->scale_mode[1] != SCALE_SCALAR_32F) {
      return ST_NOT_SUPPORTED;
    }
#ifndef FAKE_HIP
  } else if (a->type == DT_8F_E4M3 && b->type == DT_8F_E4M3) {
    // FP8 tensor cores on Hopper take only A transposed and B as is ("TN").
    if (d->transa != OP_T || d->transb != OP_N) return ST_NOT_SUPPORTED;
#endif
  } else {
    return ST_NOT_SUPPORTED; // mixed or other input types
  }
  uint64_t am, ak, bk, bn;
  op_shape(a, d->transa, &am, &ak);
  op_shape(b, d->transb, &bk, &bn);
  if (ak != bk || c->rows != am || c->cols != bn || dl->rows != am || dl->cols != bn) {
    return ST_INVALID_VALUE;
  }
  const fake_layout* all[4] = {a, b, c, dl};
  for (int i = 0; i < 4; i++) {
    if (all[i]->rows == 0 || all[i]->cols == 0 || all[i]->ld < (int64_t)all[i]->rows) {
      return ST_INVALID_VALUE;
    }
  }
  out->m = am;
  out->n = bn;
  out->k = ak;
  return ST_SUCCESS;
}

EXPORT int LT(cublasLtMatmulAlgoGetHeuristic, hipblasLtMatmulAlgoGetHeuristic)(
    void* handle, void* desc, void* adesc, void* bdesc, void* cdesc, void* ddesc, void* pref,
    int requested, lt_heuristic_result* results, int* returned) {
  FAIL_POINT();
  g_heuristic_calls++;
  if (!is(handle, MAGIC_HANDLE)) return ST_NOT_INITIALIZED;
  if (!is(pref, MAGIC_PREF) || requested <= 0 || !results || !returned) return ST_INVALID_VALUE;
  dims p;
  int st = check_problem(desc, adesc, bdesc, cdesc, ddesc, &p);
  if (st != ST_SUCCESS) return st;
  const fake_pref* fp = pref;
  g_pref_workspace_bytes = fp->max_workspace;
  memcpy(g_pref_alignment, fp->alignment, sizeof g_pref_alignment);
  if (g_no_algorithm) {
    *returned = 0;
    return ST_SUCCESS;
  }
  // Pretend split-K wants a little workspace when the preference allows it.
  uint32_t workspace = fp->max_workspace >= 4096 ? 4096 : 0;
  const int n = requested < g_candidates ? requested : g_candidates;
  for (int i = 0; i < n; i++) {
    memset(&results[i], 0, sizeof results[i]);
    fake_algo_data data = {MAGIC_ALGO, workspace, (uint32_t)p.m, (uint32_t)p.n, (uint32_t)p.k,
                           (uint32_t)i};
    memcpy(&results[i].algo, &data, sizeof data);
    results[i].workspaceSize = workspace;
    results[i].state = ST_SUCCESS;
    results[i].wavesCount = 1.0f;
  }
  *returned = n;
  return ST_SUCCESS;
}

// ---- The matmul --------------------------------------------------------------------------------

// Element `index` of an A or B operand of `type` (check_problem allowed only bf16 and E4M3).
static float element(const void* base, int type, uint64_t index) {
#ifndef FAKE_HIP
  if (type == DT_8F_E4M3) return e4m3_to_f32(((const uint8_t*)base)[index]);
#else
  (void)type;
#endif
  return bf16_to_f32(((const uint16_t*)base)[index]);
}

EXPORT int LT(cublasLtMatmul, hipblasLtMatmul)(void* handle, void* desc, const void* alpha,
                                               const void* A, void* adesc, const void* B,
                                               void* bdesc, const void* beta, const void* C,
                                               void* cdesc, void* D, void* ddesc,
                                               const lt_algo* algo, void* workspace,
                                               size_t workspace_bytes, void* stream) {
  FAIL_POINT();
  g_matmul_calls++;
  if (!is(handle, MAGIC_HANDLE)) return ST_NOT_INITIALIZED;
  dims p;
  int st = check_problem(desc, adesc, bdesc, cdesc, ddesc, &p);
  if (st != ST_SUCCESS) return st;
  if (!alpha || !beta || !A || !B || !C || !D || !algo) return ST_INVALID_VALUE;
  const fake_desc* d = desc;
  for (int s = 0; s < 2; s++) {
    if (d->scale_mode[s] == SCALE_OUTER_VEC_32F && !d->scale_ptr[s]) return ST_INVALID_VALUE;
  }
  fake_algo_data data;
  memcpy(&data, algo, sizeof data);
  if (data.magic != MAGIC_ALGO || data.m != p.m || data.n != p.n || data.k != p.k) {
    return ST_INVALID_VALUE; // not an algorithm the heuristic gave for this problem
  }
  if (workspace_bytes < data.workspace || (data.workspace && !workspace)) return ST_INVALID_VALUE;
  if ((int)data.index == g_failing_candidate) return ST_NOT_SUPPORTED;
  g_last_candidate = (int)data.index;
  g_last_stream = (uint64_t)(uintptr_t)stream;
  g_last_workspace = (uint64_t)(uintptr_t)workspace;
  g_last_workspace_bytes = workspace_bytes;

  const fake_layout *la = adesc, *lb = bdesc, *lc = cdesc, *ld = ddesc;
  const uint16_t* c = C;
  uint16_t* out = D;
  const float* scale_a = (const float*)(uintptr_t)d->scale_ptr[0];
  const float* scale_b = (const float*)(uintptr_t)d->scale_ptr[1];
  float al, be;
  memcpy(&al, alpha, 4);
  memcpy(&be, beta, 4);
  for (uint64_t j = 0; j < p.n; j++) {
    for (uint64_t i = 0; i < p.m; i++) {
      float acc = 0.0f;
      for (uint64_t l = 0; l < p.k; l++) {
        // Element (row, col) of a column-major matrix sits at row + col * ld.
        uint64_t ai = d->transa == OP_N ? i + l * (uint64_t)la->ld : l + i * (uint64_t)la->ld;
        uint64_t bi = d->transb == OP_N ? l + j * (uint64_t)lb->ld : j + l * (uint64_t)lb->ld;
        acc += element(A, la->type, ai) * element(B, lb->type, bi);
      }
      // Scalar mode: the one f32 at the pointer (1 without one); outer vector: D row i's and
      // D column j's.
      float sa = d->scale_mode[0] == SCALE_OUTER_VEC_32F ? scale_a[i] : scale_a ? *scale_a : 1.0f;
      float sb = d->scale_mode[1] == SCALE_OUTER_VEC_32F ? scale_b[j] : scale_b ? *scale_b : 1.0f;
      float value = al * sa * sb * acc;
      // As in BLAS, beta == 0 means C is not read (it may hold NaN).
      if (be != 0.0f) value += be * bf16_to_f32(c[i + j * (uint64_t)lc->ld]);
      out[i + j * (uint64_t)ld->ld] = f32_to_bf16(value);
    }
  }
  return ST_SUCCESS;
}

// ---- Control -----------------------------------------------------------------------------------

EXPORT int fake_lt_fail_next(const char* symbol, int skip, int status) {
  if (g_failure_count == (int)(sizeof g_failures / sizeof g_failures[0])) return -1;
  if (strlen(symbol) >= sizeof g_failures[0].name || skip < 0 || status == 0) return -1;
  strcpy(g_failures[g_failure_count].name, symbol);
  g_failures[g_failure_count].skip = skip;
  g_failures[g_failure_count].status = status;
  g_failure_count++;
  return 0;
}

EXPORT void fake_lt_set_no_algorithm(int on) { g_no_algorithm = on; }

EXPORT void fake_lt_set_no_outer_vec(int on) { g_no_outer_vec = on; }

EXPORT int fake_lt_last_candidate(void) { return g_last_candidate; }

EXPORT void fake_lt_set_candidates(int count, int failing) {
  g_candidates = count;
  g_failing_candidate = failing;
}

EXPORT void fake_lt_reset(void) {
  g_failure_count = 0;
  g_no_algorithm = 0;
  g_no_outer_vec = 0;
  g_candidates = 1;
  g_failing_candidate = -1;
  g_last_candidate = -1;
  g_heuristic_calls = 0;
  g_matmul_calls = 0;
  g_last_stream = 0;
  g_last_workspace = 0;
  g_last_workspace_bytes = 0;
  g_pref_workspace_bytes = 0;
  memset(g_pref_alignment, 0, sizeof g_pref_alignment);
}

EXPORT uint64_t fake_lt_live_objects(void) { return g_live; }
EXPORT uint64_t fake_lt_heuristic_calls(void) { return g_heuristic_calls; }
EXPORT uint64_t fake_lt_matmul_calls(void) { return g_matmul_calls; }
EXPORT uint64_t fake_lt_last_stream(void) { return g_last_stream; }
EXPORT uint64_t fake_lt_last_workspace(void) { return g_last_workspace; }
EXPORT uint64_t fake_lt_last_workspace_bytes(void) { return g_last_workspace_bytes; }
EXPORT uint64_t fake_lt_pref_workspace_bytes(void) { return g_pref_workspace_bytes; }
EXPORT uint32_t fake_lt_pref_alignment(int which) {
  return which >= 0 && which < 4 ? g_pref_alignment[which] : 0;
}
