/**
 * Tool calls through the server, with the two template styles of tests/fixtures/tool_templates
 * (Qwen/Hermes `<tool_call>` and Llama 3.1 JSON) over the tiny model's shape with random weights:
 * `required` and a named function always give calls whose arguments parse and that ajv validates
 * against the function's schema; with `auto`, a template-shaped call in the output (forced here
 * with guided_choice) is parsed and a malformed one comes back as text; streamed and
 * non-streamed answers agree; tool and tool-call messages render; bad tools are 400s.
 */

import assert from "node:assert/strict";
import { Ajv } from "npm:ajv@8.17.1";
import { loadModelConfig } from "../../models/config.ts";
import { parseToolCalls, type ToolFunction } from "../../server/tools.ts";
import { assertApiError, startTestServer, TINY_MODEL_DIR } from "../support/server.ts";

const TEMPLATES = new URL("../fixtures/tool_templates/", import.meta.url).pathname;

const TOOLS = [
  {
    type: "function" as const,
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", maxLength: 8 },
          unit: { enum: ["c", "f"] },
        },
        required: ["city", "unit"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function" as const,
    function: {
      name: "add",
      parameters: {
        type: "object",
        properties: {
          a: { type: "integer", minimum: 0, maximum: 99 },
          b: { type: "integer", minimum: 0, maximum: 99 },
          exact: { type: "boolean" },
        },
        required: ["a", "b"],
        additionalProperties: false,
      },
    },
  },
];

/** A function tool call as the client types it. */
type FunctionCall = { id: string; function: { name: string; arguments: string } };

const ajv = new Ajv({ strict: false });
const validators = new Map(
  TOOLS.map((t) => [t.function.name, ajv.compile(t.function.parameters)]),
);

/** Asserts each call names a tool and carries arguments its schema accepts. */
function assertCalls(
  calls: readonly { function: { name: string; arguments: string } }[],
  what: string,
): void {
  assert(calls.length > 0, `${what}: no calls`);
  for (const call of calls) {
    const validate = validators.get(call.function.name);
    assert(validate, `${what}: unknown function ${call.function.name}`);
    const args = JSON.parse(call.function.arguments);
    assert(
      validate(args),
      `${what}: ${call.function.arguments}: ${JSON.stringify(validate.errors)}`,
    );
  }
}

/** The calls and finish reason a streamed answer assembles from its deltas. */
async function streamed(
  stream: AsyncIterable<{
    choices: {
      delta: {
        content?: string | null;
        tool_calls?: {
          index: number;
          id?: string;
          function?: { name?: string; arguments?: string };
        }[];
      };
      finish_reason: string | null;
    }[];
  }>,
): Promise<
  { content: string; calls: { name: string; arguments: string }[]; reason: string | null }
> {
  let content = "";
  const calls: { name: string; arguments: string }[] = [];
  let reason: string | null = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice === undefined) continue;
    content += choice.delta.content ?? "";
    for (const delta of choice.delta.tool_calls ?? []) {
      calls[delta.index] ??= { name: "", arguments: "" };
      if (delta.id !== undefined) assert.match(delta.id, /^call_[0-9a-f]{24}$/);
      calls[delta.index].name += delta.function?.name ?? "";
      calls[delta.index].arguments += delta.function?.arguments ?? "";
    }
    reason = choice.finish_reason ?? reason;
  }
  return { content, calls, reason };
}

/**
 * The tool calls of each of `n` choices of a raw SSE answer, checking each delta's shape: a
 * call's first delta carries index, id, type and name with empty arguments; later ones carry
 * only index and an arguments fragment. No content comes with forced calls.
 */
async function rawToolDeltas(
  res: Response,
  n: number,
): Promise<{ calls: { name: string; fragments: string[] }[]; reason: string | null }[]> {
  assert.deepStrictEqual(res.status, 200);
  const out = Array.from({ length: n }, () => ({
    calls: [] as { name: string; fragments: string[] }[],
    reason: null as string | null,
  }));
  const lines = (await res.text()).split("\n").filter((l) => l.startsWith("data: {"));
  for (const line of lines) {
    const choice = JSON.parse(line.slice(6)).choices[0];
    if (choice === undefined) continue;
    const into = out[choice.index];
    assert(!choice.delta.content, `content with forced calls: ${line}`);
    into.reason = choice.finish_reason ?? into.reason;
    for (const delta of choice.delta.tool_calls ?? []) {
      if (delta.index === into.calls.length) {
        assert.match(delta.id, /^call_[0-9a-f]{24}$/);
        assert.deepStrictEqual(Object.keys(delta).sort(), ["function", "id", "index", "type"]);
        assert.deepStrictEqual(delta.type, "function");
        assert.deepStrictEqual(delta.function.arguments, "", line);
        assert(typeof delta.function.name === "string" && delta.function.name !== "", line);
        into.calls.push({ name: delta.function.name, fragments: [] });
      } else {
        assert.deepStrictEqual(delta.index, into.calls.length - 1, `out of order: ${line}`);
        assert.deepStrictEqual(Object.keys(delta).sort(), ["function", "index"], line);
        assert.deepStrictEqual(Object.keys(delta.function), ["arguments"], line);
        assert(delta.function.arguments !== "", `an empty fragment: ${line}`);
        into.calls[delta.index].fragments.push(delta.function.arguments);
      }
    }
  }
  return out;
}

