// A fake NVRTC (or, with -DFAKE_HIP, hipRTC), so run-time kernel compilation
// (backends/rtc.ts, kernels/compile.ts) is tested on machines without the CUDA toolkit.
//
//   gcc -O2 -shared -fPIC -o libfake_nvrtc.so fake_nvrtc.c
//   gcc -O2 -shared -fPIC -DFAKE_HIP -o libfake_hiprtc.so fake_nvrtc.c
//
// "Compiling" checks what a compiler would and writes a NUL-terminated text image
// ("FAKE_CODE arch=<arch> options=<n>\n" then the source) that the fake driver loads:
// - a line containing `#error TEXT` fails with COMPILATION and the log
//   "<name>(<line>): error: TEXT", as NVRTC words it;
// - a line containing `#warning TEXT` compiles, with "<name>(<line>): warning: TEXT" in the log;
// - exactly one --gpu-architecture=<arch> (NVRTC) / --offload-arch=<arch> (hipRTC) option is
//   required, else INVALID_OPTION.
// Result codes and their strings are NVRTC's (nvrtc.h) and hipRTC's (hiprtc.h).
//
// Control: fake_rtc_compile_count() (compiles since load or reset), fake_rtc_last_arch(buf, n),
// fake_rtc_fail_next_create(code) (the next createProgram returns code), fake_rtc_reset().

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

#ifdef FAKE_HIP
#define RTC(nv, hip) hip
#define ARCH_OPTION "--offload-arch="
#else
#define RTC(nv, hip) nv
#define ARCH_OPTION "--gpu-architecture="
#endif

enum { OK = 0, OUT_OF_MEMORY = 1, INVALID_INPUT = 3, INVALID_PROGRAM = 4, INVALID_OPTION = 5,
       COMPILATION = 6 };

typedef struct {
  uint32_t magic;
  char* source;
  char* name;
  char* log;
  char* code;
  size_t code_size;
} program;

#define MAGIC 0x52544346u
static uint64_t compile_count = 0;
static char last_arch[64];
static int fail_create = 0;

EXPORT uint64_t fake_rtc_compile_count(void) { return compile_count; }
EXPORT void fake_rtc_fail_next_create(int code) { fail_create = code; }
EXPORT void fake_rtc_reset(void) {
  compile_count = 0;
  last_arch[0] = '\0';
  fail_create = 0;
}
EXPORT int fake_rtc_last_arch(char* out, int n) {
  if (n <= 0) return -1;
  snprintf(out, (size_t)n, "%s", last_arch);
  return 0;
}

EXPORT const char* RTC(nvrtcGetErrorString, hiprtcGetErrorString)(int code) {
  switch (code) {
#ifdef FAKE_HIP
    case OK: return "HIPRTC_SUCCESS";
    case OUT_OF_MEMORY: return "HIPRTC_ERROR_OUT_OF_MEMORY";
    case INVALID_INPUT: return "HIPRTC_ERROR_INVALID_INPUT";
    case INVALID_PROGRAM: return "HIPRTC_ERROR_INVALID_PROGRAM";
    case INVALID_OPTION: return "HIPRTC_ERROR_INVALID_OPTION";
    case COMPILATION: return "HIPRTC_ERROR_COMPILATION";
#else
    case OK: return "NVRTC_SUCCESS";
    case OUT_OF_MEMORY: return "NVRTC_ERROR_OUT_OF_MEMORY";
    case INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
    case INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
    case INVALID_OPTION: return "NVRTC_ERROR_INVALID_OPTION";
    case COMPILATION: return "NVRTC_ERROR_COMPILATION";
#endif
    default: return "unrecognized error code";
  }
}

EXPORT int RTC(nvrtcVersion, hiprtcVersion)(int* major, int* minor) {
  if (!major || !minor) return INVALID_INPUT;
  *major = 13;
  *minor = 0;
  return OK;
}

static char* copy(const char* s) {
  size_t n = strlen(s) + 1;
  char* out = malloc(n);
  if (out) memcpy(out, s, n);
  return out;
}

EXPORT int RTC(nvrtcCreateProgram, hiprtcCreateProgram)(void** out, const char* source,
                                                        const char* name, int num_headers,
                                                        const char* const* headers,
                                                        const char* const* include_names) {
  (void)headers;
  (void)include_names;
  if (fail_create) {
    int code = fail_create;
    fail_create = 0;
    return code;
  }
  if (!out || !source || num_headers < 0) return INVALID_INPUT;
  program* p = calloc(1, sizeof(program));
  if (!p) return OUT_OF_MEMORY;
  p->magic = MAGIC;
  p->source = copy(source);
  p->name = copy(name ? name : "default_program");
  p->log = copy("");
  *out = p;
  return OK;
}

