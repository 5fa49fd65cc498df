/**
 * The xgrammar shim and the grammar compiler on the tiny model's byte-level vocabulary: random
 * walks through each grammar's token masks must end in text that the grammar's independent
 * reference accepts (ajv for schemas, a JS RegExp for regexes, set membership for choices), and
 * bad specs are refused with xgrammar's reason without harming later compiles.
 */

import assert from "node:assert/strict";
import { rng } from "../support/numeric.ts";
import { Ajv } from "npm:ajv@8.17.1";
import { GrammarCompiler, GrammarError } from "../../engine/grammar/compiler.ts";
import {
  choiceSpec,
  ebnfSpec,
  type GrammarSpec,
  jsonSchemaSpec,
  jsonSpec,
  regexSpec,
} from "../../engine/grammar/spec.ts";
import { bitmaskWords } from "../../engine/grammar/state.ts";
import { Tokenizer } from "../../engine/tokenizer.ts";

const TINY = new URL("../../checkpoints/tiny-llama", import.meta.url).pathname;
const EOS = 281;

/** Uniform numbers in [0, 1) from a seed (numeric.ts's generator). */
function prng(seed: number): () => number {
  const next = rng(seed + 1);
  return () => next(0, 1);
}

/**
 * Walks the grammar with random allowed tokens (the stop token whenever allowed, so walks end)
 * and returns the text; asserts the walk terminates within `limit` tokens.
 */
async function walk(
  compiler: GrammarCompiler,
  tokenizer: Tokenizer,
  spec: GrammarSpec,
  seed: number,
  limit = 400,
): Promise<string> {
  const state = await compiler.state(await compiler.compile(spec));
  const words = bitmaskWords(compiler.vocabSize);
  const mask = new Int32Array(words);
  const random = prng(seed);
  const ids: number[] = [];
  try {
    const now = new Int32Array(words + 1);
    for (let step = 0; step < limit && !state.terminated; step++) {
      await state.fillBitmask(mask, 0);
      // The engine's synchronous path reads the same mask from the instance's memory.
      state.fillBitmaskNow(now, 1);
      assert.deepStrictEqual(now.subarray(1), mask);
      const allowed: number[] = [];
      for (let id = 0; id < compiler.vocabSize; id++) {
        if ((mask[id >> 5] >>> (id & 31)) & 1) allowed.push(id);
      }
      assert(allowed.length > 0, `no token allowed after ${JSON.stringify(tokenizer.decode(ids))}`);
      const id = allowed.includes(EOS) ? EOS : allowed[Math.floor(random() * allowed.length)];
      assert(state.accept(id), `token ${id} was allowed but not accepted`);
      if (id !== EOS) ids.push(id);
    }
    assert(state.terminated, `the walk did not end in ${limit} tokens`);
    // A token the mask forbids is refused and changes nothing.
    return tokenizer.decode(ids, { skipSpecialTokens: true });
  } finally {
    state.dispose();
  }
}

Deno.test({
  name: "grammar compiler: xgrammar on the tiny vocabulary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const tokenizer = await Tokenizer.load(TINY);
    const compiler = await GrammarCompiler.create(tokenizer, 282, [EOS]);
    try {
      await t.step("json_schema walks validate against the schema (ajv)", async () => {
        const schema = {
          type: "object",
          properties: {
            name: { type: "string", maxLength: 6 },
            age: { type: "integer", minimum: 0, maximum: 130 },
            kind: { enum: ["cat", "dog", 3] },
            tags: { type: "array", items: { type: "boolean" }, maxItems: 3 },
            inner: {
              type: "object",
              properties: { x: { type: "integer", minimum: -5, maximum: 5 } },
              required: ["x"],
            },
          },
          required: ["name", "age", "kind", "inner"],
          additionalProperties: false,
        };
        const validate = new Ajv().compile(schema);
        for (let seed = 0; seed < 10; seed++) {
          const text = await walk(compiler, tokenizer, jsonSchemaSpec(schema, true), seed);
          const value = JSON.parse(text);
          assert(validate(value), `${text}: ${JSON.stringify(validate.errors)}`);
        }
      });

      await t.step("json_object, regex, choice and EBNF walks", async () => {
        for (let seed = 0; seed < 5; seed++) {
          const json = await walk(compiler, tokenizer, jsonSpec(), seed, 2000);
          JSON.parse(json);
          const date = await walk(compiler, tokenizer, regexSpec("[0-9]{4}-[a-z]{2,3}"), seed);
          assert.match(date, /^[0-9]{4}-[a-z]{2,3}$/);
          const choices = ["yes", "no", 'say "hi"\\'];
          assert(choices.includes(await walk(compiler, tokenizer, choiceSpec(choices), seed)));
          const ebnf = await walk(compiler, tokenizer, ebnfSpec('root ::= "a" ("b" | "c")'), seed);
          assert.match(ebnf, /^a[bc]$/);
        }
      });

      await t.step(
        "bad specs are refused with xgrammar's reason; later compiles work",
        async () => {
          const bad: [GrammarSpec, RegExp][] = [
            [jsonSchemaSpec({ type: "objekt" }, true), /objekt/],
            [ebnfSpec('root ::= "a" | '), /EBNF|element/i],
            [regexSpec("[0-9"), /./],
            [ebnfSpec('start ::= "a"'), /root/],
          ];
          for (const [spec, reason] of bad) {
            await assert.rejects(compiler.compile(spec), (e: Error) => {
              assert(e instanceof GrammarError, String(e));
              assert.match(e.message, reason);
              return true;
            });
          }
          assert.match(await walk(compiler, tokenizer, regexSpec("x[yz]"), 1), /^x[yz]$/);
          assert.deepStrictEqual(compiler.stats.refused, bad.length);
        },
      );

      await t.step("a spec compiles once; the second request hits the cache", async () => {
        const schema = { type: "object", properties: { q: { type: "integer" } } };
        const before = compiler.stats;
        const first = await compiler.compile(jsonSchemaSpec(schema, false));
        const start = performance.now();
        const second = await compiler.compile(jsonSchemaSpec(schema, false));
        const ms = performance.now() - start;
        assert.strictEqual(second.compiled, first.compiled);
        assert(first.compileMs > 0 && second.compileMs === 0);
        assert(ms < 5, `a cache hit took ${ms} ms`);
        assert.deepStrictEqual(compiler.stats.compiled, before.compiled + 1);
        assert.deepStrictEqual(compiler.stats.hits, before.hits + 1);
      });
    } finally {
      await compiler.close();
    }
  },
});
