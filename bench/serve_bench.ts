/**
 * A serving benchmark shaped like lmdeploy's profile_throughput.py: N streaming completion
 * requests at concurrency C against a running Denali (or any OpenAI-compatible) server. Prompt
 * and output lengths are drawn deterministically from long-tailed distributions matching
 * ShareGPT's shape (mean about 227 prompt and 200 completion tokens); `ignore_eos` holds the
 * lengths fixed. Reports first-token latency min/max/avg, per-token latency p50/75/95/99,
 * completion and total tokens per second, and requests per second.
 *
 * Usage: deno run -A bench/serve_bench.ts [--url http://127.0.0.1:8000] [--requests 1000]
 *        [--concurrency 256] [--seed 0] [--vocab 32000] [--max-len 2048] [--dump-workload FILE]
 *
 * `--dump-workload FILE` writes the requests (prompt token ids and output lengths) as JSON and
 * exits without contacting a server, so baselines outside Deno (bench/serve_hf.py) replay exactly
 * the same workload. The shapes are drawn in order from one stream, so the first K requests of
 * any larger count are the K-request workload: a baseline run on a prefix is comparable to
 * `--requests K` here.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/serve_bench.ts [options]

Sends a seeded workload of random-token requests to a running OpenAI-compatible server and prints
throughput and latency.
  --url URL              server (default http://127.0.0.1:8000)
  --requests N           requests (default 1000)
  --concurrency N        requests in flight (default 256)
  --seed N               workload seed (default 0)
  --vocab N              token ids drawn below N (default 32000)
  --max-len N            longest prompt + output (default 2048)
  --dump-workload FILE   write the requests as JSON and exit
  -h, --help             show this help`;

/** One request's shape. */
export interface RequestShape {
  /** Prompt token ids. */
  readonly prompt: number[];
  /** Completion tokens to generate. */
  readonly outputTokens: number;
}

/** A seeded xorshift32 uniform in (0, 1). */
function uniform(seed: number): () => number {
  let s = (seed >>> 0) || 0x2545f491;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 2 ** 32;
  };
}

/**
 * Deterministic request shapes: log-normal lengths (σ = 1, long-tailed like ShareGPT), clipped
 * to [4, maxLen / 2]. The pre-clip means (242 and 213) are chosen so the clipped means come out
 * at ShareGPT's 227 prompt and 200 completion tokens (227.7 and 200.6 for 5000 requests, seed 0).
 */
export function requestShapes(
  count: number,
  seed: number,
  vocab: number,
  maxLen: number,
): RequestShape[] {
  const next = uniform(seed);
  const normal = () => Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  const sigma = 1;
  // A log-normal's mean is exp(mu + sigma²/2).
  const draw = (mean: number) => {
    const mu = Math.log(mean) - sigma * sigma / 2;
    return Math.max(
      4,
      Math.min(Math.floor(maxLen / 2), Math.round(Math.exp(mu + sigma * normal()))),
    );
  };
  return Array.from({ length: count }, () => {
    const promptLength = draw(242);
    return {
      prompt: Array.from({ length: promptLength }, () => 100 + Math.floor(next() * (vocab - 100))),
      outputTokens: draw(213),
    };
  });
}

/** The JSON file `--dump-workload` writes: the generator's parameters and every request. */
export interface WorkloadFile {
  /** Generator seed. */
  readonly seed: number;
  /** Token ids are drawn from [100, vocab). */
  readonly vocab: number;
  /** Prompt and output lengths are clipped to [4, maxLen / 2]. */
  readonly maxLen: number;
  /** The requests, in the order the benchmark sends them. */
  readonly requests: RequestShape[];
}

/** The workload `--dump-workload` writes for the given generator parameters. */
export function workloadFile(
  count: number,
  seed: number,
  vocab: number,
  maxLen: number,
): WorkloadFile {
  return { seed, vocab, maxLen, requests: requestShapes(count, seed, vocab, maxLen) };
}

/** What one request measured. */
interface RequestResult {
  readonly firstTokenMs: number;
  readonly tokenGapsMs: number[];
  readonly promptTokens: number;
  readonly completionTokens: number;
}

