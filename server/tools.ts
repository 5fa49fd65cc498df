/**
 * Tool calls in /v1/chat/completions: the request's `tools`, `tool_choice` and
 * `parallel_tool_calls`, the grammar that enforces `required` and a named function, and the
 * parser that turns the model's text into `tool_calls`.
 *
 * The call format comes from the checkpoint's chat template, which renders the tools:
 * - **hermes** (Qwen 2.5/3, Hermes, templates that mention `<tool_call>`): each call is
 *   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, after optional text;
 * - **llama3_json** (Llama 3.1/3.2 and any other template): the whole output is one or more
 *   `{"name": ..., "parameters": {...}}` objects (`arguments` is accepted too), separated by `;`,
 *   optionally after `<|python_tag|>`.
 *
 * With `auto`, output that has this shape and parses (known names, object arguments) becomes
 * `tool_calls`; anything else, a malformed call included, is returned as text. With `required`
 * or a named function, a grammar makes the output one or more (one with
 * `parallel_tool_calls: false` or a named function) well-formed calls whose arguments match the
 * function's `parameters` schema. `none` renders no tools and parses nothing. A call's
 * `arguments` is the model's own JSON text of the object, which a stream sends as it is written
 * (server/tool_call_scanner.ts).
 *
 * @module
 */

import { enumerateIntegerRanges } from "../engine/grammar/integer_ranges.ts";
import { type GrammarSpec, structuralTagSpec } from "../engine/grammar/spec.ts";
import type { ChatMessage } from "../engine/tokenizer.ts";
import { badField } from "./errors.ts";
import { argumentsText } from "./tool_call_scanner.ts";

type Body = Record<string, unknown>;

/** One function the model may call. */
export interface ToolFunction {
  /** Its name: letters, digits, `_` and `-`, at most 64. */
  readonly name: string;
  /** The JSON schema of its arguments (an object schema). */
  readonly parameters: Record<string, unknown>;
}

/** A request's tools, as the server uses them. */
export interface ToolRequest {
  /** The `tools` as sent (the chat template renders these). */
  readonly tools: readonly unknown[];
  /** The functions by name. */
  readonly functions: ReadonlyMap<string, ToolFunction>;
  /** `auto`, `required`, or the one function the model must call. */
  readonly choice: "auto" | "required" | { readonly name: string };
  /** Whether the model may make several calls in one answer. */
  readonly parallel: boolean;
}

/** How a chat template asks the model to write calls; see the module doc. */
export type ToolCallFormat = "hermes" | "llama3_json";

/** One parsed call, in OpenAI's shape. */
export interface ToolCall {
  /** `call_` and 24 hex digits. */
  readonly id: string;
  /** Always "function". */
  readonly type: "function";
  /** The function and its arguments as JSON text. */
  readonly function: { readonly name: string; readonly arguments: string };
}

/** What an answer held: text before the calls (or all of it), and the calls. */
export interface ParsedAnswer {
  /** The text outside the calls; null when there is none (only whitespace). */
  readonly content: string | null;
  /** The calls; empty when the answer is text. */
  readonly calls: readonly ToolCall[];
}

