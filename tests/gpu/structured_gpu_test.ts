/**
 * Structured output on the GPU: the tiny model on CUDA with random JSON schemas, each request's
 * xgrammar mask applied on the device by the sampler. Every answer must end with "stop" and be
 * JSON that ajv (an independent validator) accepts. Run with DENALI_GPU_TESTS=1.
 */

import assert from "node:assert/strict";
import { Ajv } from "npm:ajv@8.17.1";
import { Engine } from "../../engine/engine.ts";
import { GrammarChoices } from "../../engine/grammar/state.ts";
import { jsonSchemaSpec } from "../../engine/grammar/spec.ts";
import { rng } from "../support/numeric.ts";
import { randomSchema } from "../support/schemas.ts";
import { TINY_MODEL_DIR } from "../support/server.ts";

const ignore = !Deno.env.get("DENALI_GPU_TESTS");

Deno.test({
  name: "structured output on CUDA: 48 random schemas validate (ajv)",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const engine = await Engine.load(TINY_MODEL_DIR, { backend: "cuda", seed: 1, log: () => {} });
    try {
      const compiler = await engine.grammarCompiler();
      const next = rng(21);
      const random = () => next(0, 1);
      const schemas = Array.from({ length: 48 }, () => randomSchema(random));
      const ajv = new Ajv({ strict: false });
      const prompt = await engine.prepare([{ role: "user", content: "JSON please" }]);
      await Promise.all(schemas.map(async (schema, i) => {
        const state = await compiler.state(await compiler.compile(jsonSchemaSpec(schema, true)));
        const grammar = new GrammarChoices([state]);
        let text = "", reason: string | undefined;
        try {
          for await (
            const chunk of engine.generate(prompt, {
              maxTokens: 400,
              seed: i,
              // Sampled, as in the server test: greedy decoding of this tiny model can repeat
              // digits inside a number until maxTokens (seen on the H200), which the grammar
              // rightly allows, so a greedy answer need not stop.
              temperature: 1,
              tokenBitmask: grammar,
            })
          ) {
            text += chunk.text;
            reason = chunk.finishReason ?? reason;
          }
        } finally {
          grammar.dispose();
        }
        assert.deepStrictEqual(reason, "stop", `schema ${i}: ${text}`);
        const validate = ajv.compile(schema);
        assert(
          validate(JSON.parse(text)),
          `schema ${i}: ${text}: ${JSON.stringify(validate.errors)}`,
        );
      }));
    } finally {
      await engine.close();
    }
  },
});
