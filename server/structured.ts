/**
 * Structured-output fields of a request body, as one grammar spec for the engine:
 * - OpenAI's `response_format`: `{"type": "text"}` (none), `{"type": "json_object"}` (any JSON
 *   object or array), `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`;
 * - vLLM's extras: `guided_json` (a schema, object or JSON text), `guided_regex`,
 *   `guided_choice` (a list of strings) and `guided_grammar` (EBNF in xgrammar's dialect), with
 *   `guided_decoding_backend` accepted when it names xgrammar (or "auto").
 *
 * At most one of them per request. Shapes are checked here (400 naming the field); whether
 * xgrammar accepts the schema, regex or grammar is checked when it compiles (a 400 naming the
 * field and xgrammar's reason, see routes.ts).
 *
 * @module
 */

import {
  choiceSpec,
  ebnfSpec,
  type GrammarSpec,
  jsonSchemaSpec,
  jsonSpec,
  regexSpec,
} from "../engine/grammar/spec.ts";
import { badField } from "./errors.ts";

type Body = Record<string, unknown>;

/** A request's output constraint and the field it came from (for error messages). */
export interface OutputConstraint {
  /** What the output must match. */
  readonly spec: GrammarSpec;
  /** The request field that asked for it, e.g. "response_format.json_schema.schema". */
  readonly field: string;
}

function isObject(value: unknown): value is Body {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The schema of a JSON-schema field: an object or boolean, or JSON text of one. */
function schemaOf(value: unknown, field: string): unknown {
  let schema = value;
  if (typeof value === "string") {
    try {
      schema = JSON.parse(value);
    } catch (error) {
      throw badField(field, `is not valid JSON: ${(error as Error).message}`);
    }
  }
  if (!isObject(schema) && typeof schema !== "boolean") {
    throw badField(field, "must be a JSON schema (an object, or true/false)");
  }
  if (schema === false) throw badField(field, "is `false`, which no output can match");
  return schema === true ? {} : schema;
}

function fromResponseFormat(format: unknown): OutputConstraint | null {
  const field = "response_format";
  if (!isObject(format)) throw badField(field, `must be an object with a "type"`);
  switch (format.type) {
    case "text":
      return null;
    case "json_object":
      return { spec: jsonSpec(), field };
    case "json_schema": {
      const inner = format.json_schema;
      const at = `${field}.json_schema`;
      if (!isObject(inner)) {
        throw badField(at, `must be an object {"name", "schema", "strict"}`);
      }
      if (
        inner.strict !== undefined && inner.strict !== null && typeof inner.strict !== "boolean"
      ) {
        throw badField(`${at}.strict`, "must be a boolean");
      }
      // OpenAI's `schema`; some clients send vLLM's older `json_schema` key inside.
      const raw = inner.schema ?? inner.json_schema;
      if (raw === undefined || raw === null) throw badField(`${at}.schema`, "is required");
      return {
        spec: jsonSchemaSpec(schemaOf(raw, `${at}.schema`), inner.strict === true),
        field: `${at}.schema`,
      };
    }
    default:
      throw badField(
        `${field}.type`,
        `must be "text", "json_object" or "json_schema", got ${JSON.stringify(format.type)}`,
      );
  }
}

/**
 * The output constraint `body` asks for, or null; throws a 400 naming the field when a field is
 * malformed or two ask at once.
 */
export function parseOutputConstraint(body: Body): OutputConstraint | null {
  const found: OutputConstraint[] = [];
  const given = (key: string) => body[key] !== undefined && body[key] !== null;
  if (given("response_format")) {
    const c = fromResponseFormat(body.response_format);
    if (c !== null) found.push(c);
  }
  if (given("guided_json")) {
    found.push({
      spec: jsonSchemaSpec(schemaOf(body.guided_json, "guided_json"), false),
      field: "guided_json",
    });
  }
  if (given("guided_regex")) {
    const pattern = body.guided_regex;
    if (typeof pattern !== "string" || pattern.length === 0) {
      throw badField("guided_regex", "must be a non-empty string (a regular expression)");
    }
    found.push({ spec: regexSpec(pattern), field: "guided_regex" });
  }
  if (given("guided_choice")) {
    const choices = body.guided_choice;
    if (
      !Array.isArray(choices) || choices.length === 0 ||
      !choices.every((c) => typeof c === "string" && c.length > 0)
    ) {
      throw badField("guided_choice", "must be a non-empty array of non-empty strings");
    }
    found.push({ spec: choiceSpec(choices), field: "guided_choice" });
  }
  if (given("guided_grammar")) {
    const grammar = body.guided_grammar;
    if (typeof grammar !== "string" || grammar.trim().length === 0) {
      throw badField("guided_grammar", "must be a non-empty string (an EBNF grammar)");
    }
    found.push({ spec: ebnfSpec(grammar), field: "guided_grammar" });
  }
  if (given("guided_decoding_backend")) {
    const backend = body.guided_decoding_backend;
    if (typeof backend !== "string" || !/^(xgrammar|auto)(:.*)?$/.test(backend)) {
      throw badField(
        "guided_decoding_backend",
        `this server decodes with xgrammar only; send "xgrammar" or "auto", or leave it out`,
      );
    }
  }
  if (found.length > 1) {
    throw badField(
      found[1].field.split(".")[0],
      `cannot be combined with ${found[0].field.split(".")[0]}: send one output constraint`,
    );
  }
  return found[0] ?? null;
}
