/**
 * The server tests' start-up: the embedded tiny model on the CPU backend, served in-process on
 * an ephemeral port, with the real `openai` client pointed at it, and the OpenAI-shaped error
 * check the raw-fetch cases share.
 *
 * @module
 */

import assert from "node:assert/strict";
import OpenAI from "npm:openai@6.49.0";
import { Engine, type EngineOptions, type RandomWeightsSource } from "../../engine/engine.ts";
import type { RouteOptions } from "../../server/routes.ts";
import { type RunningServer, startServer } from "../../server/server.ts";

/** The embedded tiny Llama (vocabulary of 282, byte-level BPE, 1024-token context). */
export const TINY_MODEL_DIR: string =
  new URL("../../checkpoints/tiny-llama", import.meta.url).pathname;

/** The longest any test request (and its streamed body) may take, in ms. */
export const REQUEST_DEADLINE_MS = 120_000;

/** A served engine and the ways to talk to it. */
export interface TestServer {
  /** The engine (CPU backend). */
  readonly engine: Engine;
  /** The HTTP server. */
  readonly server: RunningServer;
  /** Base URL, without /v1. */
  readonly base: string;
  /** The model name the server answers to. */
  readonly model: string;
  /** An `openai` client on base/v1 that never retries. */
  readonly client: OpenAI;
  /** POSTs `body` (JSON-encoded unless a string or stream) to `path`. */
  post(path: string, body: unknown, init?: RequestInit): Promise<Response>;
  /** Stops the server, then closes the engine. */
  close(): Promise<void>;
}

/** What to serve and how, beyond the engine's options. */
export interface TestServeOptions extends RouteOptions {
  /** The model directory, or random weights; the tiny model by default. */
  readonly modelDir?: string | RandomWeightsSource;
}

/**
 * Loads the tiny model (or `serve.modelDir`) on the CPU with `options` (seed 1, quiet, unless
 * given) and serves it on an ephemeral port with the route options in `serve`.
 */
export async function startTestServer(
  options: EngineOptions = {},
  serve: TestServeOptions = {},
): Promise<TestServer> {
  const engine = await Engine.load(serve.modelDir ?? TINY_MODEL_DIR, {
    seed: 1,
    log: () => {},
    ...options,
    backend: "cpu",
  });
  const server = startServer(engine, { ...serve, port: 0 });
  const base = server.url;
  return {
    engine,
    server,
    base,
    model: engine.info.model,
    // Every request has a deadline (for `post`, reading its body too): a regression fails the
    // test instead of hanging CI.
    client: new OpenAI({
      baseURL: `${base}/v1`,
      apiKey: "unused",
      maxRetries: 0,
      timeout: REQUEST_DEADLINE_MS,
    }),
    post: (path, body, init = {}) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" || body instanceof ReadableStream
          ? body
          : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_DEADLINE_MS),
        ...init,
      }),
    close: async () => {
      await server.stop(2000);
      await engine.close();
    },
  };
}

/**
 * Asserts an OpenAI-shaped error `{"error": {message, type, param, code}}` with `status`; with
 * `param`, that the error names it both in `param` and in the message. Returns the error.
 */
export async function assertApiError(
  res: Response,
  status: number,
  param: string | null,
  what = "",
): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  const body = await res.json();
  assert.deepStrictEqual(res.status, status, `${what}: ${JSON.stringify(body)}`);
  assert(typeof body.error?.message === "string", `${what}: ${JSON.stringify(body)}`);
  assert(typeof body.error.type === "string");
  assert("param" in body.error && "code" in body.error);
  if (param !== null) {
    assert.deepStrictEqual(body.error.param, param, `${what}: ${JSON.stringify(body)}`);
    assert(body.error.message.includes(param), body.error.message);
  }
  return body.error;
}

/** How long a test waits for the server by default before it fails, in ms. */
export const WAIT_MS = 10_000;

/**
 * Polls `condition` every `pollMs` until it holds; fails naming `what` after `timeoutMs`, so a
 * regression fails the test instead of hanging CI.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs: number = WAIT_MS,
  pollMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `${what}: still not so after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** `promise`, or a failure naming `what` if it has not settled within `timeoutMs`. */
export async function within<T>(
  promise: Promise<T>,
  what: string,
  timeoutMs: number = WAIT_MS,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The rest of a stream from `reader` as text, read to its end within `timeoutMs`. */
export function readRest(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  what: string,
  timeoutMs: number = WAIT_MS,
): Promise<string> {
  return within(
    (async () => {
      const decoder = new TextDecoder();
      let text = "";
      while (true) {
        const { value, done } = await reader.read();
        if (done) return text + decoder.decode();
        text += decoder.decode(value, { stream: true });
      }
    })(),
    what,
    timeoutMs,
  );
}
