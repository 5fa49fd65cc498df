/**
 * Soak test: mixed traffic against an in-process OpenAI-compatible server for a set time —
 * streamed completions and chats, streams the client aborts, stop strings, logprobs, plain chats
 * and bad requests — then the checks a long-running server must pass:
 * - RSS (and device memory, on a GPU) flat after warm-up;
 * - KV cache usage back to 0 once the traffic stops;
 * - no 5xx, no request without an answer, every bad request a 4xx;
 * - every completed stream well formed (see {@link checkStream}).
 *
 * CPU (CI): the tiny checkpoint, 2 minutes. GPU: random Llama-3-8B weights (the test tokenizer's
 * vocabulary, so generated ids decode), 10 minutes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Backend } from "../backends/backend.ts";
import { openBackend } from "../backends/select.ts";
import { Engine, type RandomWeightsSource } from "../engine/engine.ts";
import { configPreset } from "../models/config.ts";
import { Tokenizer } from "../engine/tokenizer.ts";
import { startServer } from "../server/server.ts";
import { helpRequested } from "../tools/cli.ts";
import { mulberry32 } from "../tests/support/numeric.ts";

const USAGE = `Usage: deno run -A bench/soak.ts [options]

Mixed traffic (streams, aborts, stop strings, logprobs, bad requests) against an in-process
server, then TARGET lines: no 5xx, well-formed streams, KV usage back to 0, memory flat.
  --gpu               random Llama-3-8B weights on the GPU (default: the tiny model, CPU)
  --minutes M         how long the traffic runs (default 2; 10 with --gpu)
  --warmup-s S        seconds before memory counts as settled (default: a fifth of the run)
  --concurrency N     requests in flight (default 8; 64 with --gpu)
  --seed N            traffic seed (default 1)
  -h, --help          show this help`;

/** RSS or device-memory growth after warm-up that still counts as flat, in MiB. */
export const FLAT_MIB = 64;

/** The kinds of request the soak sends. */
export const KINDS = [
  "stream",
  "chat_stream",
  "abort",
  "stop",
  "logprobs",
  "chat",
  "bad",
] as const;

/** One kind of request. */
export type Kind = typeof KINDS[number];

/** What a soak run saw. */
export interface SoakResult {
  /** Seconds the traffic ran. */
  readonly seconds: number;
  /** Requests sent, by kind. */
  readonly sent: Record<Kind, number>;
  /** Replies by HTTP status. */
  readonly statuses: Record<number, number>;
  /** Replies with a 5xx status. */
  readonly serverErrors: number;
  /** What went wrong with requests that got no right answer (timeouts, bad shapes, wrong status). */
  readonly failures: string[];
  /** Completed streams that were malformed, with the problem. */
  readonly malformed: string[];
  /** KV blocks still used once the traffic stopped and settled. */
  readonly kvBlocksAfter: number;
  /** RSS at the end of warm-up and at the end, in MiB (highest sample of each window). */
  readonly rssMiB: { readonly start: number; readonly end: number };
  /** Device memory in use, likewise; null on the CPU. */
  readonly deviceMiB: { readonly start: number; readonly end: number } | null;
}

/** Options of {@link soak}. */
export interface SoakOptions {
  /** Seconds of traffic. */
  readonly seconds: number;
  /** Seconds before memory counts as settled. */
  readonly warmupSeconds: number;
  /** Requests in flight. */
  readonly concurrency: number;
  /** Traffic seed. */
  readonly seed: number;
  /** Largest max_tokens a request asks for. */
  readonly maxTokens: number;
  /** Progress lines. */
  readonly log?: (line: string) => void;
}

const WORDS = [
  "the",
  "cat",
  "sat",
  "on",
  "a",
  "mat",
  "and",
  "then",
  "ran",
  "far",
  "away",
  "é",
  "世界",
];

/**
 * Why a completed SSE body is not a well-formed OpenAI stream, or null when it is: every event
 * is `data: <JSON object>` without an `error`, all share one id, exactly one choice chunk has a
 * finish_reason and no choice chunk follows it, chat starts with the assistant role, the usage
 * chunk (if any) comes last with consistent counts, and `data: [DONE]` ends the body.
 */
