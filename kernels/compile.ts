/**
 * User kernels: CUDA C / HIP C++ compiled at run time (NVRTC, hipRTC) or precompiled PTX, cubin or
 * HSACO the user ships, loaded with the same generated launchers as Denali's own kernels. The
 * signatures come from the source with the parser the build script uses (kernels/signature.ts),
 * so a launcher never disagrees with its kernel; compiled images are cached on disk.
 *
 * @module
 */

import type { Backend, DeviceModule, ModuleImage } from "../backends/backend.ts";
import { openRuntimeCompiler, type RuntimeCompiler } from "../backends/rtc.ts";
import type { KernelLauncher, LauncherOptions } from "./launcher.ts";
import { launchersOf, type LoadedKernels } from "./modules.ts";
import { type KernelSpec, parseKernels } from "./signature.ts";

/** Precompiled code the user ships, with the C declarations of its kernels. */
export type PrecompiledKernels =
  | { readonly ptx: string; readonly declarations: string }
  | { readonly cubin: Uint8Array; readonly declarations: string }
  | { readonly hsaco: Uint8Array; readonly declarations: string };

/** Options of {@link compileKernels}. */
export interface CompileKernelsOptions {
  /** The module's name: the program name in compiler messages and the cache files' prefix. */
  readonly name: string;
  /**
   * The target: `"auto"` (default) compiles for the backend's device (`sm_90`, `gfx90a`, ...);
   * an explicit target is passed to the compiler as is.
   */
  readonly arch?: string;
  /** Extra compiler options, e.g. `["--use_fast_math"]` (part of the cache key). */
  readonly options?: readonly string[];
  /**
   * The folder of compiled images; default `$DENALI_KERNEL_CACHE`, else
   * `$XDG_CACHE_HOME/denali/kernels` or `~/.cache/denali/kernels`; null compiles every time.
   */
  readonly cacheDir?: string | null;
  /** A compiler to use; default the backend's (NVRTC or hipRTC), opened only on a cache miss. */
  readonly compiler?: RuntimeCompiler;
  /** Options of the generated launchers (packing, checks, programmatic launch). */
  readonly launcher?: LauncherOptions;
}

/** A user module: its loaded image, kernel specs and one launcher per kernel. */
export interface CompiledKernels extends LoadedKernels {
  /** Launchers by kernel name: `mod.launchers.my_kernel.launch(grid..., block..., shared, stream, ...args)`. */
  readonly launchers: Readonly<Record<string, KernelLauncher>>;
  /** Whether the image came from the disk cache (no compile ran). */
  readonly fromCache: boolean;
  /** The compiler's log of a compile that ran (warnings); empty otherwise. */
  readonly log: string;
}

/** A user kernel source or its declarations could not be used as written. */
export class KernelSourceError extends Error {
  /**
   * Creates the error.
   * @param message what is wrong, where, and what to write instead
   */
  constructor(message: string) {
    super(message);
    this.name = "KernelSourceError";
  }
}

const compilers = new Map<string, RuntimeCompiler>();

/**
 * Compiles CUDA C (HIP C++ on AMD) `source` for the backend's device, or loads precompiled code,
 * and returns generated launchers for every `extern "C" __global__` kernel it defines. Launches
 * cost what Denali's own launchers cost: arguments packed into one preallocated buffer, nothing
 * allocated per call. A second call with the same source, options and device reads the compiled
 * image from the disk cache.
 *
 * @example
 * ```ts ignore
 * const mod = await compileKernels(backend, `
 *   extern "C" __global__ void scale(float* x, float a, int n) {
 *     int i = blockIdx.x * blockDim.x + threadIdx.x;
 *     if (i < n) x[i] *= a;
 *   }`, { name: "my_ops" });
 * mod.launchers.scale.launch(Math.ceil(n / 256), 1, 1, 256, 1, 1, 0, stream, x, 2.5, n);
 * ```
 *
 * @throws KernelSourceError for source without kernels or a parameter the launcher cannot pass;
 * CompileError (backends/rtc.ts) with the compiler's log when it does not compile;
 * DriverNotFoundError when NVRTC / hipRTC is missing; TypeError on the CPU backend
 */