function isObject(value: unknown): value is Body {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The tools of a chat body, or null when it has none or `tool_choice` is "none"; throws a 400
 * naming the field for a malformed tool or choice.
 */
export function parseToolRequest(body: Body): ToolRequest | null {
  const tools = body.tools;
  const choice = body.tool_choice;
  if (tools === undefined || tools === null || (Array.isArray(tools) && tools.length === 0)) {
    if (choice !== undefined && choice !== null && choice !== "none" && choice !== "auto") {
      throw badField("tool_choice", `needs tools: send "tools" with the functions to call`);
    }
    return null;
  }
  if (!Array.isArray(tools)) throw badField("tools", "must be an array of tools");
  const functions = new Map<string, ToolFunction>();
  tools.forEach((tool, i) => {
    const at = `tools[${i}]`;
    if (!isObject(tool) || tool.type !== "function" || !isObject(tool.function)) {
      throw badField(at, `must be {"type": "function", "function": {"name", "parameters"}}`);
    }
    const name = tool.function.name;
    if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
      throw badField(`${at}.function.name`, "must be 1 to 64 letters, digits, _ or -");
    }
    if (functions.has(name)) throw badField(`${at}.function.name`, `repeats "${name}"`);
    const parameters = tool.function.parameters ?? { type: "object", properties: {} };
    if (!isObject(parameters)) {
      throw badField(`${at}.function.parameters`, "must be a JSON schema object");
    }
    functions.set(name, { name, parameters });
  });
  const parallel = body.parallel_tool_calls ?? true;
  if (typeof parallel !== "boolean") throw badField("parallel_tool_calls", "must be a boolean");
  let parsed: ToolRequest["choice"];
  if (choice === undefined || choice === null || choice === "auto") parsed = "auto";
  else if (choice === "none") return null;
  else if (choice === "required") parsed = "required";
  else if (isObject(choice) && choice.type === "function" && isObject(choice.function)) {
    const name = choice.function.name;
    if (typeof name !== "string" || !functions.has(name)) {
      throw badField(
        "tool_choice",
        `names function ${JSON.stringify(name)}, which is not in tools (${
          [...functions.keys()].join(", ")
        })`,
      );
    }
    parsed = { name };
  } else {
    throw badField(
      "tool_choice",
      `must be "none", "auto", "required" or {"type": "function", "function": {"name"}}`,
    );
  }
  return { tools, functions, choice: parsed, parallel };
}

/**
 * Messages as chat templates expect them: an assistant's `tool_calls` arguments as objects (the
 * API sends JSON text; Llama's and Qwen's templates serialize them with `tojson`), as vLLM does.
 */
export function templateMessages(messages: readonly ChatMessage[]): ChatMessage[] {
  return messages.map((m) => {
    if (m.role !== "assistant" || !Array.isArray(m.tool_calls)) return m;
    return {
      ...m,
      tool_calls: m.tool_calls.map((call: unknown) => {
        if (!isObject(call) || !isObject(call.function)) return call;
        const args = call.function.arguments;
        if (typeof args !== "string") return call;
        try {
          return { ...call, function: { ...call.function, arguments: JSON.parse(args) } };
        } catch {
          return call;
        }
      }),
    };
  });
}

/** The call format a chat template asks for: hermes when it mentions `<tool_call>`. */
export function toolCallFormat(template: string | null): ToolCallFormat {
  return template !== null && template.includes("<tool_call>") ? "hermes" : "llama3_json";
}

/** The text before and around each call in `format`. */
const OPENERS: Record<ToolCallFormat, readonly string[]> = {
  hermes: ["<tool_call>"],
  llama3_json: ["<|python_tag|>", "{"],
};

/**
 * The grammar that enforces `required` or a named function: one or more calls (one without
 * parallel calls or for a named function), each with a function's name and arguments matching
 * its schema; null for `auto`.
 */
export function toolGrammar(request: ToolRequest, format: ToolCallFormat): GrammarSpec | null {
  if (request.choice === "auto") return null;
  const named = typeof request.choice === "object" ? request.choice.name : null;
  const functions = named === null
    ? [...request.functions.values()]
    : [request.functions.get(named)!];
  const key = format === "hermes" ? "arguments" : "parameters";
  const tags = functions.map((f) => ({
    type: "tag",
    begin: `${format === "hermes" ? "<tool_call>" : ""}{"name": ${
      JSON.stringify(f.name)
    }, "${key}": `,
    content: { type: "json_schema", json_schema: enumerateIntegerRanges(f.parameters) },
    end: format === "hermes" ? "}</tool_call>" : "}",
  }));
  return structuralTagSpec({
    type: "tags_with_separator",
    tags,
    // xgrammar refuses an empty separator; a space keeps the JSON-text mask (no newlines).
    separator: format === "hermes" ? " " : "; ",
    at_least_one: true,
    stop_after_first: named !== null || !request.parallel,
  }, true);
}

