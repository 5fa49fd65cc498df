/**
 * The HTTP routes of the OpenAI-compatible server: POST /v1/completions and
 * /v1/chat/completions (JSON or server-sent events), GET /v1/models, /v1/models/{id}, /health
 * and /metrics.
 *
 * With an API key, every /v1/* path needs it, known or not (401 comes before 404 and 405);
 * /health and /metrics stay open for load balancers and Prometheus. A known path asked with
 * another method gets 405 with `Allow`; a POST body must be declared application/json (415), so
 * a web page cannot make a browser post a form or text/plain to a server on localhost. Chat
 * without max_tokens may use the rest of the context, as in vLLM; max_tokens past it is a 400.
 *
 * Every request gets its own AbortController, aborted when the client goes away (the request's
 * signal, or the SSE stream's cancel) or when the server shuts down; the engine frees the
 * request's KV blocks as soon as it fires. A bad request only ever gets an error reply.
 *
 * @module
 */

import type { Engine, GenerationChunk } from "../engine/engine.ts";
import { type PreparedPrompt, PromptError } from "../engine/prompt.ts";
import type { PromptTokenLogprobs } from "../engine/prompt_logprobs.ts";
import { codePoints, type LogprobEntry } from "../engine/request_text.ts";
import { GrammarError } from "../engine/grammar/compiler.ts";
import { GrammarChoices } from "../engine/grammar/state.ts";
import { RequestRejectedError } from "../engine/scheduler.ts";
import { ChatTemplateError } from "../engine/tokenizer.ts";
import { ApiKeyCheck } from "./auth.ts";
import {
  ApiError,
  badField,
  methodNotAllowed,
  notFound,
  notJson,
  queueFull,
  tooLarge,
  unauthorized,
} from "./errors.ts";
import { chatLogprobs, completionLogprobs } from "./logprobs.ts";
import { Metrics } from "./metrics.ts";
import { type GenerationRequest, parseChatRequest, parseCompletionRequest } from "./schema.ts";
import type { OutputConstraint } from "./structured.ts";
import {
  callStart,
  mayOpenCalls,
  type ParsedAnswer,
  parseToolCalls,
  type ToolCall,
  type ToolCallFormat,
  toolCallFormat,
  toolCallId,
  type ToolFunction,
  toolGrammar,
} from "./tools.ts";
import { ToolCallScanner, type ToolCallSink } from "./tool_call_scanner.ts";
import { SSE_DONE, SSE_HEADERS, sseEvent } from "./sse.ts";
import { detokenize, tokenize } from "./tokenize.ts";

/** How the routes behave. */
export interface RouteOptions {
  /** Required bearer key for /v1/*, or null for none. */
  readonly apiKey?: string | null;
  /** Most requests waiting for the engine before new ones get 429; 256. */
  readonly maxQueue?: number;
  /** Largest request body in bytes; 4 MiB. */
  readonly maxBodyBytes?: number;
  /** The model name clients use; the engine's model name by default. */
  readonly modelName?: string;
}

type Kind = "completion" | "chat";

/** The method each fixed path takes. */
const ROUTES: Readonly<Record<string, string>> = {
  "/health": "GET",
  "/metrics": "GET",
  "/v1/models": "GET",
  "/v1/completions": "POST",
  "/v1/chat/completions": "POST",
  "/tokenize": "POST",
  "/detokenize": "POST",
};

/** Paths outside /v1 that still need the API key (vLLM leaves them open; they cost CPU). */
const TOKENIZER_PATHS = new Set(["/tokenize", "/detokenize"]);

/** GET /v1/models/{id}: one model by name. */
const MODEL_PATH = /^\/v1\/models\/([^/]+)$/;

/** The route's name for metrics and its method, or null for an unknown path. */
function routeOf(path: string): { name: string; method: string } | null {
  if (Object.hasOwn(ROUTES, path)) return { name: path, method: ROUTES[path] };
  if (MODEL_PATH.test(path)) return { name: "/v1/models/{id}", method: "GET" };
  return null;
}

