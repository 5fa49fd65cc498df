/**
 * Structured-output benchmark: C concurrent `json_schema` completion requests against the same
 * requests unconstrained, through an in-process server, and the grammar cache on a 20-property
 * schema. Prints:
 * - `TARGET json_schema_c64_ratio value=<constrained / unconstrained output tok/s> goal=0.85`;
 * - `TARGET grammar_cached_ms value=<second compile of the 20-property schema> goal=0.1`, with
 *   the first compile on its own line.
 *
 * Random weights have no tokenizer, so the bench writes a synthetic byte-level BPE vocabulary of
 * the preset's size (Llama 3's 128 256 ids: 256 bytes, seeded multi-character pieces, 256 special
 * tokens at the end, `<|eot_id|>` at 128 009) to a temporary directory; the masks xgrammar
 * computes over it have Llama 3's width. Every request ignores EOS and generates exactly
 * `--max-tokens` tokens, so both runs produce the same number of tokens; a grammar that completes
 * early then allows only EOS, which costs the host no mask computation.
 *
 * Usage: deno run -A bench/structured_bench.ts [--preset llama3-8b | --tiny DIR]
 *        [--concurrency 64] [--max-tokens 256] [--prompt-tokens 128] [--rounds 2]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Engine } from "../engine/engine.ts";
import { jsonSchemaSpec } from "../engine/grammar/spec.ts";
import { configPreset } from "../models/config.ts";
import { startServer } from "../server/server.ts";
import { byteLevelBpeModel, bytesToUnicode, specialToken } from "../tools/byte_level_bpe.ts";
import { mulberry32 } from "../tests/support/numeric.ts";

/** The schema every constrained request uses: nested, with unbounded strings and arrays. */
export const BENCH_SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string" },
    year: { type: "integer" },
    rating: { type: "number" },
    tags: { type: "array", items: { type: "string" } },
    people: {
      type: "array",
      items: {
        type: "object",
        properties: { name: { type: "string" }, role: { enum: ["lead", "support", "crew"] } },
        required: ["name", "role"],
      },
    },
  },
  required: ["title", "year", "rating", "tags", "people"],
};

/** A schema of 20 properties of mixed types, for the compile-time target. */
export function twentyPropertySchema(): Record<string, unknown> {
  const types = [
    { type: "string", maxLength: 40 },
    { type: "integer", minimum: 0, maximum: 1000 },
    { type: "number" },
    { type: "boolean" },
    { enum: ["a", "b", "c"] },
    { type: "array", items: { type: "string" }, maxItems: 5 },
    { type: "object", properties: { x: { type: "integer" }, y: { type: "string" } } },
  ];
  const properties: Record<string, unknown> = {};
  for (let i = 0; i < 20; i++) properties[`field_${i}`] = types[i % types.length];
  return { type: "object", properties, required: Object.keys(properties) };
}

/**
 * Writes a byte-level BPE tokenizer of `vocabSize` ids (the last 256 special, like Llama 3's)
 * into `dir`: tokenizer.json, tokenizer_config.json and generation_config.json.
 */
export async function writeSyntheticTokenizer(dir: string, vocabSize: number): Promise<number> {
  const byteChar = bytesToUnicode();
  const vocab: Record<string, number> = {};
  let next = 0;
  const add = (token: string) => {
    if (vocab[token] === undefined) vocab[token] = next++;
  };
  for (const c of byteChar) add(c);
  const specials = 256;
  const random = mulberry32(7);
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  const pieces = ['":', '",', '{"', '"}', "},", "],", '["', '"]', ", ", ": ", "0", "00", "000"];
  for (const p of pieces) add([...p].map((c) => byteChar[c.charCodeAt(0)]).join(""));
  while (next < vocabSize - specials) {
    const length = 1 + Math.floor(random() * random() * 9);
    let word = random() < 0.6 ? "\u0120" : "";
    for (let i = 0; i < length; i++) word += letters[Math.floor(random() * random() * 26)];
    if (random() < 0.05) word = String(Math.floor(random() * 1000));
    add(word);
  }
  const added = [];
  for (let i = 0; i < specials; i++) {
    const content = i === 0
      ? "<|begin_of_text|>"
      : i === 1
      ? "<|end_of_text|>"
      : i === 9
      ? "<|eot_id|>"
      : `<|reserved_special_token_${i}|>`;
    added.push(specialToken(next + i, content));
  }
  const eot = next + 9;
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: byteLevelBpeModel(vocab, []),
  };
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  await Deno.writeTextFile(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" }),
  );
  await Deno.writeTextFile(
    join(dir, "generation_config.json"),
    JSON.stringify({ eos_token_id: [next + 1, eot] }),
  );
  return eot;
}

