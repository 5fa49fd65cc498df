/**
 * Denali's OpenAI-compatible server: `deno run -A serve.ts [options]`.
 *
 * Loads a model (a Hugging Face directory of Llama, Qwen2, Qwen3 or Mistral, the embedded tiny
 * model by default, or a preset shape with random weights), then serves /v1/completions, /v1/chat/completions, /v1/models,
 * /health and /metrics. SIGINT or SIGTERM stops accepting, cancels in-flight requests, closes
 * the engine and exits 0. The port is checked before the model loads, so a port in use costs one
 * line and no loading time.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { AUTO_ORDER, type BackendChoice, openBackend } from "./mod.ts";
import { Engine, type RandomWeightsSource } from "./engine/engine.ts";
import { CONFIG_PRESETS, configPreset } from "./models/config.ts";
import { KV_CACHE_DTYPES, resolveKvCacheDtype } from "./engine/kv_cache.ts";
import { API_KEY_ENV, resolveApiKey } from "./server/auth.ts";
import { startServer } from "./server/server.ts";
import { formatSummary, summarizeSteps } from "./engine/step_profile.ts";
import { loadedModelCost } from "./engine/roofline.ts";

const DEFAULT_MODEL = fileURLToPath(new URL("./checkpoints/tiny-llama", import.meta.url));

const HELP = `Usage: deno run -A serve.ts [options]

Options:
  --model DIR                  Hugging Face model directory: Llama, Qwen2, Qwen3, Mistral (default: the embedded tiny-llama)
  --random-weights PRESET      random weights of a preset shape (${
  Object.keys(CONFIG_PRESETS).join(", ")
}),
                               with --model's tokenizer if --model is given
  --host HOST                  interface to bind (default 127.0.0.1)
  --port N                     TCP port (default 8000; 0 picks a free one)
  --backend auto|${AUTO_ORDER.join("|")}  device backend (default auto: the first with a device)
  --device N                   GPU ordinal (default 0)
  --api-key-file PATH          require \`Authorization: Bearer KEY\` on /v1/*, KEY being the
                               file's first line (or set ${API_KEY_ENV}=KEY; --api-key KEY
                               works too, but shows in \`ps\`). /health and /metrics stay open.
  --quantization fp8           hold the linear weights in FP8 E4M3 (W8A16), quantizing a bf16
                               checkpoint at load with per-channel scales; FP8 checkpoints
                               (compressed-tensors, fp8) run in FP8 without it
  --kv-cache-dtype ${KV_CACHE_DTYPES.join("|")}
                               KV cache element type (default auto = bf16); fp8 (alias
                               fp8_e4m3) stores E4M3 with K/V scales 1, twice the tokens
                               (GPU kernels not yet checked on a GPU)
  --max-queue N                waiting requests before new ones get 429 (default 256)
  --kv-fraction F              fraction of free device memory for the KV cache (default 0.9)
  --max-model-len N            most tokens per sequence (default: the model's context)
  --max-num-seqs N             most sequences in one step, as in vLLM (default 1024 on a GPU
                               of 64 GiB or more, else 256)
  --max-num-batched-tokens N   most tokens computed in one step, the chunked-prefill budget
                               (default 8192 on a GPU of 64 GiB or more, else 2048;
                               >= --max-num-seqs)
  -h, --help                   show this help`;

function positiveInt(name: string, text: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`--${name} ${text} must be an integer >= ${min}`);
  }
  return value;
}

/**
 * Why the server could not listen on `host`:`port`, or null when it can: checked by binding and
 * closing at once, before minutes of model loading.
 */
export function portProblem(hostname: string, port: number): string | null {
  if (port === 0) return null;
  try {
    Deno.listen({ hostname, port }).close();
    return null;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      return `port ${port} on ${hostname} is already in use; stop what holds it or pick ` +
        "another with --port";
    }
    return `cannot listen on ${hostname}:${port}: ${(error as Error).message}; check --host ` +
      "and --port";
  }
}

