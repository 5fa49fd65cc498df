/**
 * A user kernel that bans a set of tokens, compiled at run time and used through
 * `Engine.generate` as a logits processor: launched once per step for all the rows that use it.
 * The tokens it produces are checked against the engine's built-in `bannedTokenIds`, an
 * independent way to ban the same set.
 *
 * ```sh
 * deno run -A examples/logits_processor.ts                       # random Llama-3.2-1B-shaped weights
 * deno run -A examples/logits_processor.ts models/Llama-3.2-1B-Instruct -p "Count: 1, 2, 3,"
 * ```
 *
 * With a model directory and its tokenizer it bans every token that contains a digit, so the
 * model has to spell numbers out; with random weights it bans the tokens an unconstrained run
 * picked first.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openBackend } from "../backends/select.ts";
import { Engine } from "../engine/engine.ts";
import { kernelLogitsProcessor } from "../engine/logits_processors.ts";
import type { SamplingParams } from "../engine/sequence.ts";
import { compileKernels } from "../kernels/compile.ts";
import { CONFIG_PRESETS } from "../models/config.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A examples/logits_processor.ts [MODEL_DIR] [-p PROMPT] [-n N]

Bans a token set with a run-time compiled kernel (a logits processor) and checks the output
against the built-in bannedTokenIds. Needs a GPU and NVRTC (or hipRTC). Without MODEL_DIR it
uses random weights shaped like Llama-3.2-1B (2 layers).
  -p, --prompt TEXT    the prompt (with a model directory; default "Count: 1, 2, 3,")
  -n, --max-tokens N   tokens to generate (default 32)
  -h, --help           show this help`;

/**
 * The processor kernel, in the row signature every kernel processor has: logits rows[k] for
 * k < count (gridDim.y = count), then its own arguments: the banned ids and their count.
 */
export const BAN_SOURCE = `
extern "C" __global__ void ban_tokens(float* logits, const int* rows, int count, int vocab,
                                      const int* banned, int n) {
  float* row = logits + (size_t)rows[blockIdx.y] * vocab;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[banned[i]] = __int_as_float(0xff800000);  // -inf
}
`;

async function main(args: string[]): Promise<number> {
  if (helpRequested(args, USAGE)) return 0;
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      prompt: { type: "string", short: "p", default: "Count: 1, 2, 3," },
      "max-tokens": { type: "string", short: "n", default: "32" },
    },
  });
  const gpu = openBackend("auto");
  if (gpu.kind === "cpu") {
    console.error("no GPU found: kernel processors need the cuda or hip backend");
    gpu.close();
    return 1;
  }
  const log = (line: string) => console.error(line);
  const modelDir = positionals[0];
  const engine = modelDir !== undefined
    ? await Engine.load(modelDir, { backend: gpu, log })
    : await Engine.load(
      { config: { ...CONFIG_PRESETS["llama3.2-1b"], numHiddenLayers: 2 }, randomWeights: true },
      { backend: gpu, maxRunning: 8, maxModelLen: 512, log },
    );
  try {
    const tokenizer = engine.tokenizer;
    const prompt = tokenizer ? values.prompt : Array.from({ length: 12 }, (_, i) => 100 + 37 * i);
    const base: Partial<SamplingParams> = {
      temperature: 0,
      maxTokens: Number(values["max-tokens"]),
      ignoreEos: tokenizer === null,
    };
    const ids = async (params: Partial<SamplingParams>) => {
      const out: number[] = [];
      for await (const chunk of engine.generate(prompt, { ...base, ...params })) {
        if (chunk.tokenId >= 0) out.push(chunk.tokenId);
      }
      return out;
    };

    const plain = await ids({});
    const banned = tokenizer
      ? Array.from({ length: engine.config.vocabSize }, (_, id) => id).filter((id) =>
        /[0-9]/.test(tokenizer.decode([id]))
      )
      : [...new Set(plain.slice(0, 4))];
    console.log(`banning ${banned.length} tokens`);

    const mod = await compileKernels(gpu, BAN_SOURCE, { name: "ban_tokens" });
    const list = gpu.alloc(4 * banned.length);
    gpu.copyToDevice(list, Int32Array.from(banned));
    // One block per row is plenty: the kernel loops over the banned ids, not the vocabulary.
    const processor = kernelLogitsProcessor(mod, "ban_tokens", {
      args: [list, banned.length],
      blocksPerRow: 1,
    });
    const withKernel = await ids({ logitsProcessors: [processor] });
    const withBuiltin = await ids({ bannedTokenIds: banned });

    const show = (tokens: number[]) =>
      tokenizer ? JSON.stringify(tokenizer.decode(tokens)) : tokens.join(" ");
    console.log(`unconstrained:       ${show(plain)}`);
    console.log(`user kernel:         ${show(withKernel)}`);
    console.log(`built-in banned ids: ${show(withBuiltin)}`);
    gpu.free(list);
    mod.module.unload();
    const bannedSet = new Set(banned);
    if (withKernel.some((id) => bannedSet.has(id))) {
      console.error("FAILED: a banned token was generated");
      return 1;
    }
    if (withKernel.join() !== withBuiltin.join()) {
      console.error("FAILED: the kernel processor and the built-in disagree");
      return 1;
    }
    console.log("OK: the user kernel bans exactly what bannedTokenIds bans");
    return 0;
  } finally {
    await engine.close();
    gpu.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
