/**
 * Grammars for one model's vocabulary: each spec is checked (in a throwaway xgrammar instance,
 * see check_worker.ts), compiled once and cached under its key; each request then gets its own
 * {@link GrammarState} over the compiled grammar.
 *
 * @module
 */

import type { Tokenizer } from "../tokenizer.ts";
import { jsonSchemaArgs } from "./json_format.ts";
import { type GrammarSpec, specKey } from "./spec.ts";
import { bitmaskWords, GrammarState } from "./state.ts";
import {
  captureErrors,
  type CompiledGrammar,
  loadXgrammar,
  type XGrammar,
  type XGrammarCompiler,
} from "./xgrammar.ts";

/** A grammar spec that xgrammar refuses (a bad schema, EBNF or regex), with its reason. */
export class GrammarError extends RangeError {
  /**
   * Creates the error.
   * @param message what is wrong with the grammar, as xgrammar names it
   */
  constructor(message: string) {
    super(message);
    this.name = "GrammarError";
  }
}

/** A compiled grammar and what compiling it cost. */
export interface CompiledSpec {
  /** The cache key. */
  readonly key: string;
  /** The spec it was compiled from. */
  readonly spec: GrammarSpec;
  /** The xgrammar compiled grammar (owned by the compiler's cache). */
  readonly compiled: CompiledGrammar;
  /** Milliseconds the check and compile took when it was compiled (not on a cache hit). */
  readonly compileMs: number;
}

/** Counters for tests and metrics. */
export interface GrammarStats {
  /** Grammars compiled. */
  readonly compiled: number;
  /** Requests served from the cache. */
  readonly hits: number;
  /** Specs refused. */
  readonly refused: number;
}

/** How long a check may take before the spec is refused (a pathological grammar). */
const CHECK_DEADLINE_MS = 20_000;

/** Compiles and caches grammars for one tokenizer; see the module doc. */
export class GrammarCompiler {
  readonly #xgrammar: XGrammar;
  readonly #compiler: XGrammarCompiler;
  readonly #cache = new Map<string, Promise<CompiledSpec>>();
  #checker: Worker | null = null;
  #checks: Promise<unknown> = Promise.resolve();
  #nextCheck = 0;
  #compiled = 0;
  #hits = 0;
  #refused = 0;
  #closed = false;

  readonly #jsonSafe: Int32Array;

  private constructor(
    xgrammar: XGrammar,
    compiler: XGrammarCompiler,
    readonly vocabSize: number,
    jsonSafe: Int32Array,
    readonly stopTokenIds: readonly number[],
  ) {
    this.#xgrammar = xgrammar;
    this.#compiler = compiler;
    this.#jsonSafe = jsonSafe;
    this.#startChecker();
  }

  /**
   * Builds xgrammar's view of `tokenizer`'s vocabulary: `vocabSize` rows (the logits' width;
   * ids past the tokenizer's vocabulary, and special tokens, are never allowed), with
   * `stopTokenIds` the ids that end a finished grammar.
   */
  static async create(
    tokenizer: Tokenizer,
    vocabSize: number,
    stopTokenIds: readonly number[],
  ): Promise<GrammarCompiler> {
    const xgrammar = await loadXgrammar();
    const { tokens, type, prependSpace } = grammarVocabulary(tokenizer, vocabSize, stopTokenIds);
    const info = await xgrammar.TokenizerInfo.createTokenizerInfo(
      tokens,
      type,
      prependSpace,
      vocabSize,
      [...stopTokenIds],
    );
    // xgrammar's own cache is off: this one also holds the check, and is keyed by Denali's spec.
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    return new GrammarCompiler(
      xgrammar,
      compiler,
      vocabSize,
      jsonSafeMask(tokenizer, tokens, stopTokenIds),
      [...stopTokenIds],
    );
  }