/** Whether a Content-Type header declares JSON (`application/json`, any parameters). */
function isJson(contentType: string | null): boolean {
  return contentType?.split(";")[0].trim().toLowerCase() === "application/json";
}

/** The request handler and its state (metrics, live requests). */
export class Routes {
  /** The server's metrics. */
  readonly metrics: Metrics = new Metrics();
  /** The name /v1/models lists and requests may give. */
  readonly modelName: string;
  readonly #apiKey: ApiKeyCheck | null;
  readonly #maxQueue: number;
  readonly #maxBody: number;
  readonly #live = new Set<AbortController>();
  readonly #created = Math.floor(Date.now() / 1000);
  #closing = false;

  /** Creates the routes over a loaded engine. */
  constructor(readonly engine: Engine, options: RouteOptions = {}) {
    this.#apiKey = options.apiKey ? new ApiKeyCheck(options.apiKey) : null;
    this.#maxQueue = options.maxQueue ?? 256;
    this.#maxBody = options.maxBodyBytes ?? 4 * 2 ** 20;
    this.modelName = options.modelName ?? engine.info.model;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#live.size;
  }

  /** Refuses new generation requests and cancels those in flight (shutdown). */
  abortAll(): void {
    this.#closing = true;
    for (const controller of this.#live) controller.abort();
  }

  /** Answers one HTTP request; never throws. */
  handle = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname;
    let endpoint = "other";
    let response: Response;
    try {
      response = await this.#route(request, path, (e) => endpoint = e);
    } catch (error) {
      response = toApiError(error).toResponse();
    }
    this.metrics.countRequest(endpoint, response.status);
    return response;
  };