/** One round: `count` concurrent requests; returns output tokens per second. */
async function round(
  url: string,
  count: number,
  body: (i: number) => Record<string, unknown>,
): Promise<{ tokPerS: number; tokens: number; seconds: number }> {
  const start = performance.now();
  const replies = await Promise.all(Array.from({ length: count }, async (_, i) => {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body(i)),
    });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`request ${i}: ${res.status} ${JSON.stringify(json)}`);
    return json as { usage: { completion_tokens: number } };
  }));
  const seconds = (performance.now() - start) / 1000;
  const tokens = replies.reduce((sum, r) => sum + r.usage.completion_tokens, 0);
  return { tokPerS: tokens / seconds, tokens, seconds };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      preset: { type: "string", default: "llama3-8b" },
      tiny: { type: "string" },
      concurrency: { type: "string", default: "64" },
      "max-tokens": { type: "string", default: "256" },
      "prompt-tokens": { type: "string", default: "128" },
      rounds: { type: "string", default: "2" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A bench/structured_bench.ts [--preset llama3-8b | --tiny DIR] " +
        "[--concurrency 64] [--max-tokens 256] [--prompt-tokens 128] [--rounds 2]",
    );
    return;
  }
  const concurrency = Number(values.concurrency);
  const maxTokens = Number(values["max-tokens"]);
  const promptTokens = Number(values["prompt-tokens"]);
  const rounds = Number(values.rounds);
  const tmp = await Deno.makeTempDir({ prefix: "denali-structured-" });
  let engine: Engine;
  if (values.tiny !== undefined) {
    engine = await Engine.load(values.tiny, { seed: 1, maxRunning: concurrency });
  } else {
    const config = configPreset(values.preset!);
    await writeSyntheticTokenizer(tmp, config.vocabSize);
    engine = await Engine.load(
      { config, randomWeights: true, seed: 1, tokenizerDir: tmp },
      { seed: 1, maxModelLen: promptTokens + maxTokens + 16 },
    );
  }
  console.log(`engine: ${JSON.stringify(engine.info)}`);
  const server = startServer(engine, { port: 0 });
  try {
    const vocab = engine.tokenizer!.vocabSize - 256;
    const random = mulberry32(3);
    const prompts = Array.from(
      { length: concurrency },
      () => Array.from({ length: promptTokens }, () => 256 + Math.floor(random() * (vocab - 256))),
    );
    const base = (i: number) => ({
      prompt: prompts[i],
      max_tokens: maxTokens,
      ignore_eos: true,
      temperature: 1,
      seed: i,
    });
    const constrained = (i: number) => ({
      ...base(i),
      response_format: {
        type: "json_schema",
        json_schema: { name: "movie", schema: BENCH_SCHEMA, strict: false },
      },
    });

    // The compile-time target first, on a cold cache.
    const compiler = await engine.grammarCompiler();
    const spec = jsonSchemaSpec(twentyPropertySchema(), true);
    const first = await compiler.compile(spec);
    const again = performance.now();
    await compiler.compile(spec);
    const cachedMs = performance.now() - again;
    console.log(`grammar_first_compile_ms=${first.compileMs.toFixed(1)} (20-property schema)`);

    // Warm-up: graphs, the bench schema's compile, the allocator.
    await round(server.url, concurrency, base);
    await round(server.url, concurrency, constrained);
    let free = 0, masked = 0;
    for (let r = 0; r < rounds; r++) {
      const u = await round(server.url, concurrency, base);
      const c = await round(server.url, concurrency, constrained);
      console.log(
        `round ${r}: unconstrained ${u.tokPerS.toFixed(1)} tok/s (${u.tokens} in ` +
          `${u.seconds.toFixed(2)} s), json_schema ${c.tokPerS.toFixed(1)} tok/s (${c.tokens} in ` +
          `${c.seconds.toFixed(2)} s)`,
      );
      free += u.tokPerS;
      masked += c.tokPerS;
    }
    const ratio = masked / free;
    const line = (name: string, value: number, goal: number, met: boolean) =>
      console.log(
        `TARGET ${name} value=${value.toFixed(3)} goal=${goal} ${met ? "met" : "MISSED"}`,
      );
    line(`json_schema_c${concurrency}_ratio`, ratio, 0.85, ratio >= 0.85);
    line("grammar_cached_ms", cachedMs, 0.1, cachedMs <= 0.1);
  } finally {
    await server.stop(2000);
    await engine.close();
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) await main();
