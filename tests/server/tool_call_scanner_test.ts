/**
 * The incremental tool-call scanner (server/tool_call_scanner.ts) on hand-written answers in
 * both call formats, pushed whole, a character at a time and cut at every pair of places: each
 * call opens with its name before any of its arguments, and its fragments concatenate to the
 * hand-written raw arguments text, which is what the non-streamed parser (parseToolCalls)
 * returns too.
 */

import assert from "node:assert/strict";
import { argumentsText, ToolCallScanner } from "../../server/tool_call_scanner.ts";
import { parseToolCalls, type ToolCallFormat, type ToolFunction } from "../../server/tools.ts";

/** What a scanner reported for each call: its name and its fragments. */
function scan(pieces: readonly string[]): { name: string; fragments: string[] }[] {
  const calls: { name: string; fragments: string[] }[] = [];
  const scanner = new ToolCallScanner({
    open(index, name) {
      assert.deepStrictEqual(index, calls.length, "calls open in order");
      calls.push({ name, fragments: [] });
    },
    arguments(index, fragment) {
      assert(index < calls.length, `arguments of call ${index} before it opened`);
      assert.notDeepStrictEqual(fragment, "", "an empty fragment");
      calls[index].fragments.push(fragment);
    },
  });
  for (const piece of pieces) scanner.push(piece);
  assert.deepStrictEqual(scanner.calls, calls.length);
  return calls;
}

/** The answer cut at the given places. */
function cut(text: string, at: readonly number[]): string[] {
  const pieces = [];
  let from = 0;
  for (const i of at) {
    pieces.push(text.slice(from, i));
    from = i;
  }
  pieces.push(text.slice(from));
  return pieces;
}

const FUNCTIONS = new Map<string, ToolFunction>([
  ["f", { name: "f", parameters: {} }],
  ["g", { name: "g", parameters: {} }],
]);

// Strings holding braces, brackets, escaped quotes and backslashes; nested objects and arrays.
const TRICKY = String.raw`{"s": "a}{\"b\\", "n": {"m": [1, {"k": "]}"}], "e": {}}, "t": true}`;
const SECOND = String.raw`{"q": "\\\"}", "list": [[], [{"x": null}]], "v": -1.5e3}`;

const CASES: { format: ToolCallFormat; text: string; calls: [string, string][] }[] = [
  {
    format: "hermes",
    text: `<tool_call>{"name": "f", "arguments": ${TRICKY}}</tool_call> ` +
      `<tool_call>{"name": "g", "arguments": ${SECOND}}</tool_call>`,
    calls: [["f", TRICKY], ["g", SECOND]],
  },
  {
    format: "llama3_json",
    text: `<|python_tag|>{"name": "f", "parameters": ${TRICKY}}; ` +
      `{"name": "g", "parameters": ${SECOND}}`,
    calls: [["f", TRICKY], ["g", SECOND]],
  },
  {
    // Spaces and newlines around the value are not part of it; other members are skipped.
    format: "hermes",
    text: `<tool_call>\n{"name": "g", "id": [1, "}"], "n": 7, "arguments":\n  ${SECOND}\n}` +
      `\n</tool_call>`,
    calls: [["g", SECOND]],
  },
];

Deno.test("ToolCallScanner: fragments rebuild each call's raw arguments, however cut", () => {
  for (const { format, text, calls } of CASES) {
    const expected = calls.map(([name, args]) => ({ name, args }));
    const joined = (pieces: readonly string[]) =>
      scan(pieces).map((c) => ({ name: c.name, args: c.fragments.join("") }));
    assert.deepStrictEqual(joined([text]), expected, `${format}: whole`);
    const perChar = scan([...text]);
    assert.deepStrictEqual(
      perChar.map((c) => c.fragments.length),
      calls.map(([, args]) => args.length),
      `${format}: one fragment per character`,
    );
    for (let i = 1; i < text.length; i++) {
      for (let j = i; j < text.length; j++) {
        assert.deepStrictEqual(joined(cut(text, [i, j])), expected, `${format}: cut ${i}, ${j}`);
      }
    }
    // The non-streamed answer returns the same text, and it is valid JSON.
    const parsed = parseToolCalls(text, format, FUNCTIONS);
    assert.deepStrictEqual(
      parsed.calls.map((c) => ({ name: c.function.name, args: c.function.arguments })),
      expected,
    );
    for (const [, args] of calls) JSON.parse(args);
  }
});

Deno.test("ToolCallScanner: between calls only before the first and after each", () => {
  const scanner = new ToolCallScanner({ open() {}, arguments() {} });
  assert(scanner.between);
  scanner.push('<tool_call>{"name": "f", "arguments": {"a": "}');
  assert(!scanner.between);
  scanner.push('"}}</tool_call>');
  assert(scanner.between);
  scanner.push('; {"name": "g"');
  assert(!scanner.between);
});

Deno.test("ToolCallScanner: arguments before the name are sent once the name is known", () => {
  const calls = scan(cut('{"arguments": {"a": "{"}, "name": "f"}', [5, 20, 30]));
  assert.deepStrictEqual(calls, [{ name: "f", fragments: ['{"a": "{"}'] }]);
});

Deno.test("argumentsText: the one arguments value's raw text, or null", () => {
  assert.deepStrictEqual(
    argumentsText('{"name": "f", "arguments": {"x": [1, 2]} }'),
    '{"x": [1, 2]}',
  );
  assert.deepStrictEqual(argumentsText('{"name": "f", "arguments": 12}'), "12");
  assert.deepStrictEqual(argumentsText('{"name": "f"}'), null);
  // Two argument members: JSON.parse keeps one; the caller re-serializes it.
  assert.deepStrictEqual(argumentsText('{"arguments": {}, "parameters": {"a": 1}}'), null);
  // parseToolCalls then falls back to compact JSON of what JSON.parse kept.
  const both = parseToolCalls(
    '<tool_call>{"name": "f", "arguments": {"b": 2}, "arguments": {"a": 1}}</tool_call>',
    "hermes",
    FUNCTIONS,
  );
  assert.deepStrictEqual(both.calls[0].function.arguments, '{"a":1}');
});
