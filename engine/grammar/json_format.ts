/**
 * How constrained JSON is laid out: on one line with `, ` and `: ` between items, as Python's
 * `json.dumps` writes it and as models are used to. Fixed whitespace keeps a weak or random
 * model from spending its tokens on blank space, and the output deterministic in shape.
 *
 * @module
 */

/**
 * xgrammar's arguments for a JSON schema (`Grammar.fromJSONSchema`, `compileJSONSchema`), in its
 * order: the check worker and the compiler build the grammar from one list, so a schema that
 * passes the check is the grammar that compiles.
 */
export function jsonSchemaArgs(
  schema: string,
  strict: boolean,
): [
  schema: string,
  anyWhitespace: boolean,
  indent: number,
  separators: [string, string],
  strict: boolean,
] {
  // No free whitespace, one line (indent -1), Python's separators.
  return [schema, false, -1, [", ", ": "], strict];
}
