/**
 * Generates from a prompt and streams the text to stdout.
 *
 * ```sh
 * deno run -A examples/generate.ts models/Llama-3.2-1B-Instruct -p "The capital of France is"
 * deno run -A examples/generate.ts models/Llama-3.2-1B-Instruct --chat -p "Write a haiku"
 * deno run -A examples/generate.ts          # a tiny random-weight model with the test tokenizer
 * ```
 *
 * Options: `-p/--prompt`, `-n/--max-tokens` (64), `-t/--temperature` (0: greedy), `--seed`,
 * `--backend` (auto, cuda, hip, cpu), `--chat` (wrap the prompt as one user message), `--no-graphs`.
 * Without a model directory it runs the "tiny" preset on the CPU (its head dimension is too
 * small for the GPU kernels), so it shows the pipeline, not sensible text.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { BackendChoice } from "../backends/select.ts";
import { CONFIG_PRESETS } from "../models/config.ts";
import { Engine, type Prompt } from "../engine/engine.ts";
import { Tokenizer } from "../engine/tokenizer.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A examples/generate.ts [MODEL_DIR] [options]

Generates from a prompt and streams the text to stdout. Without MODEL_DIR: a tiny random-weight
model with the test tokenizer, on the CPU (it shows the pipeline, not sensible text).
  -p, --prompt TEXT         the prompt (default "Once upon a time")
  -n, --max-tokens N        tokens to generate (default 64)
  -t, --temperature T       0 is greedy (default 0)
  --seed N                  sampling seed
  --backend auto|cuda|hip|cpu
  --chat                    wrap the prompt as one user message (chat template)
  --no-graphs               no decode graphs
  -h, --help                show this help`;

/** Parses `args`, loads the engine and streams one generation; resolves the exit code. */
async function main(args: string[]): Promise<number> {
  if (helpRequested(args, USAGE)) return 0;
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        prompt: { type: "string", short: "p", default: "Once upon a time" },
        "max-tokens": { type: "string", short: "n", default: "64" },
        temperature: { type: "string", short: "t", default: "0" },
        seed: { type: "string" },
        backend: { type: "string" },
        chat: { type: "boolean", default: false },
        "no-graphs": { type: "boolean", default: false },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const modelDir = positionals[0];
  const log = (line: string) => console.error(line);
  let engine: Engine;
  if (modelDir !== undefined) {
    engine = await Engine.load(modelDir, {
      backend: (values.backend ?? "auto") as BackendChoice,
      graphs: !values["no-graphs"],
      log,
    });
  } else {
    const tokenizerDir = new URL("../tests/fixtures/tokenizer", import.meta.url).pathname;
    const tokenizer = await Tokenizer.load(tokenizerDir);
    engine = await Engine.load(
      {
        config: { ...CONFIG_PRESETS.tiny, vocabSize: tokenizer.vocabSize },
        randomWeights: true,
        tokenizerDir,
      },
      { backend: (values.backend ?? "cpu") as BackendChoice, log },
    );
  }

  const prompt: Prompt = values.chat ? [{ role: "user", content: values.prompt }] : values.prompt;
  const encoder = new TextEncoder();
  const start = performance.now();
  let first = 0, tokens = 0, reason = "";
  try {
    for await (
      const chunk of engine.generate(prompt, {
        maxTokens: Number(values["max-tokens"]),
        temperature: Number(values.temperature),
        seed: values.seed === undefined ? null : Number(values.seed),
      })
    ) {
      if (tokens++ === 0) first = performance.now();
      await Deno.stdout.write(encoder.encode(chunk.text));
      reason = chunk.finishReason ?? reason;
    }
  } finally {
    const end = performance.now();
    console.log();
    const rate = tokens > 1 ? ((tokens - 1) / ((end - first) / 1000)).toFixed(1) : "-";
    log(
      `${tokens} tokens (${reason}); first after ${(first - start).toFixed(0)} ms, then ` +
        `${rate} tokens/s on ${engine.info.backend} (${engine.info.device})`,
    );
    await engine.close();
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
