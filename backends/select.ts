/**
 * Choosing a backend: by name, or `auto`, which takes the first of cuda, hip and cpu that has a
 * device.
 *
 * @module
 */

import type { Backend, BackendKind } from "./backend.ts";
import { CpuBackend } from "./cpu.ts";
import { openCuda } from "./cuda.ts";
import { openHip } from "./hip.ts";

/** A backend name as users write it on the command line. */
export type BackendChoice = BackendKind | "auto";

/** Options for `openBackend`. */
export interface OpenBackendOptions {
  /** Device ordinal for GPU backends; default 0. */
  readonly device?: number;
  /** Told why each backend `auto` passed over was unusable. */
  readonly onSkip?: (kind: BackendKind, reason: string) => void;
}

/** The order `auto` tries backends in. */
export const AUTO_ORDER: readonly BackendKind[] = ["cuda", "hip", "cpu"];

/**
 * Opens the named backend, or with `auto` the first that has a device.
 *
 * @example
 * ```ts
 * import { openBackend } from "./select.ts";
 * const backend = openBackend("auto", { onSkip: (kind, why) => console.error(kind, why) });
 * console.log(backend.kind, backend.info.name);
 * backend.close();
 * ```
 */
export function openBackend(choice: BackendChoice, options: OpenBackendOptions = {}): Backend {
  const open: Record<BackendKind, () => Backend> = {
    cuda: () => openCuda({ device: options.device }),
    hip: () => openHip({ device: options.device }),
    cpu: () => new CpuBackend(),
  };
  if (choice !== "auto") {
    if (!Object.hasOwn(open, choice)) {
      throw new TypeError(`unknown backend '${choice}'; use auto, ${AUTO_ORDER.join(", ")}`);
    }
    return open[choice]();
  }
  for (const kind of AUTO_ORDER) {
    try {
      return open[kind]();
    } catch (error) {
      options.onSkip?.(kind, error instanceof Error ? error.message : String(error));
    }
  }
  throw new Error("no backend could be opened, not even the CPU");
}
