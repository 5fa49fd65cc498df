/**
 * The one place that loads xgrammar's WebAssembly build (`npm:@mlc-ai/web-xgrammar`).
 *
 * The package is a UMD bundle written for Node: under Deno it loads once `globalThis.require`
 * (from `createRequire`) and `__filename` exist, and its classes then appear on
 * `globalThis.xgrammar`. It reports a bad grammar by printing a `[FATAL] file:line: message`
 * line through `console.error` and aborting the WebAssembly instance, which is unusable from
 * then on (its next call may hang). So this module captures those lines — the only place the
 * problem is named — and callers check a grammar in a throwaway instance (a worker, see
 * check_worker.ts) before compiling it in the instance that serves.
 *
 * @module
 */

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** The package's exports: Grammar, GrammarCompiler, GrammarMatcher, TokenizerInfo, ... */
export type XGrammar = typeof import("npm:@mlc-ai/web-xgrammar@0.1.27");

/** A compiled grammar of the package. */
export type CompiledGrammar = import("npm:@mlc-ai/web-xgrammar@0.1.27").CompiledGrammar;

/** The package's grammar compiler. */
export type XGrammarCompiler = import("npm:@mlc-ai/web-xgrammar@0.1.27").GrammarCompiler;

/** A matcher of the package. */
export type GrammarMatcher = import("npm:@mlc-ai/web-xgrammar@0.1.27").GrammarMatcher;

let loaded: Promise<XGrammar> | null = null;
/** Lines xgrammar printed while {@link captureErrors} ran, else null. */
let captured: string[] | null = null;

/** Loads the bundle once per thread; later calls share the first load. */
export function loadXgrammar(): Promise<XGrammar> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<XGrammar> {
  const g = globalThis as Record<string, unknown>;
  g.require ??= createRequire(import.meta.url);
  g.__filename ??= fileURLToPath(import.meta.url);
  // The instance binds `console.error` when it starts (on the first call that needs it), so the
  // hook is in place from then on; lines outside a capture still reach the real stderr.
  const stderr = console.error;
  console.error = (...parts: unknown[]) => {
    if (captured !== null) captured.push(parts.map(String).join(" "));
    else stderr(...parts);
  };
  try {
    await import("npm:@mlc-ai/web-xgrammar@0.1.27");
    const xgrammar = g.xgrammar as XGrammar;
    // Start the instance now, while the hook is installed.
    await xgrammar.Grammar.builtinJSONGrammar().then((grammar) => grammar.dispose());
    return xgrammar;
  } finally {
    console.error = stderr;
  }
}

/**
 * Runs `fn`; when it throws, rethrows an Error carrying what xgrammar printed (its `[FATAL]`
 * line without the source path), or the thrown message when it printed nothing.
 */
export async function captureErrors<T>(fn: () => Promise<T>): Promise<T> {
  const outer = captured;
  captured = [];
  const lines = captured;
  try {
    return await fn();
  } catch (error) {
    const fatal = lines.find((line) => line.includes("[FATAL]"));
    const message = fatal === undefined
      ? (error instanceof Error ? error.message : String(error))
      : fatal.replace(/^.*\[FATAL\]\s*(?:[^:]*\.(?:cc|h):\d+:\s*)?/, "");
    throw new Error(message);
  } finally {
    captured = outer;
  }
}
