/**
 * Opening a driver library with errors a user can act on, instead of Deno's raw dlopen text.
 *
 * @module
 */

import { DriverNotFoundError } from "./errors.ts";

/** How to describe a driver library in errors. */
export interface LibraryLabel {
  /** What the library is, e.g. "NVIDIA driver". */
  readonly what: string;
  /** What to do when it is missing, e.g. which other backend to pick. */
  readonly remedy: string;
}

/**
 * Opens the first of `paths` that loads, binding `symbols`. A missing library or symbol becomes
 * a DriverNotFoundError that names the library, the symbol and the remedy.
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  paths: readonly string[],
  symbols: S,
  label: LibraryLabel,
): { library: Deno.DynamicLibrary<S>; path: string } {
  const failures: string[] = [];
  for (const path of paths) {
    try {
      return { library: Deno.dlopen(path, symbols), path };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const missing = /Failed to register symbol (\w+)/.exec(message);
      if (missing) {
        throw new DriverNotFoundError(
          `${path} lacks the symbol ${missing[1]} that Denali needs, so the ${label.what} is ` +
            `too old or not the real one. Update it, or ${label.remedy}`,
        );
      }
      failures.push(`${path}: ${message.replace(/^(Could not open library: )+/, "")}`);
    }
  }
  throw new DriverNotFoundError(
    `no ${label.what} (${paths.join(" or ")}) found. Install it, or ${label.remedy}\n` +
      failures.map((line) => `  ${line}`).join("\n"),
  );
}

/** Reads a NUL-terminated C string at `pointer`, or `fallback` for a null pointer. */
export function cStringFrom(pointer: Deno.PointerValue, fallback: string): string {
  return pointer === null ? fallback : Deno.UnsafePointerView.getCString(pointer);
}
