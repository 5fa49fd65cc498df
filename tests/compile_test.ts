/**
 * Run-time kernels (kernels/compile.ts, backends/rtc.ts) on the fake driver and a fake NVRTC /
 * hipRTC (tests/fake_driver/fake_nvrtc.c): the compiler's log in errors, the disk cache (a hit
 * runs no compile; a change of source, options or device misses; a damaged file is recompiled),
 * precompiled PTX with declarations, and signatures read from odd parameter lists, checked
 * against the bytes the fake driver saw the launcher pack.
 *
 * @module
 */

import assert from "node:assert/strict";
import { openCuda } from "../backends/cuda.ts";
import { DriverNotFoundError } from "../backends/errors.ts";
import { openHip } from "../backends/hip.ts";
import { CompileError, openRuntimeCompiler, RtcError } from "../backends/rtc.ts";
import { compileKernels, KernelSourceError } from "../kernels/compile.ts";
import { parseKernels } from "../kernels/signature.ts";
import { buildFakeDriver, buildFakeRtc, openFakeControl } from "./fake_driver/fake.ts";

const SCALE = `
extern "C" __global__ void scale(float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}
`;

/** Runs `body` with a fake CUDA backend, a fake NVRTC and an empty cache folder. */
async function withFake(
  body: (ctx: {
    gpu: ReturnType<typeof openCuda>;
    rtc: ReturnType<typeof buildFakeRtc>["control"];
    cacheDir: string;
    fake: ReturnType<typeof openFakeControl>;
  }) => Promise<void>,
  hip = false,
): Promise<void> {
  const driverPath = buildFakeDriver({ hip });
  const fake = openFakeControl(driverPath);
  fake.reset();
  const { path, control: rtc } = buildFakeRtc(hip);
  rtc.reset();
  const cacheDir = Deno.makeTempDirSync({ prefix: "denali-kernel-cache-" });
  const variable = hip ? "DENALI_LIBHIPRTC" : "DENALI_LIBNVRTC";
  const before = Deno.env.get(variable);
  Deno.env.set(variable, path);
  const gpu = hip ? openHip({ libraryPath: driverPath }) : openCuda({ libraryPath: driverPath });
  try {
    await body({ gpu, rtc, cacheDir, fake });
  } finally {
    gpu.close();
    fake.close();
    rtc.close();
    if (before === undefined) Deno.env.delete(variable);
    else Deno.env.set(variable, before);
    Deno.removeSync(cacheDir, { recursive: true });
  }
}

Deno.test("compileKernels: compiles for the device, launches with the source's signature", async () => {
  await withFake(async ({ gpu, rtc, cacheDir, fake }) => {
    const compiler = openRuntimeCompiler("cuda");
    const mod = await compileKernels(gpu, SCALE, { name: "my_ops", cacheDir, compiler });
    assert.equal(rtc.compileCount(), 1);
    assert.equal(rtc.lastArch(), "sm_90"); // the fake device's compute capability
    assert.equal(mod.fromCache, false);
    assert.deepEqual(mod.specs.map((s) => [s.name, s.params.map((p) => p.type)]), [
      ["scale", ["ptr", "f32", "i32"]],
    ]);
    const x = gpu.alloc(1024);
    const stream = gpu.createStream();
    mod.launchers.scale.launch(4, 1, 1, 256, 1, 1, 0, stream, x, 2.5, 1000);
    const launch = fake.lastLaunch();
    assert.equal(launch.functionName, "scale");
    const view = new DataView(launch.args.buffer, launch.args.byteOffset);
    assert.equal(view.getBigUint64(0, true), BigInt(x.ptr));
    assert.equal(view.getFloat32(8, true), 2.5);
    assert.equal(view.getInt32(12, true), 1000);
    assert.throws(
      () => mod.launchers.scale.launch(4, 1, 1, 256, 1, 1, 0, stream, x, 2.5),
      /scale: expected 3 kernel arguments/,
    );
    stream.destroy();
    gpu.free(x);
    mod.module.unload();
    compiler.close();
  });
});

Deno.test("compileKernels: the second load reads the disk cache; other source, options or device miss", async () => {
  await withFake(async ({ gpu, rtc, cacheDir }) => {
    const first = await compileKernels(gpu, SCALE, { name: "cached", cacheDir });
    const second = await compileKernels(gpu, SCALE, { name: "cached", cacheDir });
    assert.equal(rtc.compileCount(), 1);
    assert.equal(first.fromCache, false);
    assert.equal(second.fromCache, true);
    assert.equal([...Deno.readDirSync(cacheDir)].length, 1);
    await compileKernels(gpu, SCALE + "\n// changed", { name: "cached", cacheDir });
    assert.equal(rtc.compileCount(), 2);
    await compileKernels(gpu, SCALE, { name: "cached", cacheDir, options: ["-O3"] });
    assert.equal(rtc.compileCount(), 3);
    await compileKernels(gpu, SCALE, { name: "cached", cacheDir, arch: "sm_80" });
    assert.equal(rtc.compileCount(), 4);
    assert.equal(rtc.lastArch(), "sm_80");
    await compileKernels(gpu, SCALE, { name: "cached", cacheDir: null });
    assert.equal(rtc.compileCount(), 5);
    assert.equal([...Deno.readDirSync(cacheDir)].length, 4);

    // A damaged cache file (the driver refuses it) is compiled again and replaced.
    const file = [...Deno.readDirSync(cacheDir)].map((e) => `${cacheDir}/${e.name}`)
      .find((p) => Deno.readTextFileSync(p) === `FAKE_CODE arch=sm_90 options=1\n${SCALE}\0`)!;
    Deno.writeTextFileSync(file, "FAKE_BAD_PTX\0");
    const repaired = await compileKernels(gpu, SCALE, { name: "cached", cacheDir });
    assert.equal(repaired.fromCache, false);
    assert.equal(rtc.compileCount(), 6);
    assert.ok(!Deno.readTextFileSync(file).includes("FAKE_BAD_PTX"));
    for (const m of [first, second, repaired]) m.module.unload();
  });
});