export function checkStream(body: string, kind: "completion" | "chat"): string | null {
  if (!body.endsWith("\n\n")) return "the body does not end with a blank line";
  const events = body.slice(0, -2).split("\n\n");
  if (events.at(-1) !== "data: [DONE]") return "the last event is not data: [DONE]";
  let id: string | null = null;
  let finished = false;
  let usageSeen = false;
  for (let i = 0; i < events.length - 1; i++) {
    const event = events[i];
    if (!event.startsWith("data: ")) return `event ${i} is not a data line`;
    let chunk;
    try {
      chunk = JSON.parse(event.slice(6));
    } catch {
      return `event ${i} is not JSON`;
    }
    if (typeof chunk !== "object" || chunk === null) return `event ${i} is not an object`;
    if ("error" in chunk) return `event ${i} is an error: ${JSON.stringify(chunk.error)}`;
    id ??= chunk.id;
    if (chunk.id !== id) return `event ${i} has id ${chunk.id}, not ${id}`;
    if (usageSeen) return `event ${i} follows the usage chunk`;
    if (!Array.isArray(chunk.choices)) return `event ${i} has no choices`;
    if (chunk.choices.length === 0) {
      const u = chunk.usage;
      if (!u) return `event ${i} has neither choices nor usage`;
      if (!finished) return `the usage chunk (event ${i}) comes before the finish`;
      if (
        !(u.completion_tokens >= 1) || u.total_tokens !== u.prompt_tokens + u.completion_tokens
      ) {
        return `usage is inconsistent: ${JSON.stringify(u)}`;
      }
      usageSeen = true;
      continue;
    }
    const choice = chunk.choices[0];
    if (finished) return `choice event ${i} follows the finish`;
    if (kind === "chat") {
      if (typeof choice.delta !== "object" || choice.delta === null) return `event ${i}: no delta`;
      if (i === 0 && choice.delta.role !== "assistant") return "chat does not start with the role";
    } else if (typeof choice.text !== "string") return `event ${i}: text is not a string`;
    if (choice.finish_reason !== null && choice.finish_reason !== undefined) {
      if (!["stop", "length"].includes(choice.finish_reason)) {
        return `event ${i}: finish_reason ${choice.finish_reason}`;
      }
      finished = true;
    }
  }
  return finished ? null : "no chunk carries a finish_reason";
}

/** The bad requests a careless or hostile client sends: each must get a 4xx. */
function badRequest(pick: () => number, model: string): { path: string; init: RequestInit } {
  const json = { "content-type": "application/json" };
  const cases: { path: string; init: RequestInit }[] = [
    { path: "/v1/completions", init: { method: "POST", headers: json, body: "{not json" } },
    { path: "/v1/completions", init: { method: "POST", headers: json, body: '{"prompt": 5}' } },
    {
      path: "/v1/completions",
      init: { method: "POST", headers: json, body: '{"prompt": "x", "max_tokens": -1}' },
    },
    {
      path: "/v1/chat/completions",
      init: { method: "POST", headers: json, body: '{"messages": []}' },
    },
    {
      path: "/v1/completions",
      init: { method: "POST", headers: json, body: `{"prompt": "x", "model": "${model}-nope"}` },
    },
    {
      path: "/v1/completions",
      init: { method: "POST", headers: { "content-type": "text/plain" }, body: '{"prompt": "x"}' },
    },
    { path: "/v1/completions", init: { method: "GET" } },
    {
      path: "/v1/completions",
      init: { method: "POST", headers: json, body: '{"prompt": "x", "max_tokens": 100000000}' },
    },
  ];
  return cases[Math.floor(pick() * cases.length)];
}

/** Highest value of `samples` whose time lies in [from, to). */
function peak(samples: readonly [number, number][], from: number, to: number): number {
  let best = -Infinity;
  for (const [t, v] of samples) if (t >= from && t < to) best = Math.max(best, v);
  return best;
}

const MIB = 2 ** 20;