/** Sends one streaming completion and times its tokens. */
async function send(url: string, model: string, shape: RequestShape): Promise<RequestResult> {
  const started = performance.now();
  const response = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model,
      prompt: shape.prompt,
      max_tokens: shape.outputTokens,
      temperature: 0,
      stream: true,
      ignore_eos: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!response.ok || !response.body) {
    throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  }
  let first = 0, last = 0, chunks = 0, completionTokens = 0;
  const gaps: number[] = [];
  let buffered = "";
  for await (const text of response.body.pipeThrough(new TextDecoderStream())) {
    buffered += text;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end).replace(/^data: /, "");
      buffered = buffered.slice(end + 2);
      if (event === "[DONE]") continue;
      const payload = JSON.parse(event);
      if (payload.usage) completionTokens = payload.usage.completion_tokens;
      if (!payload.choices?.length) continue;
      const now = performance.now();
      if (chunks++ === 0) first = now;
      else gaps.push(now - last);
      last = now;
    }
  }
  return {
    firstTokenMs: first - started,
    tokenGapsMs: gaps,
    promptTokens: shape.prompt.length,
    completionTokens: completionTokens || chunks,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : NaN;
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string", default: "http://127.0.0.1:8000" },
      requests: { type: "string", default: "1000" },
      concurrency: { type: "string", default: "256" },
      seed: { type: "string", default: "0" },
      vocab: { type: "string", default: "32000" },
      "max-len": { type: "string", default: "2048" },
      "dump-workload": { type: "string" },
    },
  });
  if (values["dump-workload"]) {
    const workload = workloadFile(
      Number(values.requests),
      Number(values.seed),
      Number(values.vocab),
      Number(values["max-len"]),
    );
    await Deno.writeTextFile(values["dump-workload"], JSON.stringify(workload));
    const mean = (xs: number[]) => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1);
    console.log(
      `wrote ${workload.requests.length} requests to ${values["dump-workload"]}: mean prompt ` +
        `${mean(workload.requests.map((r) => r.prompt.length))}, mean output ` +
        `${mean(workload.requests.map((r) => r.outputTokens))} tokens`,
    );
    return;
  }
  const url = values.url!;
  const models = await (await fetch(`${url}/v1/models`)).json();
  const model = models.data[0].id;
  const shapes = requestShapes(
    Number(values.requests),
    Number(values.seed),
    Number(values.vocab),
    Number(values["max-len"]),
  );
  const concurrency = Number(values.concurrency);
  const results: RequestResult[] = [];
  let nextIndex = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (nextIndex < shapes.length) results.push(await send(url, model, shapes[nextIndex++]));
  }));
  const seconds = (performance.now() - started) / 1000;
  const firsts = results.map((r) => r.firstTokenMs);
  const gaps = results.flatMap((r) => r.tokenGapsMs).sort((a, b) => a - b);
  const completion = results.reduce((sum, r) => sum + r.completionTokens, 0);
  const prompt = results.reduce((sum, r) => sum + r.promptTokens, 0);
  const ms = (x: number) => x.toFixed(1);
  console.log(`model ${model}; ${results.length} requests, concurrency ${concurrency}`);
  console.log(
    `first-token latency (ms): min ${ms(Math.min(...firsts))}, max ${ms(Math.max(...firsts))}, ` +
      `avg ${ms(firsts.reduce((a, b) => a + b, 0) / firsts.length)}`,
  );
  console.log(
    `per-token latency (ms): p50 ${ms(percentile(gaps, 0.5))}, p75 ${
      ms(percentile(gaps, 0.75))
    }, ` +
      `p95 ${ms(percentile(gaps, 0.95))}, p99 ${ms(percentile(gaps, 0.99))}`,
  );
  console.log(`completion tok/s: ${(completion / seconds).toFixed(1)}`);
  console.log(`total tok/s: ${((completion + prompt) / seconds).toFixed(1)}`);
  console.log(`RPS: ${(results.length / seconds).toFixed(2)}`);
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) await main();