Deno.test("compileKernels: a compile error carries the compiler's log; warnings reach .log", async () => {
  await withFake(async ({ gpu, cacheDir }) => {
    const bad = `${SCALE}\n#error expected a ';' before '}' token\n`;
    const error = await compileKernels(gpu, bad, { name: "broken", cacheDir }).catch((e) => e);
    assert.ok(error instanceof CompileError, String(error));
    assert.equal(error.call, "nvrtcCompileProgram");
    assert.equal(error.programName, "broken");
    assert.match(error.log, /^broken\(7\): error: expected a ';' before '}' token/);
    assert.match(
      error.message,
      /broken did not compile \(nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION \(6\)\):\nbroken\(7\): error: expected/,
    );
    assert.equal([...Deno.readDirSync(cacheDir)].length, 0, "a failed compile left a cache file");

    const warned = await compileKernels(gpu, `${SCALE}#warning unused variable 'k'\n`, {
      name: "warned",
      cacheDir,
    });
    assert.match(warned.log, /warned\(6\): warning: unused variable 'k'/);
    warned.module.unload();
  });
});

Deno.test("compileKernels: other compiler failures are RtcErrors naming the call and NVRTC's text", async () => {
  await withFake(async ({ gpu, rtc, cacheDir }) => {
    rtc.failNextCreate(1);
    const error = await compileKernels(gpu, SCALE, { name: "oom", cacheDir }).catch((e) => e);
    assert.ok(error instanceof RtcError && !(error instanceof CompileError), String(error));
    assert.equal(error.message, "nvrtcCreateProgram failed: NVRTC_ERROR_OUT_OF_MEMORY (1)");
    const options = await compileKernels(gpu, SCALE, {
      name: "opts",
      cacheDir,
      options: ["not-an-option"],
    }).catch((e) => e);
    assert.match(String(options), /nvrtcCompileProgram failed: NVRTC_ERROR_INVALID_OPTION/);
  });
});

Deno.test("compileKernels: a missing NVRTC, the CPU backend and source without kernels fail clearly", async () => {
  await withFake(async ({ gpu, cacheDir }) => {
    Deno.env.set("DENALI_LIBNVRTC", "/nonexistent/libnvrtc.so.13");
    const missing = (() => {
      try {
        openRuntimeCompiler("cuda");
      } catch (error) {
        return error as Error;
      }
    })();
    assert.ok(missing instanceof DriverNotFoundError, String(missing));
    assert.match(missing.message, /no NVRTC library \(\/nonexistent\/libnvrtc\.so\.13\) found/);
    assert.match(missing.message, /DENALI_LIBNVRTC/);
    await assert.rejects(
      () => compileKernels(gpu, "__global__ void k(float* x) {}", { name: "x", cacheDir }),
      (e: Error) => e instanceof KernelSourceError && /no kernel found.*extern "C"/.test(e.message),
    );
    await assert.rejects(
      () =>
        compileKernels(gpu, `extern "C" __global__ void k(double d) {}`, { name: "x", cacheDir }),
      (e: Error) =>
        e instanceof KernelSourceError &&
          /x:2?1?: parameter 'double d' of k has type double/.test(e.message) ||
        /parameter 'double d' of k has type double; use a pointer/.test(e.message),
    );
    await assert.rejects(() => compileKernels(gpu, SCALE, { name: "../escape", cacheDir }), /name/);
  });
  const { CpuBackend } = await import("../backends/cpu.ts");
  await assert.rejects(
    () => compileKernels(new CpuBackend(), SCALE, { name: "x" }),
    /the cpu backend runs no device code/,
  );
});