/** Runs the soak against `engine` served in-process; `backend` gives device memory (GPU). */
export async function soak(
  engine: Engine,
  backend: Backend | null,
  options: SoakOptions,
): Promise<SoakResult> {
  const log = options.log ?? (() => {});
  const server = startServer(engine, { port: 0 });
  const base = server.url;
  const model = server.routes.modelName;
  const sent = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  const statuses: Record<number, number> = {};
  const failures: string[] = [];
  const malformed: string[] = [];
  const rss: [number, number][] = [];
  const device: [number, number][] = [];
  const t0 = performance.now();
  const now = () => (performance.now() - t0) / 1000;
  const sample = () => {
    rss.push([now(), Deno.memoryUsage().rss / MIB]);
    if (backend !== null) {
      const { free, total } = backend.memoryInfo();
      device.push([now(), (total - free) / MIB]);
    }
  };
  sample();
  const sampler = setInterval(sample, 1000);
  let lastReport = 0;

  const worker = async (seed: number) => {
    const pick = mulberry32(seed);
    const words = (n: number) =>
      Array.from({ length: n }, () => WORDS[Math.floor(pick() * WORDS.length)]).join(" ");
    const int = (lo: number, hi: number) => lo + Math.floor(pick() * (hi - lo + 1));
    while (now() < options.seconds) {
      const kind = KINDS[Math.floor(pick() * KINDS.length)];
      sent[kind]++;
      const maxTokens = int(1, options.maxTokens);
      const prompt = words(int(1, 40));
      const chat = kind === "chat_stream" || kind === "chat";
      const body: Record<string, unknown> = chat
        ? { model, messages: [{ role: "user", content: prompt }], max_tokens: maxTokens }
        : { model, prompt, max_tokens: maxTokens };
      if (kind !== "stop") body.temperature = pick() < 0.5 ? 0 : 1;
      if (kind === "stream" || kind === "chat_stream" || kind === "abort") {
        body.stream = true;
        body.stream_options = { include_usage: pick() < 0.5 };
      }
      if (kind === "stop") body.stop = [WORDS[int(0, 4)], WORDS[int(5, 10)]];
      if (kind === "logprobs") body.logprobs = int(0, 5);
      const path = chat ? "/v1/chat/completions" : "/v1/completions";
      const request = kind === "bad" ? badRequest(pick, model) : {
        path,
        init: {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        },
      };
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 120_000);
      try {
        const res = await fetch(`${base}${request.path}`, {
          ...request.init,
          signal: abort.signal,
        });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (kind === "bad") {
          if (res.status < 400 || res.status >= 500) {
            failures.push(`bad request ${request.init.body} got ${res.status}`);
          }
          await res.body?.cancel();
        } else if (res.status !== 200) {
          failures.push(`${kind} got ${res.status}: ${(await res.text()).slice(0, 200)}`);
        } else if (kind === "abort") {
          const reader = res.body!.getReader();
          for (let i = int(1, 3); i > 0; i--) if ((await reader.read()).done) break;
          abort.abort();
          await reader.cancel().catch(() => {});
        } else if (kind === "stream" || kind === "chat_stream") {
          const problem = checkStream(await res.text(), chat ? "chat" : "completion");
          if (problem !== null) malformed.push(`${kind}: ${problem}`);
        } else {
          const reply = await res.json();
          const choice = reply.choices?.[0];
          const text = chat ? choice?.message?.content : choice?.text;
          if (typeof text !== "string" || !["stop", "length"].includes(choice.finish_reason)) {
            failures.push(`${kind}: malformed reply ${JSON.stringify(reply).slice(0, 200)}`);
          } else if (kind === "stop" && (body.stop as string[]).some((s) => text.includes(s))) {
            failures.push(`stop: the text ${JSON.stringify(text)} holds a stop string`);
          } else if (kind === "logprobs") {
            const lp = choice.logprobs;
            const n = lp?.tokens?.length;
            if (
              !(n >= 1) || lp.token_logprobs.length !== n || lp.top_logprobs.length !== n ||
              lp.token_logprobs.some((x: number) => !(x <= 1e-6))
            ) {
              failures.push(`logprobs: malformed ${JSON.stringify(lp).slice(0, 200)}`);
            }
          }
        }
      } catch (error) {
        if (!(kind === "abort" && abort.signal.aborted)) {
          failures.push(`${kind}: ${(error as Error).message}`);
        }
      } finally {
        clearTimeout(timer);
      }
      if (now() - lastReport >= 30) {
        lastReport = now();
        const total = Object.values(sent).reduce((a, b) => a + b, 0);
        const stats = engine.stats();
        log(
          `t=${now().toFixed(0)}s requests=${total} rss=${rss.at(-1)![1].toFixed(0)}MiB ` +
            `heap=${(Deno.memoryUsage().heapUsed / MIB).toFixed(0)}MiB ` +
            `running=${stats.running} waiting=${stats.waiting} kv=${stats.kvBlocksUsed}`,
        );
      }
    }
  };

  await Promise.all(
    Array.from({ length: options.concurrency }, (_, i) => worker(options.seed * 1000 + i)),
  );
  const seconds = now();
  // Aborted requests free their blocks as the engine sees the abort: give it a moment.
  const settle = Date.now() + 10_000;
  while (engine.stats().kvBlocksUsed > 0 && Date.now() < settle) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const kvBlocksAfter = engine.stats().kvBlocksUsed;
  sample();
  clearInterval(sampler);
  await server.stop(5000);

  // Memory after warm-up: the peak of the first fifth of the settled run against the peak of
  // the last fifth, so one GC cycle's sawtooth does not read as a leak.
  const span = Math.max(seconds - options.warmupSeconds, 1);
  const window = span / 5;
  const startFrom = options.warmupSeconds;
  const endFrom = seconds - window;
  const growth = (samples: [number, number][]) => ({
    start: peak(samples, startFrom, startFrom + window),
    end: peak(samples, endFrom, Infinity),
  });
  const serverErrors = Object.entries(statuses)
    .filter(([status]) => Number(status) >= 500)
    .reduce((sum, [, count]) => sum + count, 0);
  return {
    seconds,
    sent,
    statuses,
    serverErrors,
    failures,
    malformed,
    kvBlocksAfter,
    rssMiB: growth(rss),
    deviceMiB: backend === null ? null : growth(device),
  };
}

