/**
 * What a request constrains its output to, in one normalized form per xgrammar entry point,
 * with the key compiled grammars are cached under (the spec's exact text: key order matters,
 * as it orders the properties of the output).
 *
 * Every API form maps onto four: a JSON schema (response_format json_schema, tool arguments),
 * any JSON (json_object), an EBNF grammar (guided_grammar, guided_choice), or a structural tag
 * (guided_regex, tool calls wrapped in a template's tags).
 *
 * @module
 */

import { enumerateIntegerRanges } from "./integer_ranges.ts";

/** A constraint on a request's output; build one with the functions below. */
export type GrammarSpec =
  | {
    /** Output is one JSON value matching `schema`. */
    readonly type: "json_schema";
    /** The schema, as JSON text (its key order is the output's property order). */
    readonly schema: string;
    /** Forbid properties and items the schema does not name (OpenAI's `strict: true`). */
    readonly strict: boolean;
  }
  | {
    /** Output is any one JSON value. */
    readonly type: "json";
  }
  | {
    /** Output matches an EBNF grammar (xgrammar's dialect, GBNF-like; root rule `root`). */
    readonly type: "ebnf";
    /** The grammar text. */
    readonly grammar: string;
  }
  | {
    /** Output matches an xgrammar structural tag (regexes, tagged JSON sections). */
    readonly type: "structural_tag";
    /** The structural tag, as JSON text. */
    readonly tag: string;
    /**
     * The output is JSON with literal tags (tool calls): tokens with control characters or
     * broken UTF-8 are masked, as for JSON (see GrammarCompiler.state).
     */
    readonly jsonText: boolean;
  };

/** A JSON schema constraint (narrow integer ranges enumerated: see integer_ranges.ts). */
export function jsonSchemaSpec(schema: unknown, strict: boolean): GrammarSpec {
  return { type: "json_schema", schema: JSON.stringify(enumerateIntegerRanges(schema)), strict };
}

/** Any JSON value (response_format `json_object`). */
export function jsonSpec(): GrammarSpec {
  return { type: "json" };
}

/** An EBNF grammar (vLLM's `guided_grammar`). */
export function ebnfSpec(grammar: string): GrammarSpec {
  return { type: "ebnf", grammar };
}

/** A regular expression the whole output matches (vLLM's `guided_regex`). */
export function regexSpec(pattern: string): GrammarSpec {
  return structuralTagSpec({ type: "regex", pattern });
}

/** Exactly one of `choices` (vLLM's `guided_choice`). */
export function choiceSpec(choices: readonly string[]): GrammarSpec {
  return ebnfSpec(`root ::= ${choices.map(ebnfString).join(" | ")}`);
}

/**
 * An xgrammar structural tag format (the `format` of `{"type": "structural_tag"}`); `jsonText`:
 * the output is JSON between literal tags, masked as JSON is.
 */
export function structuralTagSpec(format: unknown, jsonText = false): GrammarSpec {
  const tag = JSON.stringify({ type: "structural_tag", format });
  return { type: "structural_tag", tag, jsonText };
}

/** The key a compiled grammar is cached under: equal for equal specs. */
export function specKey(spec: GrammarSpec): string {
  switch (spec.type) {
    case "json_schema":
      return `json_schema:${spec.strict ? "strict" : "loose"}:${spec.schema}`;
    case "json":
      return "json";
    case "ebnf":
      return `ebnf:${spec.grammar}`;
    case "structural_tag":
      return `structural_tag:${spec.jsonText ? "json" : "text"}:${spec.tag}`;
  }
}

/** A string literal of xgrammar's EBNF: double quotes, with `\\`, `"` and controls escaped. */
export function ebnfString(text: string): string {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === '"' || char === "\\") out += `\\${char}`;
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += char;
  }
  return out + '"';
}