Deno.test("compileKernels: precompiled PTX loads with its declarations; kinds must match", async () => {
  await withFake(async ({ gpu, rtc, fake }) => {
    const mod = await compileKernels(gpu, {
      ptx: "// PTX the user ships\n.visible .entry add_one(...)",
      declarations: `extern "C" __global__ void add_one(int* x, unsigned int n);`,
    }, { name: "shipped" });
    assert.equal(rtc.compileCount(), 0);
    const x = gpu.alloc(64), stream = gpu.createStream();
    mod.launchers.add_one.launch(1, 1, 1, 32, 1, 1, 0, stream, x, 16);
    assert.equal(fake.lastLaunch().functionName, "add_one");
    assert.equal(new DataView(fake.lastLaunch().args.buffer).getUint32(8, true), 16);
    await assert.rejects(
      () => compileKernels(gpu, { hsaco: new Uint8Array(4), declarations: "" }, { name: "h" }),
      /no kernel found/,
    );
    await assert.rejects(
      () =>
        compileKernels(gpu, {
          hsaco: new Uint8Array(4),
          declarations: `extern "C" __global__ void k(int* x);`,
        }, { name: "h" }),
      /HSACO runs on AMD GPUs/,
    );
    await assert.rejects(
      () =>
        compileKernels(gpu, {
          ptx: "x",
          declarations: `extern "C" __global__ void missing_kernel(int* x);`,
        }, { name: "p" }),
      /p: kernel missing_kernel is declared but its image has no such function/,
    );
    stream.destroy();
    gpu.free(x);
    mod.module.unload();
  });
});

Deno.test("compileKernels on HIP: hipRTC compiles for the gfx target", async () => {
  await withFake(async ({ gpu, rtc, cacheDir }) => {
    const mod = await compileKernels(gpu, SCALE, { name: "hip_ops", cacheDir });
    assert.equal(rtc.compileCount(), 1);
    assert.equal(rtc.lastArch(), gpu.info.arch);
    assert.equal(mod.target, gpu.info.arch);
    assert.match([...Deno.readDirSync(cacheDir)][0].name, /^hip_ops-[0-9a-f]{40}\.hsaco$/);
    mod.module.unload();
  }, true);
});

Deno.test("parseKernels reads odd parameter lists as the launcher must pack them", () => {
  const source = `
// a comment: extern "C" __global__ void commented(int x) {
extern "C" __global__ void __launch_bounds__(256, 2) bounded(const float* __restrict__ in,
                                                            float *out,
                                                            unsigned int n) {
}
extern "C" __global__ void spaced( float  *  const  x , const   int   k , long long big,
  size_t bytes, unsigned long long seed, __half h, __nv_bfloat16 b, float arr[] ) {}
extern "C" __global__ void none() {}
extern "C" __global__ void none_void(void) {}
extern "C" __global__ void proto(int* x, int n);
extern "C" __global__ void proto(int* x, int n) {}
template <int N> __global__ void templated(float* x) {}
`;
  const specs = parseKernels(source, "odd.cu", true);
  const table = Object.fromEntries(
    specs.map((s) => [s.name, s.params.map((p) => `${p.type} ${p.name}`).join(", ")]),
  );
  assert.deepEqual(table, {
    bounded: "ptr in, ptr out, u32 n",
    spaced: "ptr x, i32 k, i64 big, u64 bytes, u64 seed, f16 h, bf16 b, ptr arr",
    none: "",
    none_void: "",
    proto: "ptr x, i32 n",
  });
  assert.throws(
    () => parseKernels(`extern "C" __global__ void k(float*) {}`, "f.cu"),
    /f\.cu:1: cannot read parameter 'float\*' of k/,
  );
  assert.throws(
    () => parseKernels(`extern "C" __global__ void k(bool b) {}`, "f.cu"),
    /has type bool; use a pointer or one of/,
  );
  assert.throws(
    () =>
      parseKernels(
        `extern "C" __global__ void k(int* x);\nextern "C" __global__ void k(float x) {}`,
        "f.cu",
        true,
      ),
    /f\.cu:2: k is declared twice with different parameters/,
  );
  // Without prototypes (the build script), declarations do not count.
  assert.deepEqual(parseKernels(`extern "C" __global__ void k(int* x);`, "f.cu").length, 0);
});

/** The real hipRTC, where installed (Debian's ROCm 5.2 has it inside libamdhip64.so.5). */
const realHiprtc = (() => {
  try {
    return openRuntimeCompiler("hip", { libraryPath: "libamdhip64.so.5" });
  } catch {
    return null;
  }
})();

Deno.test({
  name: "real hipRTC (where installed): an ELF code object for gfx90a, clang's log on errors",
  ignore: realHiprtc === null,
  fn: async () => {
    await withFake(async ({ gpu, cacheDir }) => {
      const compiler = realHiprtc!;
      const mod = await compileKernels(gpu, SCALE, {
        name: "real",
        arch: "gfx90a",
        cacheDir,
        compiler,
      });
      const file = [...Deno.readDirSync(cacheDir)][0].name;
      const bytes = Deno.readFileSync(`${cacheDir}/${file}`);
      assert.deepEqual([...bytes.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]); // "\x7fELF"
      mod.module.unload();
      const error = await compileKernels(
        gpu,
        `extern "C" __global__ void k(float* x) { x[0] = undeclared_y; }`,
        { name: "typo", arch: "gfx90a", cacheDir, compiler },
      ).catch((e) => e);
      assert.ok(error instanceof CompileError, String(error));
      assert.match(error.log, /error: use of undeclared identifier 'undeclared_y'/);
      assert.match(error.message, /typo did not compile \(hiprtcCompileProgram failed/);
    }, true);
  },
});