for (const style of ["hermes", "llama3"] as const) {
  Deno.test({
    name: `tool calls through the server (${style} template)`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      const served = await startTestServer(
        { kvBlocks: 8192, blockSize: 4, maxRunning: 16, maxBatchedTokens: 512, maxModelLen: 4096 },
        {
          modelDir: {
            // A longer context than the checkpoint's: the tools' JSON is about one token a byte.
            config: { ...await loadModelConfig(TINY_MODEL_DIR), maxPositionEmbeddings: 4096 },
            randomWeights: true,
            seed: 3,
            tokenizerDir: `${TEMPLATES}${style}`,
          },
        },
      );
      const { client, model, post, engine } = served;
      const messages = [{ role: "user" as const, content: "Weather in Oslo?" }];
      try {
        await t.step("the template renders the tools", async () => {
          const prompt = await engine.prepare(messages, { tools: TOOLS });
          assert.match(prompt.text ?? "", /get_weather/);
          assert.match(prompt.text ?? "", /"maxLength": ?8/);
        });

        await t.step("required: every answer is calls that validate (ajv)", async () => {
          const answers = await Promise.all(
            Array.from({ length: 16 }, (_, seed) =>
              client.chat.completions.create({
                model,
                messages,
                tools: TOOLS,
                tool_choice: "required",
                parallel_tool_calls: seed % 2 === 0,
                max_tokens: 300,
                seed,
              })),
          );
          answers.forEach((answer, seed) => {
            const choice = answer.choices[0];
            assert.deepStrictEqual(choice.finish_reason, "tool_calls", JSON.stringify(choice));
            const calls = choice.message.tool_calls ?? [];
            assertCalls(calls as never, `seed ${seed}`);
            if (seed % 2 === 1) assert.deepStrictEqual(calls.length, 1);
            for (const call of calls) assert.match(call.id, /^call_[0-9a-f]{24}$/);
          });
        });

        await t.step("a named function: exactly one call to it", async () => {
          for (let seed = 0; seed < 4; seed++) {
            const answer = await client.chat.completions.create({
              model,
              messages,
              tools: TOOLS,
              tool_choice: { type: "function", function: { name: "add" } },
              max_tokens: 300,
              seed,
            });
            const calls = (answer.choices[0].message.tool_calls ?? []) as FunctionCall[];
            assert.deepStrictEqual(calls.length, 1);
            assert.deepStrictEqual(calls[0].function.name, "add");
            assertCalls(calls as never, `seed ${seed}`);
          }
        });

        await t.step("streamed and non-streamed tool calls agree", async () => {
          for (let seed = 0; seed < 3; seed++) {
            const request = {
              model,
              messages,
              tools: TOOLS,
              tool_choice: "required" as const,
              max_tokens: 300,
              seed,
            };
            const full = (await client.chat.completions.create(request)).choices[0];
            const got = await streamed(
              await client.chat.completions.create({ ...request, stream: true }),
            );
            assert.deepStrictEqual(got.reason, full.finish_reason);
            assert.deepStrictEqual(
              got.calls,
              ((full.message.tool_calls ?? []) as FunctionCall[]).map((c) => ({
                name: c.function.name,
                arguments: c.function.arguments,
              })),
            );
          }
        });

        await t.step(
          "required and named, streamed: arguments arrive in fragments as they are written",
          async () => {
            const choices: unknown[] = [
              "required",
              { type: "function", function: { name: "get_weather" } },
            ];
            let parallel = 0;
            for (const tool_choice of choices) {
              for (let seed = 0; seed < 2; seed++) {
                const request = {
                  model,
                  messages,
                  tools: TOOLS,
                  tool_choice,
                  max_tokens: 300,
                  seed,
                  n: 2,
                };
                const res = await post("/v1/chat/completions", request);
                assert.deepStrictEqual(res.status, 200);
                const full = (await res.json()).choices as {
                  message: { tool_calls: FunctionCall[] };
                  finish_reason: string;
                }[];
                const sse = await post("/v1/chat/completions", { ...request, stream: true });
                const got = await rawToolDeltas(sse, 2);
                const what = `${JSON.stringify(tool_choice)} seed ${seed}`;
                for (let index = 0; index < 2; index++) {
                  const expected = full[index].message.tool_calls;
                  assertCalls(expected, `${what} choice ${index}`);
                  assert.deepStrictEqual(got[index].reason, "tool_calls", what);
                  assert.deepStrictEqual(full[index].finish_reason, "tool_calls", what);
                  assert.deepStrictEqual(got[index].calls.length, expected.length, what);
                  if (expected.length > 1) parallel++;
                  got[index].calls.forEach((call, k) => {
                    assert.deepStrictEqual(call.name, expected[k].function.name, what);
                    // Each call's arguments span many tokens, so they come in several pieces.
                    assert(call.fragments.length > 1, `${what}: ${JSON.stringify(call)}`);
                    assert.deepStrictEqual(
                      call.fragments.join(""),
                      expected[k].function.arguments,
                      what,
                    );
                  });
                }
              }
            }
            // These seeds give parallel calls (index 0, 1) with "required".
            assert(parallel > 0, "no answer with parallel calls: pick other seeds");
            // Cut short by max_tokens: the stream ends as far as it got, with "length" (not
            // "tool_calls"), and the non-streamed answer returns the text as content. (Not
            // compared with each other: a prefix-cache hit of another length can change a
            // random-weight model's next token.)
            for (const max_tokens of [4, 40]) {
              const request = {
                model,
                messages,
                tools: TOOLS,
                tool_choice: "required",
                max_tokens,
                seed: 5,
              };
              const full = (await (await post("/v1/chat/completions", request)).json()).choices[0];
              assert.deepStrictEqual(full.finish_reason, "length");
              assert.deepStrictEqual(full.message.tool_calls, undefined);
              const opener = style === "hermes" ? "<tool_call>{" : "{";
              const text: string = full.message.content;
              assert(text.startsWith(opener) || opener.startsWith(text), text);
              const [got] = await rawToolDeltas(
                await post("/v1/chat/completions", { ...request, stream: true }),
                1,
              );
              assert.deepStrictEqual(got.reason, "length");
            }
          },
        );

        const wellFormed = style === "hermes"
          ? 'Sure.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}</tool_call>'
          : '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "c"}}';
        const malformed = style === "hermes"
          ? '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
          : '{"name": "nowhere", "parameters": {}}';

        await t.step(
          "auto: a template-shaped call is parsed, a malformed one is text",
          async () => {
            for (const stream of [false, true]) {
              const ask = (choice: string) =>
                post("/v1/chat/completions", {
                  model,
                  messages,
                  tools: TOOLS,
                  max_tokens: 200,
                  stream,
                  guided_choice: [choice],
                });
              const good = await ask(wellFormed);
              assert.deepStrictEqual(good.status, 200);
              const bad = await ask(malformed);
              assert.deepStrictEqual(bad.status, 200);
              if (!stream) {
                const choice = (await good.json()).choices[0];
                assert.deepStrictEqual(choice.finish_reason, "tool_calls");
                assert.deepStrictEqual(choice.message.content, style === "hermes" ? "Sure." : null);
                assert.deepStrictEqual(choice.message.tool_calls[0].function, {
                  name: "get_weather",
                  arguments: '{"city": "Oslo", "unit": "c"}',
                });
                const text = (await bad.json()).choices[0];
                assert.deepStrictEqual(text.finish_reason, "stop");
                assert.deepStrictEqual(text.message.content, malformed);
                assert.deepStrictEqual(text.message.tool_calls, undefined);
              } else {
                const events = async (res: Response) => {
                  const lines = (await res.text()).split("\n").filter((l) =>
                    l.startsWith("data: {")
                  );
                  const chunks = lines.map((l) => JSON.parse(l.slice(6)));
                  return await streamed((async function* () {
                    yield* chunks;
                  })());
                };
                const parsed = await events(good);
                assert.deepStrictEqual(parsed.reason, "tool_calls");
                assert.deepStrictEqual(parsed.content, style === "hermes" ? "Sure." : "");
                assert.deepStrictEqual(parsed.calls, [{
                  name: "get_weather",
                  arguments: '{"city": "Oslo", "unit": "c"}',
                }]);
                const text = await events(bad);
                assert.deepStrictEqual(text.reason, "stop");
                assert.deepStrictEqual(text.content, malformed);
                assert.deepStrictEqual(text.calls, []);
              }
            }
          },
        );

        await t.step("tool results and assistant tool calls render as input", async () => {
          const answer = await client.chat.completions.create({
            model,
            tools: TOOLS,
            max_tokens: 4,
            messages: [
              { role: "user", content: "Weather in Oslo?" },
              {
                role: "assistant",
                content: null,
                tool_calls: [{
                  id: "call_1",
                  type: "function",
                  function: { name: "get_weather", arguments: '{"city": "Oslo", "unit": "c"}' },
                }],
              },
              { role: "tool", tool_call_id: "call_1", content: "12 degrees" },
            ],
          });
          assert.deepStrictEqual(answer.choices.length, 1);
          const prompt = await engine.prepare(
            [
              {
                role: "assistant",
                content: null,
                tool_calls: [{
                  id: "c",
                  type: "function",
                  function: { name: "get_weather", arguments: { city: "Oslo" } },
                }],
              },
              { role: "tool", content: "12 degrees" },
            ],
            { tools: TOOLS },
          );
          assert.match(
            prompt.text ?? "",
            /"name": "get_weather", "(arguments|parameters)": \{"city": ?"Oslo"\}/,
          );
          assert.match(prompt.text ?? "", /12 degrees/);
        });

        await t.step("bad tools and choices are 400s naming the field", async () => {
          const body = { model, messages, max_tokens: 4 };
          const cases: [Record<string, unknown>, string][] = [
            [
              { tools: [{ type: "function", function: { name: "bad name" } }] },
              "tools[0].function.name",
            ],
            [{ tools: [{ type: "retrieval" }] }, "tools[0]"],
            [
              { tools: TOOLS, tool_choice: { type: "function", function: { name: "nope" } } },
              "tool_choice",
            ],
            [{ tool_choice: "required" }, "tool_choice"],
            [{ tools: TOOLS, tool_choice: "sometimes" }, "tool_choice"],
            [{ tools: TOOLS, parallel_tool_calls: "yes" }, "parallel_tool_calls"],
            [
              { tools: TOOLS, tool_choice: "required", response_format: { type: "json_object" } },
              "tool_choice",
            ],
          ];
          for (const [extra, param] of cases) {
            await assertApiError(
              await post("/v1/chat/completions", { ...body, ...extra }),
              400,
              param,
              JSON.stringify(extra),
            );
          }
        });
      } finally {
        await served.close();
      }
    },
  });
}