/**
 * Splits an answer into text and calls, as the module doc says; a malformed call makes the
 * whole answer text.
 */
export function parseToolCalls(
  text: string,
  format: ToolCallFormat,
  functions: ReadonlyMap<string, ToolFunction>,
): ParsedAnswer {
  const asText = { content: text.trim() === "" ? null : text, calls: [] };
  const start = callStart(text, format);
  if (start < 0) return asText;
  const calls: ToolCall[] = [];
  let rest = text.slice(start);
  if (format === "hermes") {
    while (rest.trim() !== "") {
      const m = /^\s*<tool_call>([\s\S]*?)<\/tool_call>/.exec(rest);
      if (m === null) return asText;
      const call = toolCall(m[1], functions);
      if (call === null) return asText;
      calls.push(call);
      rest = rest.slice(m[0].length);
    }
  } else {
    rest = rest.trimStart().replace(/^<\|python_tag\|>/, "");
    const values = jsonSequence(rest);
    if (values === null) return asText;
    for (const value of values) {
      const call = toolCall(value, functions);
      if (call === null) return asText;
      calls.push(call);
    }
  }
  if (calls.length === 0) return asText;
  const before = text.slice(0, start);
  return { content: before.trim() === "" ? null : before, calls };
}

/**
 * Where the calls begin in `text`, or -1: for hermes the first `<tool_call>`, for llama3_json
 * the start when the trimmed text opens with `{` or `<|python_tag|>`.
 */
export function callStart(text: string, format: ToolCallFormat): number {
  if (format === "hermes") return text.indexOf("<tool_call>");
  const trimmed = text.trimStart();
  return OPENERS.llama3_json.some((o) => trimmed.startsWith(o)) ? text.length - trimmed.length : -1;
}

/**
 * Whether `text` (the unsent tail of a streamed answer) may still turn into the start of the
 * calls, so a stream holds it back: whitespace, or a prefix of an opener (for hermes anywhere
 * from a `<`; for llama3_json only at the start of the answer, `atStart`).
 */
export function mayOpenCalls(text: string, format: ToolCallFormat, atStart: boolean): boolean {
  const trimmed = text.trimStart();
  if (format === "llama3_json" && !atStart) return false;
  if (trimmed === "") return format === "llama3_json" || text === "";
  return OPENERS[format].some((o) => o.startsWith(trimmed) || trimmed.startsWith(o));
}

/**
 * One call from its JSON text: a known name and object arguments, else null. The arguments are
 * the model's raw text of the value (valid JSON, as it parsed), re-serialized only when the
 * object has more than one arguments member.
 */
function toolCall(json: string, functions: ReadonlyMap<string, ToolFunction>): ToolCall | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (!isObject(value) || typeof value.name !== "string" || !functions.has(value.name)) {
    return null;
  }
  const given = value.arguments ?? value.parameters;
  const args = given ?? {};
  if (!isObject(args)) return null;
  // The model's own text of the arguments, as a stream sends it (server/tool_call_scanner.ts).
  const raw = given === undefined || given === null ? null : argumentsText(json);
  return {
    id: toolCallId(),
    type: "function",
    function: { name: value.name, arguments: raw ?? JSON.stringify(args) },
  };
}

/** A new call id: `call_` and 24 hex digits. */
export function toolCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/**
 * The texts of JSON objects (or arrays) one after another, separated by `;` and whitespace;
 * null when one does not close.
 */
function jsonSequence(text: string): string[] | null {
  const values: string[] = [];
  let at = 0;
  while (at < text.length) {
    while (at < text.length && /[\s;]/.test(text[at])) at++;
    if (at >= text.length) break;
    const end = jsonEnd(text, at);
    if (end < 0) return null;
    values.push(text.slice(at, end));
    at = end;
  }
  return values;
}

/** The end of the JSON object or array starting at `from` (brackets outside strings), or -1. */
function jsonEnd(text: string, from: number): number {
  if (text[from] !== "{" && text[from] !== "[") return -1;
  let depth = 0, inString = false;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (--depth === 0) return i + 1;
    }
  }
  return -1;
}
