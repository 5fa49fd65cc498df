/**
 * Structured output through the server on the tiny model with random weights: 100 seeded random
 * JSON schemas (nested objects, arrays, enums, numbers, required fields), each answered with text
 * that parses and that ajv — an independent validator — accepts; json_object, guided_regex,
 * guided_choice and guided_grammar checked against their own references; streaming and
 * non-streaming agree; bad specs are 400s naming the field; a schema compiles once.
 */

import assert from "node:assert/strict";
import { rng } from "../support/numeric.ts";
import { Ajv } from "npm:ajv@8.17.1";
import { randomSchema } from "../support/schemas.ts";
import { assertApiError, startTestServer } from "../support/server.ts";

/** Uniform numbers in [0, 1) from a seed (numeric.ts's generator). */
function prng(seed: number): () => number {
  const next = rng(seed + 1);
  return () => next(0, 1);
}

Deno.test({
  name: "structured output through the server",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served = await startTestServer({
      kvBlocks: 2048,
      blockSize: 4,
      maxRunning: 32,
      maxBatchedTokens: 256,
      maxModelLen: 1024,
    });
    const { client, model, post, engine } = served;
    const messages = [{ role: "user" as const, content: "Answer in JSON." }];
    try {
      await t.step("100 random schemas: every answer parses and validates (ajv)", async () => {
        const random = prng(16);
        const schemas = Array.from({ length: 100 }, () => randomSchema(random));
        const ajv = new Ajv({ strict: false });
        const answers = await Promise.all(
          schemas.map((schema, i) =>
            client.chat.completions.create({
              model,
              messages,
              max_tokens: 400,
              seed: i,
              response_format: {
                type: "json_schema",
                json_schema: { name: `s${i}`, schema, strict: i % 2 === 0 },
              },
            })
          ),
        );
        answers.forEach((answer, i) => {
          const choice = answer.choices[0];
          const text = choice.message.content ?? "";
          assert.deepStrictEqual(choice.finish_reason, "stop", `schema ${i}: ${text}`);
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch (error) {
            assert.fail(`schema ${i}: ${JSON.stringify(text)} does not parse: ${error}`);
          }
          const validate = ajv.compile(schemas[i]);
          assert(
            validate(value),
            `schema ${i} ${JSON.stringify(schemas[i])}: ${text}: ${
              JSON.stringify(validate.errors)
            }`,
          );
        });
      });

      await t.step("json_object, guided_regex, guided_choice, guided_grammar", async () => {
        for (let seed = 0; seed < 4; seed++) {
          const json = await client.chat.completions.create({
            model,
            messages,
            max_tokens: 600,
            seed,
            response_format: { type: "json_object" },
          });
          const text = json.choices[0].message.content ?? "";
          if (json.choices[0].finish_reason === "stop") JSON.parse(text);
          else assert.match(text, /^[[{]/);
          const body = { model, prompt: "Hi", max_tokens: 40, seed };
          const regex = await (await post("/v1/completions", {
            ...body,
            guided_regex: "[0-9]{3}-[a-c]{2,4}",
          })).json();
          assert.match(regex.choices[0].text, /^[0-9]{3}-[a-c]{2,4}$/);
          const choices = ["alpha", "beta", "gamma ray"];
          const choice = await (await post("/v1/completions", { ...body, guided_choice: choices }))
            .json();
          assert(choices.includes(choice.choices[0].text), choice.choices[0].text);
          const grammar = await (await post("/v1/completions", {
            ...body,
            guided_grammar: 'root ::= "(" [a-z] ("," [a-z])? ")"',
          })).json();
          assert.match(grammar.choices[0].text, /^\([a-z](,[a-z])?\)$/);
        }
      });

      await t.step("streaming and non-streaming agree", async () => {
        const schema = randomSchema(prng(99));
        const request = {
          model,
          messages,
          max_tokens: 400,
          seed: 5,
          response_format: {
            type: "json_schema" as const,
            json_schema: { name: "s", schema, strict: true },
          },
        };
        const full = await client.chat.completions.create(request);
        let streamed = "";
        let reason: string | null = null;
        for await (
          const chunk of await client.chat.completions.create({ ...request, stream: true })
        ) {
          streamed += chunk.choices[0]?.delta?.content ?? "";
          reason = chunk.choices[0]?.finish_reason ?? reason;
        }
        assert.deepStrictEqual(streamed, full.choices[0].message.content);
        assert.deepStrictEqual(reason, full.choices[0].finish_reason);
      });

      await t.step("bad specs are 400s naming the field and the reason", async () => {
        const body = { model, prompt: "Hi", max_tokens: 4 };
        const cases: [Record<string, unknown>, string, RegExp][] = [
          [{ guided_json: { type: "objekt" } }, "guided_json", /objekt/],
          [{ guided_regex: "[0-9" }, "guided_regex", /xgrammar/],
          [{ guided_grammar: 'root ::= "a" |' }, "guided_grammar", /xgrammar/],
          [{ guided_choice: [] }, "guided_choice", /non-empty/],
          [{ guided_json: "{not json" }, "guided_json", /JSON/],
          [{ response_format: { type: "xml" } }, "response_format.type", /json_schema/],
          [
            { response_format: { type: "json_schema", json_schema: { name: "x" } } },
            "response_format.json_schema.schema",
            /required/,
          ],
          [
            {
              response_format: {
                type: "json_schema",
                json_schema: { name: "x", schema: { type: "object", required: 3 } },
              },
            },
            "response_format.json_schema.schema",
            /xgrammar/,
          ],
          [{ guided_regex: "a", guided_choice: ["a"] }, "guided_choice", /one output constraint/],
          [
            { guided_decoding_backend: "outlines", guided_regex: "a" },
            "guided_decoding_backend",
            /xgrammar/,
          ],
        ];
        for (const [extra, param, reason] of cases) {
          const error = await assertApiError(
            await post("/v1/completions", { ...body, ...extra }),
            400,
            param,
            JSON.stringify(extra),
          );
          assert.match(error.message, reason, JSON.stringify(extra));
        }
        // The server still serves grammars after refusing those.
        const ok = await (await post("/v1/completions", { ...body, guided_choice: ["ok"] })).json();
        assert.deepStrictEqual(ok.choices[0].text, "ok");
      });

      await t.step("a schema compiles once: the second request hits the cache", async () => {
        const compiler = await engine.grammarCompiler();
        const schema = {
          type: "object",
          properties: { only: { enum: [1, 2] } },
          required: ["only"],
        };
        const before = compiler.stats;
        for (let i = 0; i < 2; i++) {
          await post("/v1/completions", {
            model,
            prompt: "Hi",
            max_tokens: 20,
            guided_json: schema,
          })
            .then((r) => r.json());
        }
        assert.deepStrictEqual(compiler.stats.compiled, before.compiled + 1);
        assert.deepStrictEqual(compiler.stats.hits, before.hits + 1);
      });
    } finally {
      await served.close();
    }
  },
});
