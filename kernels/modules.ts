/**
 * Loading a kernel module for whatever device the backend drives, and generating its launchers
 * from the manifest. This is the only place that picks a code object by arch, and it asks the
 * backend for the arch rather than knowing devices itself.
 *
 * @module
 */

import type {
  Backend,
  DeviceModule,
  KernelFunction,
  LaunchAbi,
  ModuleImage,
} from "../backends/backend.ts";
import { ARCH_SPECIFIC_PTX, HSACO_ARCHS, PTX_ARCHS } from "./targets.ts";
import { createLauncher, type KernelLauncher, type LauncherOptions } from "./launcher.ts";
import { KERNEL_MODULES } from "./manifest.ts";
import type { KernelSpec } from "./signature.ts";

/** A loaded module and the launchers of all its kernels. */
export interface LoadedKernels {
  /** The loaded code object. */
  readonly module: DeviceModule;
  /** The manifest's specs of the module's kernels. */
  readonly specs: readonly KernelSpec[];
  /** One generated launcher per kernel, by kernel name. */
  readonly launchers: Readonly<Record<string, KernelLauncher>>;
  /**
   * The target of the loaded image (`sm_90a`, `sm_90`, `gfx90a`, ...): a module with
   * arch-specific kernels launches them only when its arch-specific image was loaded.
   */
  readonly target: string;
}

/** Which built image serves `backend`'s device, as a path relative to kernels/. */
export function imagePath(backend: Backend, moduleName: string): string {
  const { backend: kind, arch, computeCapability: [major, minor] } = backend.info;
  if (kind === "cuda") {
    const cc = major * 10 + minor;
    const usable = PTX_ARCHS.filter((a) => Number(a.slice(3)) <= cc);
    if (usable.length === 0) {
      throw new Error(
        `${backend.info.name} is ${arch}, older than the oldest built PTX (${PTX_ARCHS[0]}); ` +
          `Denali needs an Ampere (sm_80) or newer NVIDIA GPU`,
      );
    }
    const exact = `sm_${cc}a`;
    const target = ARCH_SPECIFIC_PTX[moduleName]?.includes(exact)
      ? exact
      : usable[usable.length - 1];
    return `ptx/${moduleName}.${target}.ptx`;
  }
  if (kind === "hip") {
    if (!(HSACO_ARCHS as readonly string[]).includes(arch)) {
      throw new Error(
        `no HSACO built for ${arch} (built: ${HSACO_ARCHS.join(", ")}); add it to HSACO_ARCHS ` +
          `in kernels/targets.ts and run \`deno task kernels\``,
      );
    }
    return `hsaco/${moduleName}.${arch}.hsaco`;
  }
  throw new Error(
    "the CPU backend runs built-in TypeScript operators, not device modules; pick cuda or hip",
  );
}

/**
 * Loads `moduleName` (a file of kernels/src) onto the backend's device and generates a launcher
 * for each of its kernels.
 *
 * @example
 * ```ts ignore
 * const kernels = await loadKernels(backend, "runtime_test");
 * kernels.launchers.vec_add_f32.launch(4, 1, 1, 256, 1, 1, 0, stream, a, b, c, 1000);
 * ```
 */
export async function loadKernels(
  backend: Backend,
  moduleName: string,
  options: LauncherOptions = {},
): Promise<LoadedKernels> {
  const specs = KERNEL_MODULES[moduleName];
  if (!specs) {
    throw new Error(
      `no kernel module '${moduleName}' in the manifest (have: ${
        Object.keys(KERNEL_MODULES).join(", ")
      })`,
    );
  }
  const abi = backend.launchAbi;
  if (!abi) throw new Error(`the ${backend.kind} backend cannot launch device kernels`);
  const path = imagePath(backend, moduleName);
  const url = new URL(`./${path}`, import.meta.url);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot read kernel image ${url}: HTTP ${response.status}`);
  const image: ModuleImage = path.endsWith(".ptx")
    ? { format: "ptx", text: await response.text() }
    : { format: "hsaco", bytes: new Uint8Array(await response.arrayBuffer()) };
  const module = backend.loadModule(image);
  const launchers = launchersOf(backend, module, specs, options, moduleName);
  // "ptx/<module>.<target>.ptx" or "hsaco/<module>.<target>.hsaco"; module names have no dots.
  const target = path.split("/")[1].split(".")[1];
  return { module, specs, launchers, target };
}

/**
 * One generated launcher per kernel of `specs` over `module` (loaded from `moduleName`).
 * @throws Error naming the kernel when the image lacks one the specs declare
 */
export function launchersOf(
  backend: Backend,
  module: DeviceModule,
  specs: readonly KernelSpec[],
  options: LauncherOptions,
  moduleName: string,
): Record<string, KernelLauncher> {
  const abi = backend.launchAbi;
  if (!abi) throw new Error(`the ${backend.kind} backend cannot launch device kernels`);
  const launchers: Record<string, KernelLauncher> = {};
  for (const spec of specs) {
    try {
      launchers[spec.name] = launcherOf(abi, module, spec, options);
    } catch (error) {
      throw new Error(
        `${moduleName}: kernel ${spec.name} is declared but its image has no such function ` +
          `(is it extern "C" and compiled into the image?): ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
  return launchers;
}

/**
 * A launcher of kernel `name` of a loaded module, built with launch options of its own (e.g.
 * programmatic) over function handles that `prepare` configures first (e.g. a raised
 * shared-memory limit, which is an attribute of the handle: the driver need not hand out the same
 * handle twice, so the launcher must use the very handles it was raised on).
 */
export function launcherWith(
  backend: Backend,
  kernels: LoadedKernels,
  name: string,
  options: LauncherOptions,
  prepare: (fn: KernelFunction) => void = () => {},
): KernelLauncher {
  const spec = kernels.specs.find((s) => s.name === name);
  if (!spec) throw new Error(`no kernel '${name}' in the loaded module`);
  return launcherOf(backend.launchAbi!, kernels.module, spec, options, prepare);
}

/**
 * Whether kernels that wait for the kernel before them (griddepcontrol.wait) ask to launch
 * programmatically: `requested` where given, else yes unless the environment sets DENALI_PDL=0.
 * Their launchers still launch plainly where the backend cannot (see KernelLauncher.programmatic).
 */
export function programmaticWanted(requested?: boolean): boolean {
  return requested ?? Deno.env.get("DENALI_PDL") !== "0";
}

/** The launcher of `spec` over its variants' function handles in `module`, each `prepare`d. */
function launcherOf(
  abi: LaunchAbi,
  module: DeviceModule,
  spec: KernelSpec,
  options: LauncherOptions,
  prepare?: (fn: KernelFunction) => void,
): KernelLauncher {
  const variants = spec.variants.map((v) => {
    const fn = module.getFunction(v.symbol);
    prepare?.(fn);
    return { fn, assumes: v.assumes };
  });
  return createLauncher(abi, spec, variants, options);
}
