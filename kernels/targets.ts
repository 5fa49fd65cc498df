/**
 * The code-object targets Denali builds: shared by the build script, which compiles them, and
 * the module loader, which picks one at run time (so the runtime never imports the build script).
 *
 * @module
 */

/** PTX targets: the driver JIT-compiles the newest one not above the device. */
export const PTX_ARCHS = ["sm_80", "sm_90"] as const;
/** HSACO targets: code objects run only on their exact gfx arch. */
export const HSACO_ARCHS = ["gfx90a", "gfx1030"] as const;
