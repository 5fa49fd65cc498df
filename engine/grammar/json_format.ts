/**
 * How constrained JSON is laid out: on one line with `, ` and `: ` between items, as Python's
 * `json.dumps` writes it and as models are used to. Fixed whitespace keeps a weak or random
 * model from spending its tokens on blank space, and the output deterministic in shape.
 *
 * @module
 */

/** xgrammar's JSON-schema layout arguments. */
export const JSON_SCHEMA_FORMAT: {
  readonly anyWhitespace: boolean;
  readonly indent: number;
  readonly separators: [string, string];
} = { anyWhitespace: false, indent: -1, separators: [", ", ": "] };