/** Parses the command line, loads the engine and serves until a signal; resolves the exit code. */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: "string" },
        "random-weights": { type: "string" },
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8000" },
        backend: { type: "string", default: "auto" },
        device: { type: "string", default: "0" },
        "api-key": { type: "string" },
        "api-key-file": { type: "string" },
        quantization: { type: "string" },
        "kv-cache-dtype": { type: "string" },
        "max-queue": { type: "string", default: "256" },
        "kv-fraction": { type: "string" },
        "max-model-len": { type: "string" },
        "max-num-seqs": { type: "string" },
        "max-num-batched-tokens": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const choice = values.backend as BackendChoice;
  let port, device, maxQueue, kvFraction, maxModelLen, maxRunning, maxBatchedTokens, apiKey;
  let kvCacheDtype;
  try {
    if (choice !== "auto" && !AUTO_ORDER.includes(choice)) {
      throw new Error(`--backend ${choice} is not one of auto, ${AUTO_ORDER.join(", ")}`);
    }
    port = positiveInt("port", values.port, 0);
    if (port > 65535) throw new Error(`--port ${port} is not a TCP port`);
    device = positiveInt("device", values.device, 0);
    maxQueue = positiveInt("max-queue", values["max-queue"], 1);
    if (values["kv-fraction"] !== undefined) {
      kvFraction = Number(values["kv-fraction"]);
      if (!(kvFraction > 0 && kvFraction <= 1)) {
        throw new Error(`--kv-fraction ${values["kv-fraction"]} must be in (0, 1]`);
      }
    }
    if (values["max-model-len"] !== undefined) {
      maxModelLen = positiveInt("max-model-len", values["max-model-len"], 2);
    }
    if (values["max-num-seqs"] !== undefined) {
      maxRunning = positiveInt("max-num-seqs", values["max-num-seqs"], 1);
    }
    if (values["max-num-batched-tokens"] !== undefined) {
      maxBatchedTokens = positiveInt("max-num-batched-tokens", values["max-num-batched-tokens"], 1);
    }
    if (values["random-weights"] !== undefined) configPreset(values["random-weights"]);
    if (values.quantization !== undefined && values.quantization !== "fp8") {
      throw new Error(`--quantization ${values.quantization} is not supported; use fp8`);
    }
    kvCacheDtype = resolveKvCacheDtype(values["kv-cache-dtype"], "--kv-cache-dtype");
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${HELP}`);
    return 2;
  }

  const log = (line: string) => console.error(`[denali] ${line}`);
  try {
    apiKey = resolveApiKey({
      flag: values["api-key"],
      file: values["api-key-file"],
      env: Deno.env.get(API_KEY_ENV),
    });
  } catch (error) {
    log((error as Error).message);
    return 2;
  }
  const unavailable = portProblem(values.host, port);
  if (unavailable !== null) {
    log(unavailable);
    return 1;
  }

  let backend;
  let engine: Engine;
  try {
    backend = openBackend(choice, {
      device,
      onSkip: (kind, why) => log(`skipped ${kind}: ${why.split("\n")[0]}`),
    });
    const preset = values["random-weights"];
    const source: string | RandomWeightsSource = preset === undefined
      ? (values.model ?? DEFAULT_MODEL)
      : { config: configPreset(preset), randomWeights: true, tokenizerDir: values.model };
    engine = await Engine.load(source, {
      backend,
      kvFraction,
      maxModelLen,
      maxRunning,
      maxBatchedTokens,
      log,
      quantization: values.quantization === "fp8" ? "fp8" : null,
      kvCacheDtype,
    });
  } catch (error) {
    backend?.close();
    log((error as Error).message);
    return 1;
  }
  const { info } = engine;
  log(
    `model ${info.model} on ${info.backend} (${info.device}); KV cache ${info.kvBlocks} blocks, ` +
      `${info.kvTokens} tokens, ${info.kvCacheDtype}; max model len ${engine.maxModelLen}`,
  );
  const server = startServer(engine, {
    host: values.host,
    port,
    apiKey,
    maxQueue,
    onListen: (addr) => log(`serving on http://${addr.hostname}:${addr.port}/v1`),
  });

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
  log("shutting down: cancelling in-flight requests");
  await server.stop(5000);
  // DENALI_PROFILE=steps: the step profile of the whole run (no roofline: that needs the
  // device's ceilings, which bench/engine_bench.ts measures).
  const profile = engine.stepProfile;
  if (profile !== null) {
    for (
      const line of formatSummary(
        summarizeSteps(profile, loadedModelCost(engine.config, engine.info), null),
      )
    ) {
      log(line);
    }
  }
  await engine.close();
  backend.close();
  log("stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
