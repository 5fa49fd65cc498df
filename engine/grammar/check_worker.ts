/**
 * A worker that checks grammar specs in its own xgrammar instance: a bad spec aborts that
 * instance (see xgrammar.ts), so the worker answers with xgrammar's message and its owner
 * replaces it, while the instance that serves never sees the bad spec.
 *
 * Messages: in `{ id, spec }` (a GrammarSpec), out `{ id, error }` (null when the spec is good).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { GrammarSpec } from "./spec.ts";
import { captureErrors, loadXgrammar } from "./xgrammar.ts";
import { jsonSchemaArgs } from "./json_format.ts";

// The handler is installed before the bundle loads: a message that arrives while it loads
// would otherwise be dropped.
const xgrammar = loadXgrammar();

self.onmessage = async (event: MessageEvent<{ id: number; spec: GrammarSpec }>) => {
  const { id, spec } = event.data;
  try {
    const { Grammar } = await xgrammar;
    await captureErrors(async () => {
      const grammar = spec.type === "json_schema"
        ? await Grammar.fromJSONSchema(...jsonSchemaArgs(spec.schema, spec.strict))
        : spec.type === "json"
        ? await Grammar.builtinJSONGrammar()
        : spec.type === "ebnf"
        ? await Grammar.fromEBNF(spec.grammar)
        : await Grammar.fromStructuralTag(spec.tag);
      grammar.dispose();
    });
    self.postMessage({ id, error: null });
  } catch (error) {
    self.postMessage({ id, error: (error as Error).message });
  }
};
