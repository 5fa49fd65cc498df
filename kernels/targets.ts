/**
 * The code-object targets Denali builds: shared by the build script, which compiles them, and
 * the module loader, which picks one at run time (so the runtime never imports the build script).
 *
 * @module
 */

/** PTX targets: the driver JIT-compiles the newest one not above the device. */
export const PTX_ARCHS = ["sm_80", "sm_90"] as const;
/**
 * Arch-specific PTX, by module: built besides PTX_ARCHS for the modules that use instructions
 * only one arch has (sm_90a: wgmma). Such PTX runs on that exact arch and nowhere else, so a
 * device loads it only when its compute capability matches; every other device loads the
 * module's generic PTX, whose copies of those kernels trap and are never launched.
 */
export const ARCH_SPECIFIC_PTX: Readonly<Record<string, readonly string[]>> = {
  linear_sm90: ["sm_90a"],
};
/** HSACO targets: code objects run only on their exact gfx arch. */
export const HSACO_ARCHS = ["gfx90a", "gfx1030"] as const;