static program* valid(void* prog) {
  program* p = prog;
  return p && p->magic == MAGIC ? p : NULL;
}

// Appends "<name>(<line>): <kind>: <text to end of line>\n" to the log.
static void append_log(program* p, int line, const char* kind, const char* text) {
  size_t len = strcspn(text, "\n");
  size_t old = strlen(p->log);
  size_t extra = strlen(p->name) + strlen(kind) + len + 32;
  char* grown = realloc(p->log, old + extra);
  if (!grown) return;
  p->log = grown;
  snprintf(p->log + old, extra, "%s(%d): %s: %.*s\n", p->name, line, kind, (int)len, text);
}

EXPORT int RTC(nvrtcCompileProgram, hiprtcCompileProgram)(void* prog, int num_options,
                                                          const char* const* options) {
  program* p = valid(prog);
  if (!p) return INVALID_PROGRAM;
  if (num_options < 0 || (num_options > 0 && !options)) return INVALID_INPUT;
  const char* arch = NULL;
  for (int i = 0; i < num_options; i++) {
    if (strncmp(options[i], ARCH_OPTION, strlen(ARCH_OPTION)) == 0) {
      if (arch) return INVALID_OPTION;
      arch = options[i] + strlen(ARCH_OPTION);
    } else if (options[i][0] != '-') {
      return INVALID_OPTION;
    }
  }
  if (!arch || !*arch) return INVALID_OPTION;
  snprintf(last_arch, sizeof last_arch, "%s", arch);
  compile_count++;
  int line = 1, failed = 0;
  for (const char* at = p->source; *at; line++) {
    const char* end = strchr(at, '\n');
    size_t len = end ? (size_t)(end - at) : strlen(at);
    char row[1024];
    snprintf(row, sizeof row, "%.*s", (int)(len < sizeof row - 1 ? len : sizeof row - 1), at);
    const char* e = strstr(row, "#error ");
    const char* w = strstr(row, "#warning ");
    if (e) {
      append_log(p, line, "error", e + 7);
      failed = 1;
    }
    if (w) append_log(p, line, "warning", w + 9);
    if (!end) break;
    at = end + 1;
  }
  if (failed) return COMPILATION;
  size_t size = strlen(p->source) + 96;
  free(p->code);
  p->code = malloc(size);
  if (!p->code) return OUT_OF_MEMORY;
  int head = snprintf(p->code, size, "FAKE_CODE arch=%s options=%d\n", arch, num_options);
  memcpy(p->code + head, p->source, strlen(p->source) + 1);
  p->code_size = (size_t)head + strlen(p->source) + 1;
  return OK;
}

EXPORT int RTC(nvrtcGetProgramLogSize, hiprtcGetProgramLogSize)(void* prog, size_t* size) {
  program* p = valid(prog);
  if (!p) return INVALID_PROGRAM;
  if (!size) return INVALID_INPUT;
  *size = strlen(p->log) + 1;
  return OK;
}

EXPORT int RTC(nvrtcGetProgramLog, hiprtcGetProgramLog)(void* prog, char* log) {
  program* p = valid(prog);
  if (!p) return INVALID_PROGRAM;
  if (!log) return INVALID_INPUT;
  memcpy(log, p->log, strlen(p->log) + 1);
  return OK;
}

EXPORT int RTC(nvrtcGetCUBINSize, hiprtcGetCodeSize)(void* prog, size_t* size) {
  program* p = valid(prog);
  if (!p || !p->code) return INVALID_PROGRAM;
  if (!size) return INVALID_INPUT;
  *size = p->code_size;
  return OK;
}

EXPORT int RTC(nvrtcGetCUBIN, hiprtcGetCode)(void* prog, char* code) {
  program* p = valid(prog);
  if (!p || !p->code) return INVALID_PROGRAM;
  if (!code) return INVALID_INPUT;
  memcpy(code, p->code, p->code_size);
  return OK;
}

EXPORT int RTC(nvrtcDestroyProgram, hiprtcDestroyProgram)(void** prog) {
  if (!prog) return INVALID_INPUT;
  program* p = valid(*prog);
  if (!p) return INVALID_PROGRAM;
  p->magic = 0;
  free(p->source);
  free(p->name);
  free(p->log);
  free(p->code);
  free(p);
  *prog = NULL;
  return OK;
}