/** The run's TARGET lines. */
export function soakTargets(result: SoakResult): string[] {
  const line = (name: string, value: number, goal: string, met: boolean) =>
    `TARGET ${name} value=${Number.isInteger(value) ? value : value.toFixed(1)} goal=${goal} ${
      met ? "met" : "MISSED"
    }`;
  const lines = [
    line("soak_5xx", result.serverErrors, "0", result.serverErrors === 0),
    line("soak_failed_requests", result.failures.length, "0", result.failures.length === 0),
    line("soak_malformed_streams", result.malformed.length, "0", result.malformed.length === 0),
    line("soak_kv_blocks_after", result.kvBlocksAfter, "0", result.kvBlocksAfter === 0),
  ];
  const rss = result.rssMiB.end - result.rssMiB.start;
  lines.push(line("soak_rss_growth_mib", rss, `<=${FLAT_MIB}`, rss <= FLAT_MIB));
  if (result.deviceMiB !== null) {
    const dev = result.deviceMiB.end - result.deviceMiB.start;
    lines.push(line("soak_device_mem_growth_mib", dev, `<=${FLAT_MIB}`, dev <= FLAT_MIB));
  }
  return lines;
}

/** Loads the model the mode asks for, runs the soak, prints the figures; resolves the exit code. */
async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      gpu: { type: "boolean", default: false },
      minutes: { type: "string" },
      "warmup-s": { type: "string" },
      concurrency: { type: "string" },
      seed: { type: "string", default: "1" },
    },
  });
  const gpu = values.gpu!;
  const seconds = 60 * Number(values.minutes ?? (gpu ? 10 : 2));
  const options: SoakOptions = {
    seconds,
    warmupSeconds: values["warmup-s"] === undefined ? seconds / 5 : Number(values["warmup-s"]),
    concurrency: Number(values.concurrency ?? (gpu ? 64 : 8)),
    seed: Number(values.seed),
    maxTokens: gpu ? 256 : 48,
    log: (line) => console.log(line),
  };
  const root = new URL("../", import.meta.url);
  const backend = openBackend(gpu ? "auto" : "cpu");
  if (gpu && backend.kind === "cpu") {
    console.error("--gpu: no GPU found (the CPU soak runs without --gpu)");
    return 1;
  }
  let engine: Engine;
  if (gpu) {
    const tokenizerDir = new URL("tests/fixtures/tokenizer", root).pathname;
    const tokenizer = await Tokenizer.load(tokenizerDir);
    const source: RandomWeightsSource = {
      config: { ...configPreset("llama3-8b"), vocabSize: tokenizer.vocabSize },
      randomWeights: true,
      seed: 1,
      tokenizerDir,
    };
    engine = await Engine.load(source, { backend, maxModelLen: 2048, log: console.error });
  } else {
    engine = await Engine.load(new URL("checkpoints/tiny-llama", root).pathname, {
      backend,
      maxModelLen: 1024,
      log: () => {},
    });
  }
  const { info } = engine;
  console.log(
    `soak: ${info.model} on ${info.backend} (${info.device}), ${seconds} s, ` +
      `${options.concurrency} in flight, warm-up ${options.warmupSeconds} s`,
  );
  const result = await soak(engine, gpu ? backend : null, options);
  await engine.close();
  backend.close();
  const total = Object.values(result.sent).reduce((a, b) => a + b, 0);
  console.log(
    `SOAK requests=${total} in ${result.seconds.toFixed(0)} s (${
      KINDS.map((k) => `${k}=${result.sent[k]}`).join(" ")
    })`,
  );
  console.log(
    `SOAK statuses ${Object.entries(result.statuses).map(([s, n]) => `${s}=${n}`).join(" ")}`,
  );
  const mem = (m: { start: number; end: number }) =>
    `start=${m.start.toFixed(0)} end=${m.end.toFixed(0)} MiB`;
  console.log(`SOAK rss ${mem(result.rssMiB)}`);
  if (result.deviceMiB !== null) console.log(`SOAK device memory used ${mem(result.deviceMiB)}`);
  for (const problem of [...result.failures, ...result.malformed].slice(0, 20)) {
    console.log(`PROBLEM ${problem}`);
  }
  const targets = soakTargets(result);
  for (const line of targets) console.log(line);
  return targets.every((line) => line.endsWith(" met")) ? 0 : 1;
}

if (import.meta.main && !helpRequested(Deno.args, USAGE)) Deno.exit(await main(Deno.args));