export async function compileKernels(
  backend: Backend,
  source: string | PrecompiledKernels,
  options: CompileKernelsOptions,
): Promise<CompiledKernels> {
  const kind = backend.kind;
  if (kind !== "cuda" && kind !== "hip") {
    throw new TypeError(
      `compileKernels: the ${kind} backend runs no device code; use the cuda or hip backend`,
    );
  }
  if (!/^[\w.-]+$/.test(options.name)) {
    throw new KernelSourceError(
      `compileKernels: name '${options.name}' must be letters, digits, '_', '.' or '-'`,
    );
  }
  const declared = typeof source === "string" ? source : source.declarations;
  const specs = readSpecs(declared, options.name, typeof source !== "string");
  let image: ModuleImage, fromCache = false, log = "", module: DeviceModule;
  if (typeof source === "string") {
    ({ image, fromCache, log } = await compiledImage(backend, source, options, true));
    try {
      module = backend.loadModule(image);
    } catch (error) {
      if (!fromCache) throw error;
      // A damaged or foreign cache file: compile again, and overwrite it.
      ({ image, fromCache, log } = await compiledImage(backend, source, options, false));
      module = backend.loadModule(image);
    }
  } else {
    image = precompiledImage(kind, source, options.name);
    module = backend.loadModule(image);
  }
  try {
    const launchers = launchersOf(backend, module, specs, options.launcher ?? {}, options.name);
    return { module, specs, launchers, target: targetOf(backend, options), fromCache, log };
  } catch (error) {
    module.unload();
    throw error;
  }
}

function readSpecs(declared: string, name: string, prototypes: boolean): KernelSpec[] {
  let specs: KernelSpec[];
  try {
    specs = parseKernels(declared, name, prototypes);
  } catch (error) {
    throw new KernelSourceError((error as Error).message);
  }
  if (specs.length === 0) {
    throw new KernelSourceError(
      `${name}: no kernel found; declare each one as \`extern "C" __global__ void name(params)\`` +
        ` on one line start (extern "C" keeps its name unmangled, so it can be found and launched)`,
    );
  }
  return specs;
}

function precompiledImage(
  kind: "cuda" | "hip",
  code: PrecompiledKernels,
  name: string,
): ModuleImage {
  if ("hsaco" in code) {
    if (kind !== "hip") {
      throw new KernelSourceError(
        `${name}: HSACO runs on AMD GPUs; ship PTX or a cubin for ${kind}`,
      );
    }
    return { format: "hsaco", bytes: code.hsaco };
  }
  if (kind !== "cuda") {
    throw new KernelSourceError(
      `${name}: PTX and cubins run on NVIDIA GPUs; ship HSACO for ${kind}`,
    );
  }
  return "ptx" in code ? { format: "ptx", text: code.ptx } : { format: "cubin", bytes: code.cubin };
}

function targetOf(backend: Backend, options: CompileKernelsOptions): string {
  if (options.arch !== undefined && options.arch !== "auto") return options.arch;
  const [major, minor] = backend.info.computeCapability;
  return backend.kind === "cuda" ? `sm_${major}${minor}` : backend.info.arch;
}

/** The default cache folder, or null when no home is known. */
export function defaultKernelCacheDir(): string | null {
  const configured = Deno.env.get("DENALI_KERNEL_CACHE");
  if (configured) return configured;
  const base = Deno.env.get("XDG_CACHE_HOME") ??
    (Deno.env.get("HOME") ? `${Deno.env.get("HOME")}/.cache` : null);
  return base === null ? null : `${base}/denali/kernels`;
}

async function compiledImage(
  backend: Backend,
  source: string,
  options: CompileKernelsOptions,
  readCache: boolean,
): Promise<{ image: ModuleImage; fromCache: boolean; log: string }> {
  const kind = backend.kind as "cuda" | "hip";
  const arch = targetOf(backend, options);
  const flags = options.options ?? [];
  const format = kind === "cuda" ? "cubin" : "hsaco";
  const dir = options.cacheDir === undefined ? defaultKernelCacheDir() : options.cacheDir;
  let path: string | null = null;
  if (dir !== null) {
    const key = await sha256(JSON.stringify([kind, arch, flags, source]));
    path = `${dir}/${options.name}-${key.slice(0, 40)}.${format}`;
    const bytes = readCache ? await Deno.readFile(path).catch(() => null) : null;
    if (bytes !== null) return { image: { format, bytes }, fromCache: true, log: "" };
  }
  const compiler = options.compiler ?? compilerFor(kind);
  const { image, log } = compiler.compile(source, options.name, arch, flags);
  if (path !== null && image.format !== "ptx") {
    // Written whole under a temporary name, then renamed: a reader never sees half a file.
    await Deno.mkdir(dir!, { recursive: true });
    const temporary = `${path}.${Deno.pid}.tmp`;
    await Deno.writeFile(temporary, image.bytes);
    await Deno.rename(temporary, path);
  }
  return { image, fromCache: false, log };
}

function compilerFor(kind: "cuda" | "hip"): RuntimeCompiler {
  let compiler = compilers.get(kind);
  if (compiler === undefined) {
    compiler = openRuntimeCompiler(kind);
    compilers.set(kind, compiler);
  }
  return compiler;
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