Deno.test("parseToolCalls: well-formed calls parse, anything else is text", () => {
  const functions = new Map<string, ToolFunction>([
    ["f", { name: "f", parameters: {} }],
    ["g", { name: "g", parameters: {} }],
  ]);
  const hermes = (text: string) => parseToolCalls(text, "hermes", functions);
  const llama = (text: string) => parseToolCalls(text, "llama3_json", functions);
  const names = (a: ReturnType<typeof hermes>) =>
    a.calls.map((c) => [c.function.name, c.function.arguments]);
  assert.deepStrictEqual(
    names(
      hermes(
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>{"name": "g", "arguments": {}}</tool_call>',
      ),
    ),
    [["f", '{"x": 1}'], ["g", "{}"]],
  );
  assert.deepStrictEqual(
    hermes('Hi <tool_call>{"name": "f", "arguments": {}}</tool_call>').content,
    "Hi ",
  );
  for (
    const text of [
      "plain text",
      '<tool_call>{"name": "f", "arguments": {</tool_call>',
      '<tool_call>{"name": "h", "arguments": {}}</tool_call>',
      '<tool_call>{"name": "f", "arguments": 3}</tool_call>',
      '<tool_call>{"name": "f", "arguments": {}}',
      '<tool_call>{"name": "f", "arguments": {}}</tool_call> trailing words',
    ]
  ) {
    assert.deepStrictEqual(hermes(text), { content: text, calls: [] }, text);
  }
  assert.deepStrictEqual(
    names(
      llama(
        '<|python_tag|>{"name": "f", "parameters": {"a": "b"}}; {"name": "g", "arguments": {}}',
      ),
    ),
    [["f", '{"a": "b"}'], ["g", "{}"]],
  );
  assert.deepStrictEqual(llama(' {"name": "f", "parameters": {}}').content, null);
  for (
    const text of [
      '{"name": "f"',
      'I think {"name": "f", "parameters": {}}',
      '{"name": "z", "parameters": {}}',
      "[1, 2]",
    ]
  ) {
    assert.deepStrictEqual(llama(text), { content: text, calls: [] }, text);
  }
});
