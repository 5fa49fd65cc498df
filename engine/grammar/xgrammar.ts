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
 * The package's `getNextTokenBitmask` is async and returns a fresh array; the engine needs the
 * mask synchronously, between the launch of the forward pass and the sampler's, without
 * allocating. {@link fillNextTokenBitmask} calls the same binding and reads the vector it
 * returns straight from the instance's memory, captured when the instance starts.
 *
 * @module
 */

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** The package's exports: Grammar, GrammarCompiler, GrammarMatcher, TokenizerInfo, ... */
export type XGrammar = typeof import("npm:@mlc-ai/web-xgrammar@0.1.27");

/** A compiled grammar of the package (the part Denali uses). */
export interface CompiledGrammar {
  /** Frees it in the WebAssembly instance. */
  dispose(): void;
}

/** The package's grammar compiler. */
export type XGrammarCompiler = import("npm:@mlc-ai/web-xgrammar@0.1.27").GrammarCompiler;

/** A matcher of the package (the part Denali uses). */
export interface GrammarMatcher {
  /** Advances past `tokenId`; false when the grammar does not allow it. */
  acceptToken(tokenId: number): boolean;
  /** Whether the grammar is complete and a stop token accepted. */
  isTerminated(): boolean;
  /** The next token's bitmask, in a fresh array. */
  getNextTokenBitmask(): Promise<Int32Array>;
  /** Frees it in the WebAssembly instance. */
  dispose(): void;
}

let loaded: Promise<XGrammar> | null = null;
/** The instance's linear memory, captured as it starts. */
let memory: WebAssembly.Memory | null = null;
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
  const instantiate = WebAssembly.instantiate;
  // deno-lint-ignore no-explicit-any
  (WebAssembly as any).instantiate = async (...args: Parameters<typeof instantiate>) => {
    // deno-lint-ignore no-explicit-any
    const result = await (instantiate as any)(...args);
    const exports = (result.instance ?? result).exports as Record<string, unknown>;
    memory ??= Object.values(exports).find((e) => e instanceof WebAssembly.Memory) as
      | WebAssembly.Memory
      | undefined ?? null;
    return result;
  };
  try {
    await import("npm:@mlc-ai/web-xgrammar@0.1.27");
    const xgrammar = g.xgrammar as XGrammar;
    // Start the instance now, while the hook is installed.
    await xgrammar.Grammar.builtinJSONGrammar().then((grammar) => grammar.dispose());
    return xgrammar;
  } finally {
    console.error = stderr;
    WebAssembly.instantiate = instantiate;
  }
}

/** The embind handle of a matcher and the vector its bitmask call returns. */
interface MatcherHandle {
  GetNextTokenBitmask(vocabSize: number): { $$: { ptr: number }; delete(): void };
}

/**
 * Writes `matcher`'s next-token bitmask (ceil(vocabSize / 32) words, xgrammar's layout) into
 * `out` from word `offset`, synchronously and without allocating: the binding's vector is read
 * from the instance's memory (a libc++ `std::vector<int32_t>`: begin and end pointers) and freed.
 */
export function fillNextTokenBitmask(
  matcher: GrammarMatcher,
  vocabSize: number,
  out: Int32Array,
  offset: number,
): void {
  if (memory === null) throw new Error("xgrammar is not loaded: call loadXgrammar first");
  const handle = (matcher as unknown as { handle: MatcherHandle }).handle;
  const vector = handle.GetNextTokenBitmask(vocabSize);
  try {
    const heap = heapWords(memory);
    const at = vector.$$.ptr >>> 2;
    const begin = heap[at] >>> 2, end = heap[at + 1] >>> 2;
    const words = Math.ceil(vocabSize / 32);
    if (end - begin !== words) {
      throw new Error(`xgrammar returned a bitmask of ${end - begin} words, expected ${words}`);
    }
    for (let w = 0; w < words; w++) out[offset + w] = heap[begin + w];
  } finally {
    vector.delete();
  }
}

let heap: Int32Array | null = null;

/** A word view of the instance's memory, remade when the memory grows (its buffer changes). */
function heapWords(memory: WebAssembly.Memory): Int32Array {
  if (heap === null || heap.buffer !== memory.buffer) heap = new Int32Array(memory.buffer);
  return heap;
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
    // A C++ exception reaches JavaScript as a bare number (its address): nothing to show.
    const message = fatal === undefined
      ? (error instanceof Error
        ? error.message
        : typeof error === "number"
        ? "xgrammar failed on it with an internal error"
        : String(error))
      : fatal.replace(/^.*\[FATAL\]\s*(?:[^:]*\.(?:cc|h):\d+:\s*)?/, "");
    throw new Error(message);
  } finally {
    captured = outer;
  }
}