  async #route(request: Request, path: string, name: (e: string) => void): Promise<Response> {
    const method = request.method;
    if (
      this.#apiKey !== null && (path.startsWith("/v1/") || TOKENIZER_PATHS.has(path)) &&
      !this.#apiKey.matches(request.headers.get("authorization"))
    ) {
      throw unauthorized();
    }
    const route = routeOf(path);
    if (route === null) throw notFound(`no route for ${method} ${path}`);
    if (method !== route.method) throw methodNotAllowed(method, path, route.method);
    name(route.name);
    if (path === "/health") return Response.json({ status: "ok" });
    if (path === "/metrics") {
      return new Response(this.metrics.render(this.engine.stats()), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    }
    if (path === "/v1/models") return Response.json({ object: "list", data: [this.#model()] });
    const id = MODEL_PATH.exec(path)?.[1];
    if (id !== undefined) {
      const wanted = decodeURIComponent(id);
      if (wanted !== this.modelName) {
        throw notFound(
          `model '${wanted}' does not exist; this server has '${this.modelName}'`,
          "model",
        );
      }
      return Response.json(this.#model());
    }
    const contentType = request.headers.get("content-type");
    if (!isJson(contentType)) throw notJson(contentType);
    const text = await readBody(request, this.#maxBody);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new ApiError(400, `the body is not valid JSON: ${(error as Error).message}`);
    }
    if (path === "/tokenize" || path === "/detokenize") {
      if (json === null || typeof json !== "object" || Array.isArray(json)) {
        throw new ApiError(400, "the request body must be a JSON object");
      }
      const body = json as Record<string, unknown>;
      if (body.model !== undefined && body.model !== null && body.model !== this.modelName) {
        throw notFound(
          `model '${body.model}' does not exist; this server has '${this.modelName}'`,
          "model",
        );
      }
      return path === "/tokenize"
        ? await tokenize(this.engine, body)
        : detokenize(this.engine, body);
    }
    const kind: Kind = path === "/v1/completions" ? "completion" : "chat";
    const parsed = kind === "completion" ? parseCompletionRequest(json) : parseChatRequest(json);
    if (parsed.model !== null && parsed.model !== this.modelName) {
      throw notFound(
        `model '${parsed.model}' does not exist; this server has '${this.modelName}'`,
        "model",
      );
    }
    return this.#generate(request, kind, parsed, maxTokensField(json));
  }

  /** The model object of /v1/models and /v1/models/{id}. */
  #model() {
    return {
      id: this.modelName,
      object: "model",
      created: this.#created,
      owned_by: "denali",
      max_model_len: this.engine.maxModelLen,
    };
  }

  /**
   * The request's sampling parameters with max_tokens checked against the context the prompt
   * leaves: past it is a 400 naming `field`, as vLLM answers; chat without it may use all of it.
   */
  #withMaxTokens(
    kind: Kind,
    req: GenerationRequest,
    prompt: PreparedPrompt,
    field: string,
  ): GenerationRequest["params"] {
    const maxLen = this.engine.maxModelLen;
    const remaining = maxLen - prompt.ids.length;
    const asked = req.params.maxTokens;
    if (asked === undefined) {
      return kind === "chat" ? { ...req.params, maxTokens: remaining } : req.params;
    }
    if (asked > remaining) {
      throw badField(
        field,
        `is ${asked}, but the prompt is ${prompt.ids.length} tokens and this model's context is ` +
          `${maxLen} tokens, which leaves room for ${remaining}; send ${field} <= ${remaining} ` +
          "or a shorter prompt",
      );
    }
    return req.params;
  }

  /** Token ids in fields other than the prompt must be in the vocabulary. */
  #checkIds(req: GenerationRequest): void {
    const vocab = this.engine.config.vocabSize;
    const outside = (id: number) => id >= vocab;
    const bad = (field: string, id: number) =>
      badField(field, `token id ${id} is outside the vocabulary [0, ${vocab})`);
    const stopId = (req.params.stopTokenIds ?? []).find(outside);
    if (stopId !== undefined) throw bad("stop_token_ids", stopId);
    const biased = (req.params.logitBias ?? []).find(([id]) => outside(id));
    if (biased !== undefined) throw bad("logit_bias", biased[0]);
    const allowed = (req.params.allowedTokenIds ?? []).find(outside);
    if (allowed !== undefined) throw bad("allowed_token_ids", allowed);
  }

  /** The engine tokenizes and checks the prompt; its errors become 400s naming the field. */
  async #prepare(kind: Kind, req: GenerationRequest): Promise<PreparedPrompt> {
    const param = kind === "chat" ? "messages" : "prompt";
    try {
      // The template renders the tools (tool_choice "none" sends none, see server/tools.ts).
      return await this.engine.prepare(req.prompt, req.tools ? { tools: req.tools.tools } : {});
    } catch (error) {
      if (error instanceof PromptError) {
        const code = error.problem === "context_length_exceeded" ? error.problem : null;
        throw new ApiError(400, `${param}: ${error.message}`, param, undefined, code);
      }
      if (error instanceof ChatTemplateError || error instanceof TypeError) {
        throw new ApiError(400, `${param}: ${error.message}`, param);
      }
      throw error;
    }
  }

  /** The call format the model's chat template asks for. */
  get toolCallFormat(): ToolCallFormat {
    return toolCallFormat(this.engine.tokenizer?.chatTemplate ?? null);
  }