  /** Counters: grammars compiled, cache hits, specs refused. */
  get stats(): GrammarStats {
    return { compiled: this.#compiled, hits: this.#hits, refused: this.#refused };
  }

  /**
   * The compiled grammar of `spec`, compiled on first use and cached (concurrent requests for
   * one spec share one compile).
   *
   * @throws GrammarError naming what xgrammar refuses in the spec
   */
  compile(spec: GrammarSpec): Promise<CompiledSpec> {
    if (this.#closed) return Promise.reject(new Error("the grammar compiler is closed"));
    const key = specKey(spec);
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      this.#hits++;
      return cached.then((c) => c.compileMs === 0 ? c : { ...c, compileMs: 0 });
    }
    const compiling = this.#compileNew(key, spec);
    this.#cache.set(key, compiling);
    // A refused spec is not kept: the cache holds only grammars.
    compiling.catch(() => this.#cache.delete(key));
    return compiling;
  }

  /** A fresh matcher state for one request over a compiled grammar. */
  async state(compiled: CompiledSpec): Promise<GrammarState> {
    const matcher = await this.#xgrammar.GrammarMatcher.createGrammarMatcher(
      compiled.compiled as Parameters<XGrammar["GrammarMatcher"]["createGrammarMatcher"]>[0],
    );
    // xgrammar's JSON strings admit raw control characters, which JSON forbids (and compact
    // JSON never needs outside strings), and bytes that never join into valid UTF-8, which
    // decode to U+FFFD and break maxLength: JSON grammars also mask those tokens (a character
    // the vocabulary only has in pieces can still be written as a \u escape).
    const spec = compiled.spec;
    const json = spec.type === "json_schema" || spec.type === "json" ||
      (spec.type === "structural_tag" && spec.jsonText);
    return new GrammarState(
      matcher,
      this.vocabSize,
      json ? this.#jsonSafe : null,
      this.stopTokenIds,
    );
  }

  /** Stops the checking worker and frees the compiled grammars. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#checker?.terminate();
    this.#checker = null;
    for (const compiling of this.#cache.values()) {
      await compiling.then((c) => c.compiled.dispose(), () => {});
    }
    this.#cache.clear();
    this.#compiler.dispose();
  }

  async #compileNew(key: string, spec: GrammarSpec): Promise<CompiledSpec> {
    const start = performance.now();
    if (spec.type !== "json") {
      const problem = await this.#check(spec);
      if (problem !== null) {
        this.#refused++;
        throw new GrammarError(problem);
      }
    }
    const compiler = this.#compiler;
    const compiled = await captureErrors<CompiledGrammar>(() =>
      spec.type === "json_schema"
        ? compiler.compileJSONSchema(...jsonSchemaArgs(spec.schema, spec.strict))
        : spec.type === "json"
        ? compiler.compileBuiltinJSONGrammar()
        : spec.type === "ebnf"
        ? compiler.compileGrammar(spec.grammar)
        : compiler.compileStructuralTag(spec.tag)
    );
    this.#compiled++;
    return { key, spec, compiled, compileMs: performance.now() - start };
  }

  /** Checks `spec` in the worker, one check at a time: null when good, else the problem. */
  #check(spec: GrammarSpec): Promise<string | null> {
    const run = this.#checks.then(() => this.#checkNow(spec));
    this.#checks = run.catch(() => {});
    return run;
  }

  #checkNow(spec: GrammarSpec): Promise<string | null> {
    const worker = this.#checker ?? this.#startChecker();
    const id = this.#nextCheck++;
    return new Promise<string | null>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", onError);
      };
      const replace = () => {
        worker.terminate();
        if (this.#checker === worker) this.#checker = null;
        if (!this.#closed) this.#startChecker();
      };
      const onMessage = (event: MessageEvent<{ id: number; error: string | null }>) => {
        if (event.data.id !== id) return;
        done();
        // A refused spec aborted the worker's xgrammar instance: start a fresh one.
        if (event.data.error !== null) replace();
        resolve(event.data.error);
      };
      const onError = (event: ErrorEvent) => {
        event.preventDefault();
        done();
        replace();
        reject(new Error(`the grammar check worker failed: ${event.message}`));
      };
      const timer = setTimeout(() => {
        done();
        replace();
        resolve(`xgrammar did not finish checking the grammar in ${CHECK_DEADLINE_MS} ms`);
      }, CHECK_DEADLINE_MS);
      worker.addEventListener("message", onMessage);
      worker.addEventListener("error", onError);
      worker.postMessage({ id, spec });
    });
  }

  #startChecker(): Worker {
    this.#checker = new Worker(new URL("./check_worker.ts", import.meta.url), { type: "module" });
    return this.#checker;
  }
}

/**
 * The vocabulary as xgrammar reads it: each id's token in the tokenizer's own encoding, with the
 * encoding's name; special tokens other than the stop tokens, and ids past the vocabulary, are ""
 * (which xgrammar never allows). A vocabulary of `<0xNN>` byte tokens is SentencePiece byte fallback, one of GPT-2's
 * shifted bytes (`Ġ` for a space) is byte-level BPE, anything else is taken as raw text.
 */
export function grammarVocabulary(
  tokenizer: Tokenizer,
  vocabSize: number,
  stopTokenIds: readonly number[],
): { tokens: string[]; type: "byte_level" | "byte_fallback" | "raw"; prependSpace: boolean } {
  const special = new Set(tokenizer.specialIds().filter((id) => !stopTokenIds.includes(id)));
  const tokens: string[] = new Array(vocabSize);
  let fallback = false, byteLevel = false;
  for (let id = 0; id < vocabSize; id++) {
    const token = special.has(id) ? undefined : tokenizer.idToToken(id);
    tokens[id] = token ?? "";
    if (token === undefined) continue;
    if (/^<0x[0-9A-Fa-f]{2}>$/.test(token)) fallback = true;
    else if (token.includes("\u0120") || token.includes("\u010a")) byteLevel = true;
  }
  const type = fallback ? "byte_fallback" : byteLevel ? "byte_level" : "raw";
  // SentencePiece models that prepend "▁" to the text encode "a" as "▁a".
  const first = tokenizer.encode("a", { addSpecialTokens: false })[0];
  const prependSpace = fallback && (tokenizer.idToToken(first) ?? "").startsWith("\u2581");
  return { tokens, type, prependSpace };
}

/**
 * A bitmask allowing the stop tokens and every token that is whole UTF-8 text without control
 * characters (U+0000 to U+001F).
 */
function jsonSafeMask(
  tokenizer: Tokenizer,
  tokens: readonly string[],
  stopTokenIds: readonly number[],
): Int32Array {
  const mask = new Int32Array(bitmaskWords(tokens.length));
  for (let id = 0; id < tokens.length; id++) {
    if (tokens[id] === "") continue;
    const stop = stopTokenIds.includes(id);
    if (!stop && !jsonSafeText(tokenizer.decode([id]))) continue;
    mask[id >> 5] |= 1 << (id & 31);
  }
  return mask;
}

function jsonSafeText(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0xfffd) return false;
  }
  return true;
}