  /** The grammar that enforces tool_choice "required" or a named function, or null. */
  #toolConstraint(req: GenerationRequest): OutputConstraint | null {
    if (req.tools === null) return null;
    const spec = toolGrammar(req.tools, this.toolCallFormat);
    return spec === null ? null : { spec, field: "tools" };
  }

  /**
   * A grammar state for the request's output constraint (compiled once per spec, cached), or
   * null without one; a spec xgrammar refuses is a 400 naming the field and xgrammar's reason.
   */
  async #grammar(constraint: OutputConstraint | null, n: number): Promise<GrammarChoices | null> {
    if (constraint === null) return null;
    try {
      const compiler = await this.engine.grammarCompiler();
      const compiled = await compiler.compile(constraint.spec);
      const states = [];
      for (let i = 0; i < n; i++) states.push(await compiler.state(compiled));
      return new GrammarChoices(states);
    } catch (error) {
      if (error instanceof GrammarError || error instanceof TypeError) {
        throw badField(constraint.field, `is not usable by xgrammar: ${error.message}`);
      }
      throw error;
    }
  }

  async #generate(
    request: Request,
    kind: Kind,
    asked: GenerationRequest,
    maxTokensField: string,
  ): Promise<Response> {
    if (this.#closing) throw new ApiError(503, "the server is shutting down", null, "server_error");
    this.#checkIds(asked);
    const prompt = await this.#prepare(kind, asked);
    const sized = { ...asked, params: this.#withMaxTokens(kind, asked, prompt, maxTokensField) };
    if (this.engine.stats().waiting >= this.#maxQueue) throw queueFull(this.#maxQueue);
    const grammar = await this.#grammar(sized.constraint ?? this.#toolConstraint(sized), sized.n);
    const req = grammar === null ? sized : {
      ...sized,
      params: { ...sized.params, tokenBitmask: grammar },
    };
    const controller = new AbortController();
    const onClientGone = () => controller.abort();
    request.signal.addEventListener("abort", onClientGone, { once: true });
    let chunks: AsyncIterableIterator<GenerationChunk>;
    try {
      chunks = this.engine.generateChoices(prompt, req.params, req.n, controller.signal);
    } catch (error) {
      grammar?.dispose();
      request.signal.removeEventListener("abort", onClientGone);
      if (
        error instanceof RangeError || error instanceof TypeError ||
        error instanceof RequestRejectedError
      ) {
        throw new ApiError(400, error.message, kind === "chat" ? "messages" : null);
      }
      throw error;
    }
    this.#live.add(controller);
    const finish = () => {
      this.#live.delete(controller);
      request.signal.removeEventListener("abort", onClientGone);
      // The request has ended, so no step asks its grammar for another mask.
      grammar?.dispose();
    };
    this.metrics.promptTokens += prompt.ids.length;
    const run = new Run(this, kind, req, prompt, chunks);
    if (!req.stream) {
      try {
        return Response.json(await run.collect());
      } catch (error) {
        return toApiError(error).toResponse();
      } finally {
        finish();
      }
    }
    const stream = new ReadableStream<Uint8Array>({
      start: (sink) => {
        run.stream(sink).finally(finish);
      },
      cancel: () => controller.abort(),
    });
    return new Response(stream, { headers: SSE_HEADERS });
  }
}

/** One generation: turns engine chunks into OpenAI's JSON or SSE events. */
class Run {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  readonly #start = performance.now();
  #last = 0;
  completionTokens = 0;
  readonly promptTokens: number;
  readonly #logprobs: boolean;
  #echoLengthCache: number | undefined;
  #echoedCache: string | undefined;

  constructor(
    readonly routes: Routes,
    readonly kind: Kind,
    readonly req: GenerationRequest,
    readonly prompt: PreparedPrompt,
    readonly chunks: AsyncIterableIterator<GenerationChunk>,
  ) {
    this.id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID().replaceAll("-", "")}`;
    this.promptTokens = prompt.ids.length;
    this.#logprobs = req.params.logprobs !== null && req.params.logprobs !== undefined;
  }

  /**
   * The choice's `logprobs` for `entries` (and, with echo, the prompt's tokens first): null
   * when not asked for.
   */
  #formatLogprobs(
    entries: readonly LogprobEntry[],
    prompt: readonly PromptTokenLogprobs[] = [],
  ): unknown {
    if (!this.#logprobs) return null;
    const naming = { texts: this.routes.engine.tokenTexts, asIds: this.req.tokensAsIds };
    if (this.kind === "chat") return chatLogprobs(entries, naming);
    const echo = this.req.echo ? { tokens: prompt, length: this.#echoLength } : null;
    return completionLogprobs(entries, naming, echo);
  }

  /** Records timing of a chunk that carries a token. */
  #tick(chunk: GenerationChunk): void {
    if (chunk.tokenId < 0) return;
    const now = performance.now();
    const metrics = this.routes.metrics;
    if (this.completionTokens === 0) metrics.ttft.observe((now - this.#start) / 1000);
    else metrics.itl.observe((now - this.#last) / 1000);
    this.#last = now;
    this.completionTokens++;
    metrics.completionTokens++;
  }

  get usage() {
    return {
      prompt_tokens: this.promptTokens,
      completion_tokens: this.completionTokens,
      total_tokens: this.promptTokens + this.completionTokens,
    };
  }

  #head(object: string) {
    return { id: this.id, object, created: this.created, model: this.routes.modelName };
  }

  /**
   * The text a completion choice starts with, with `echo`: the prompt as sent, or token ids
   * decoded (special tokens skipped, as in the output).
   */
  get #echoed(): string {
    if (!this.req.echo) return "";
    return this.#echoedCache ??= this.prompt.text ??
      this.routes.engine.tokenizer?.decode(this.prompt.ids, { skipSpecialTokens: true }) ?? "";
  }

  /** The echoed text's length in code points: where the generated tokens' offsets start. */
  get #echoLength(): number {
    return this.#echoLengthCache ??= codePoints(this.#echoed);
  }

  async collect(): Promise<unknown> {
    const choices = Array.from({ length: this.req.n }, () => ({
      text: this.#echoed,
      reason: "stop",
      stopReason: null as number | string | null,
      ended: false,
      entries: [] as LogprobEntry[],
    }));
    let prompt: readonly PromptTokenLogprobs[] = [];
    for await (const chunk of this.chunks) {
      if (chunk.promptLogprobs !== undefined) {
        prompt = chunk.promptLogprobs;
        continue;
      }
      this.#tick(chunk);
      const choice = choices[chunk.index];
      choice.text += chunk.text;
      if (chunk.logprobs !== undefined) choice.entries.push(...chunk.logprobs);
      if (chunk.finishReason) {
        choice.reason = finishReason(chunk.finishReason);
        choice.stopReason = chunk.stopReason ?? null;
        choice.ended = true;
      }
    }
    if (!choices.every((c) => c.ended)) throw cutShort();
    const completion = this.kind === "completion";
    return {
      ...this.#head(completion ? "text_completion" : "chat.completion"),
      choices: choices.map((c, index) => {
        const answer = this.#answer(c.text);
        const message = answer.calls.length > 0
          ? { role: "assistant", content: answer.content, tool_calls: answer.calls }
          : { role: "assistant", content: c.text };
        return {
          index,
          ...(completion ? { text: c.text } : { message }),
          logprobs: this.#formatLogprobs(c.entries, prompt),
          finish_reason: answer.calls.length > 0 ? "tool_calls" : c.reason,
          stop_reason: c.stopReason,
        };
      }),
      usage: this.usage,
    };
  }

  /** A chat answer's text and tool calls (none without tools, or when it is text). */
  #answer(text: string): ParsedAnswer {
    const tools = this.req.tools;
    if (tools === null) return { content: text, calls: [] };
    return parseToolCalls(text, this.routes.toolCallFormat, tools.functions);
  }

  /**
   * One streamed chunk of choice `index`. `entries` are the logprobs that became final with it,
   * null for a chunk that carries no token (the chat role chunk, an echoed prompt): its
   * logprobs are null.
   */
  #event(
    index: number,
    text: string | null,
    reason: string | null,
    entries: readonly LogprobEntry[] | null,
    first = false,
    stopReason: number | string | null = null,
    prompt: readonly PromptTokenLogprobs[] = [],
  ): unknown {
    const logprobs = entries === null ? null : this.#formatLogprobs(entries, prompt);
    if (this.kind === "completion") {
      return {
        ...this.#head("text_completion"),
        choices: [{
          index,
          text: text ?? "",
          logprobs,
          finish_reason: reason,
          stop_reason: stopReason,
        }],
      };
    }
    const delta: Record<string, string> = {};
    if (first) delta.role = "assistant";
    if (text !== null) delta.content = text;
    return {
      ...this.#head("chat.completion.chunk"),
      choices: [{ index, delta, logprobs, finish_reason: reason, stop_reason: stopReason }],
    };
  }

  /** A streamed chunk carrying one tool-call delta. */
  #toolEvent(index: number, delta: unknown): unknown {
    return {
      ...this.#head("chat.completion.chunk"),
      choices: [{ index, delta: { tool_calls: [delta] }, logprobs: null, finish_reason: null }],
    };
  }

  /**
   * Sends choice `index`'s calls as the scanner reads them: a first delta naming the call
   * (index, id, type, name, empty arguments), then one per arguments fragment.
   */
  #toolSink(index: number, send: (value: unknown) => void): ToolCallSink {
    return {
      open: (call, name) =>
        send(this.#toolEvent(index, {
          index: call,
          id: toolCallId(),
          type: "function",
          function: { name, arguments: "" },
        })),
      arguments: (call, fragment) =>
        send(this.#toolEvent(index, { index: call, function: { arguments: fragment } })),
    };
  }

  async stream(sink: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const send = (value: unknown) => {
      try {
        sink.enqueue(sseEvent(value));
      } catch { /* the client is gone; the abort signal stops generation */ }
    };
    try {
      // Each choice opens as vLLM opens it: chat with the role, completions with the echo,
      // which carries the prompt's logprobs when asked (the engine sends them first).
      const echoWithLogprobs = this.req.echo && this.#logprobs;
      for (let i = 0; i < this.req.n; i++) {
        if (this.kind === "chat") send(this.#event(i, "", null, null, true));
        else if (this.#echoed !== "" && !echoWithLogprobs) {
          send(this.#event(i, this.#echoed, null, null));
        }
      }
      const tools = this.req.tools;
      // Calls a grammar enforces stream as they are written; with auto the text is held.
      const forced = tools !== null && tools.choice !== "auto";
      const splitters = tools === null || forced ? null : Array.from(
        { length: this.req.n },
        () => new ToolCallSplitter(this.routes.toolCallFormat, tools.functions),
      );
      const scanners = !forced ? null : Array.from(
        { length: this.req.n },
        (_, choice) => new ToolCallScanner(this.#toolSink(choice, send)),
      );
      let ended = 0;
      for await (const chunk of this.chunks) {
        if (chunk.promptLogprobs !== undefined) {
          for (let i = 0; i < this.req.n; i++) {
            send(this.#event(i, this.#echoed, null, [], false, null, chunk.promptLogprobs));
          }
          continue;
        }
        this.#tick(chunk);
        const reason = chunk.finishReason ? finishReason(chunk.finishReason) : null;
        // One event per generated token, as vLLM streams: the text may be "" while a UTF-8
        // character or a possible stop string is incomplete, but clients still see each token
        // arrive (inter-token latency is measured from these events).
        // A token's logprobs ride on its own event, or on a later one: the event completing
        // the character it is part of (see engine/request_text.ts).
        const splitter = splitters?.[chunk.index];
        const scanner = scanners?.[chunk.index];
        if (scanner !== undefined) {
          scanner.push(chunk.text);
          if (reason !== null) {
            send(this.#event(
              chunk.index,
              null,
              // A call cut short (max_tokens, a stop string) ends as the text would.
              scanner.calls > 0 && scanner.between && reason === "stop" ? "tool_calls" : reason,
              chunk.logprobs ?? [],
              false,
              chunk.stopReason ?? null,
            ));
          }
        } else if (splitter !== undefined) {
          // Tool calls: text that may open a call is held back until the answer ends.
          const text = splitter.push(chunk.text);
          if (reason === null) {
            if (text !== "") send(this.#event(chunk.index, text, null, chunk.logprobs ?? []));
          } else {
            const { content, calls } = splitter.finish();
            if (text + content !== "") send(this.#event(chunk.index, text + content, null, []));
            for (let k = 0; k < calls.length; k++) {
              for (const delta of toolCallDeltas(calls[k], k)) {
                send(this.#toolEvent(chunk.index, delta));
              }
            }
            send(this.#event(
              chunk.index,
              null,
              calls.length > 0 ? "tool_calls" : reason,
              chunk.logprobs ?? [],
              false,
              chunk.stopReason ?? null,
            ));
          }
        } else if (chunk.tokenId >= 0 || reason !== null) {
          send(this.#event(
            chunk.index,
            chunk.text,
            reason,
            chunk.logprobs ?? [],
            false,
            chunk.stopReason ?? null,
          ));
        }
        if (reason !== null) ended++;
      }
      if (ended < this.req.n) throw cutShort();
      if (this.req.includeUsage) {
        send({
          ...this.#head(this.kind === "chat" ? "chat.completion.chunk" : "text_completion"),
          choices: [],
          usage: this.usage,
        });
      }
    } catch (error) {
      send(toApiError(error).toJSON());
    }
    try {
      sink.enqueue(SSE_DONE);
      sink.close();
    } catch { /* already closed by a cancel */ }
  }
}

/** The body field that set max_tokens: `max_tokens`, or `max_completion_tokens` given alone. */
function maxTokensField(json: unknown): string {
  const body = json as Record<string, unknown>;
  return (body.max_tokens ?? null) === null && (body.max_completion_tokens ?? null) !== null
    ? "max_completion_tokens"
    : "max_tokens";
}

/** The request was cancelled before it finished: only seen when the server shuts down. */
function cutShort(): ApiError {
  return new ApiError(
    503,
    "the request was cancelled before it finished (the server is shutting down)",
    null,
    "server_error",
  );
}

function finishReason(reason: string): string {
  return reason === "length" ? "length" : "stop";
}

function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new ApiError(500, `internal error: ${message}`, null, "server_error");
}

/** Reads a body of at most `limit` bytes as UTF-8; 413 past the limit, 400 for bad UTF-8. */
async function readBody(request: Request, limit: number): Promise<string> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(limit);
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, "the body is not valid UTF-8");
  }
}

/**
 * A streamed chat answer with tools and tool_choice "auto", split as the non-streamed one is (server/tools.ts): text
 * goes out as it comes while it cannot open a call; from where it may, the text is held, and at
 * the end becomes calls, or is released as text when it does not parse.
 */
class ToolCallSplitter {
  #sent = "";
  #held = "";

  constructor(
    readonly format: ToolCallFormat,
    readonly functions: ReadonlyMap<string, ToolFunction>,
  ) {}

  /** Adds the next text; returns what can be sent now. */
  push(text: string): string {
    this.#held += text;
    const all = this.#sent + this.#held;
    if (callStart(all, this.format) >= 0) return "";
    if (this.format === "hermes") {
      // Release everything before the last "<" that may still begin "<tool_call>".
      const at = this.#held.lastIndexOf("<");
      const keep = at >= 0 && mayOpenCalls(this.#held.slice(at), this.format, false) ? at : -1;
      return this.#release(keep < 0 ? this.#held.length : keep);
    }
    if (mayOpenCalls(all, this.format, true)) return "";
    return this.#release(this.#held.length);
  }

  /** The answer ended: the held text as content, or the calls it makes. */
  finish(): { content: string; calls: readonly ToolCall[] } {
    const all = this.#sent + this.#held;
    const parsed = parseToolCalls(all, this.format, this.functions);
    if (parsed.calls.length === 0) {
      const rest = this.#held;
      this.#held = "";
      return { content: rest, calls: [] };
    }
    // What was sent is the content before the calls; the held text is only calls.
    const before = all.slice(0, callStart(all, this.format));
    const content = before.slice(this.#sent.length);
    this.#held = "";
    return { content: before.trim() === "" ? "" : content, calls: parsed.calls };
  }

  #release(n: number): string {
    const out = this.#held.slice(0, n);
    this.#held = this.#held.slice(n);
    this.#sent += out;
    return out;
  }
}

/**
 * The deltas that stream one call as OpenAI streams them: the first names the call (index, id,
 * type, function name, empty arguments), the next carries the arguments.
 */
function toolCallDeltas(call: ToolCall, index: number): unknown[] {
  return [
    { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
    { index, function: { arguments: call.function.arguments } },
  ];
}
