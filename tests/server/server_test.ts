/**
 * The OpenAI-compatible server end to end: the tiny model on the CPU backend, served in-process
 * on an ephemeral port, driven by the real `openai` client and by raw fetch for the error cases.
 * Logprobs and penalties are in logprobs_test.ts, many concurrent streams in
 * concurrency_test.ts.
 */

import assert from "node:assert/strict";
import { Routes } from "../../server/routes.ts";
import { mulberry32 } from "../support/numeric.ts";
import {
  assertApiError as assertError,
  readRest,
  startTestServer,
  waitUntil,
  within,
} from "../support/server.ts";

const MAX_MODEL_LEN = 1024;

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert(line, `metric ${name} missing`);
  return Number(line.split(" ")[1]);
}

Deno.test({
  name: "OpenAI-compatible server",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served = await startTestServer({
      kvBlocks: 512,
      blockSize: 4,
      maxRunning: 16,
      maxBatchedTokens: 128,
      maxModelLen: MAX_MODEL_LEN,
    });
    const { engine, base, model, client, post } = served;
    try {
      await t.step("models and health", async () => {
        const models = await client.models.list();
        assert.deepStrictEqual(models.data.map((m) => m.id), [model]);
        assert.deepStrictEqual((await (await fetch(`${base}/health`)).json()).status, "ok");
      });

      await t.step("completions: non-streaming, usage, stop string", async () => {
        const prompt = "Hello there";
        const full = await client.completions.create({
          model,
          prompt,
          max_tokens: 12,
          temperature: 0,
        });
        const choice = full.choices[0];
        assert.deepStrictEqual(full.usage?.prompt_tokens, engine.tokenizer!.encode(prompt).length);
        assert.deepStrictEqual(
          full.usage?.completion_tokens,
          choice.finish_reason === "length" ? 12 : full.usage?.completion_tokens,
        );
        assert.deepStrictEqual(
          full.usage?.total_tokens,
          full.usage!.prompt_tokens + full.usage!.completion_tokens,
        );
        assert(["stop", "length"].includes(choice.finish_reason));
        // Stop at the first ASCII character after the first one.
        const text = choice.text;
        const at = [...text].findIndex((c, i) => i > 0 && /[!-~]/.test(c));
        assert.ok(at > 0, `no ASCII character to stop at in ${JSON.stringify(text)}`);
        {
          const stop = [...text][at];
          const cut = await client.completions.create({
            model,
            prompt,
            max_tokens: 12,
            temperature: 0,
            stop,
          });
          assert.deepStrictEqual(cut.choices[0].text, text.slice(0, text.indexOf(stop)));
          assert.deepStrictEqual(cut.choices[0].finish_reason, "stop");
        }
      });

      await t.step("completions: streaming equals non-streaming, include_usage", async () => {
        const args = { model, prompt: [5, 6, 7, 8], max_tokens: 10, temperature: 0 };
        const whole = await client.completions.create(args);
        const stream = await client.completions.create({
          ...args,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = "";
        let reason = null;
        let usage = null;
        for await (const chunk of stream) {
          if (chunk.choices.length > 0) {
            text += chunk.choices[0].text;
            reason = chunk.choices[0].finish_reason ?? reason;
          }
          if (chunk.usage) usage = chunk.usage;
        }
        assert.deepStrictEqual(text, whole.choices[0].text);
        assert.deepStrictEqual(reason, whole.choices[0].finish_reason);
        assert.deepStrictEqual(usage, whole.usage);
        assert.deepStrictEqual(usage!.prompt_tokens, 4);
      });

      await t.step("chat: non-streaming and streaming", async () => {
        const messages = [{ role: "user" as const, content: "Say something." }];
        const whole = await client.chat.completions.create({
          model,
          messages,
          max_tokens: 8,
          temperature: 0,
        });
        assert.deepStrictEqual(whole.choices[0].message.role, "assistant");
        assert(whole.usage!.prompt_tokens > 5);
        const stream = await client.chat.completions.create({
          model,
          messages,
          max_tokens: 8,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = "";
        let usage = null;
        let role = null;
        for await (const chunk of stream) {
          if (chunk.choices.length > 0) {
            text += chunk.choices[0].delta.content ?? "";
            role ??= chunk.choices[0].delta.role ?? null;
          }
          if (chunk.usage) usage = chunk.usage;
        }
        assert.deepStrictEqual(role, "assistant");
        assert.deepStrictEqual(text, whole.choices[0].message.content);
        assert.deepStrictEqual(usage, whole.usage);
      });

      await t.step("errors: OpenAI shape, status, field", async () => {
        const c = "/v1/completions";
        const chat = "/v1/chat/completions";
        const r400 = async (path: string, body: unknown, param: string | null) =>
          await assertError(await post(path, body), 400, param, JSON.stringify(body));
        await r400(c, "{not json", null);
        await r400(c, "[1, 2]", null);
        await r400(c, {}, "prompt");
        await r400(c, { prompt: 3 }, "prompt");
        await r400(c, { prompt: "" }, "prompt");
        await r400(c, { prompt: [1, -2] }, "prompt");
        await r400(c, { prompt: [1, 1e9] }, "prompt");
        await r400(c, { prompt: "x", max_tokens: 0 }, "max_tokens");
        await r400(c, { prompt: "x", max_tokens: "5" }, "max_tokens");
        await r400(c, { prompt: "x", max_tokens: 1.5 }, "max_tokens");
        await r400(c, { prompt: "x", temperature: -1 }, "temperature");
        await r400(c, { prompt: "x", temperature: "hot" }, "temperature");
        await r400(c, { prompt: "x", top_p: 0 }, "top_p");
        await r400(c, { prompt: "x", top_p: 1.5 }, "top_p");
        await r400(c, { prompt: "x", top_k: -5 }, "top_k");
        await r400(c, { prompt: "x", min_p: 2 }, "min_p");
        await r400(c, { prompt: "x", seed: "s" }, "seed");
        await r400(c, { prompt: "x", stop: 5 }, "stop");
        await r400(c, { prompt: "x", stop: ["a", 1] }, "stop");
        await r400(c, { prompt: "x", frequency_penalty: 9 }, "frequency_penalty");
        await r400(c, { prompt: "x", stream: "yes" }, "stream");
        await r400(
          c,
          { prompt: "x", stream_options: { include_usage: 1 } },
          "stream_options.include_usage",
        );
        await r400(c, { prompt: "x", n: 0 }, "n");
        await r400(c, { prompt: "x", n: 1.5 }, "n");
        await r400(chat, { messages: [{ role: "user", content: "x" }], n: 129 }, "n");
        await r400(c, { prompt: "x", model: 7 }, "model");
        await r400(chat, { messages: "hi" }, "messages");
        await r400(chat, { messages: [] }, "messages");
        await r400(chat, { messages: [{ content: "hi" }] }, "messages[0].role");
        await r400(chat, { messages: [{ role: "user", content: 5 }] }, "messages[0].content");
        // Neutral values of the fields with limits pass.
        const ok = await post(c, {
          prompt: "x",
          max_tokens: 1,
          presence_penalty: 0,
          frequency_penalty: 0,
          repetition_penalty: 1,
          logprobs: null,
          n: 1,
          best_of: 1,
        });
        assert.deepStrictEqual(ok.status, 200, await ok.text());

        // Prompt longer than the context: both lengths in the message.
        const long = Array.from({ length: MAX_MODEL_LEN + 10 }, (_, i) => 10 + (i % 50));
        const e = await assertError(await post(c, { prompt: long }), 400, "prompt");
        assert.match(e.message, new RegExp(`${long.length} tokens.*${MAX_MODEL_LEN} tokens`));
        assert.deepStrictEqual(e.code, "context_length_exceeded");
        const longChat = { messages: [{ role: "user", content: "word ".repeat(1200) }] };
        const e2 = await assertError(await post(chat, longChat), 400, "messages");
        assert.match(e2.message, new RegExp(`${MAX_MODEL_LEN} tokens`));

        // 404: unknown path or model; 405: a known path with the wrong method.
        await assertError(await fetch(`${base}/v1/nothing`), 404, null);
        await assertError(await fetch(`${base}/v1/completions`), 405, null);
        await assertError(await post(c, { prompt: "x", model: "gpt-4" }), 404, "model");

        // 413: by Content-Length, and while reading a body sent without one.
        const big = JSON.stringify({ prompt: "x".repeat(5 * 2 ** 20) });
        await assertError(await post(c, big), 413, null);
        const chunk = new TextEncoder().encode("x".repeat(2 ** 20));
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(ctl) {
            if (sent++ < 6) ctl.enqueue(chunk);
            else ctl.close();
          },
        });
        await assertError(await post(c, body), 413, null);

        // 401 and 429 through the same handler with other options.
        const secured = new Routes(engine, { apiKey: "sekrit" });
        const req = (key?: string) =>
          new Request("http://x/v1/completions", {
            method: "POST",
            headers: {
              "content-type": "application/json",
              ...(key ? { authorization: `Bearer ${key}` } : {}),
            },
            body: JSON.stringify({ prompt: "x", max_tokens: 1 }),
          });
        await assertError(await secured.handle(req()), 401, null);
        await assertError(await secured.handle(req("wrong")), 401, null);
        assert.deepStrictEqual((await secured.handle(req("sekrit"))).status, 200);
        const full = new Routes(engine, { maxQueue: 0 });
        await assertError(await full.handle(req()), 429, null);
      });

      await t.step("fuzz: malformed and random bodies never break the server", async () => {
        const rand = mulberry32(1234);
        const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
        const values: unknown[] = [
          null,
          true,
          false,
          0,
          -1,
          1.5,
          1e308,
          -1e308,
          "",
          "x",
          "\u0000",
          [],
          {},
          [1, 2],
          [-1],
          ["a"],
          { a: 1 },
          2 ** 53,
          "🦙",
          [[1]],
          [null],
        ];
        const keys = [
          "prompt",
          "messages",
          "max_tokens",
          "temperature",
          "top_p",
          "top_k",
          "min_p",
          "seed",
          "stop",
          "stream",
          "stream_options",
          "n",
          "model",
          "logprobs",
          "top_logprobs",
          "presence_penalty",
          "frequency_penalty",
          "repetition_penalty",
          "echo",
          "ignore_eos",
          "__proto__",
        ];
        const bodies: (string | Uint8Array<ArrayBuffer>)[] = [];
        for (let i = 0; i < 300; i++) {
          const kind = rand();
          if (kind < 0.15) {
            bodies.push(Uint8Array.from({ length: Math.floor(rand() * 64) }, () => rand() * 256));
          } else if (kind < 0.3) {
            const good = JSON.stringify({ prompt: "hi", max_tokens: 2 });
            const cut = Math.floor(rand() * good.length);
            bodies.push(good.slice(0, cut) + pick(["}", "{", '"', ",", ""]) + good.slice(cut + 1));
          } else {
            const body: Record<string, unknown> = {};
            const n = 1 + Math.floor(rand() * 5);
            for (let k = 0; k < n; k++) body[pick(keys)] = pick(values);
            if (rand() < 0.5) body.prompt = pick(["hi", [1, 2, 3], ...values]);
            if (rand() < 0.3) {
              body.messages = [{ role: pick(["user", 1, ""]), content: pick(values) }];
            }
            body.max_tokens = pick([1, 2, 3, ...values]);
            bodies.push(JSON.stringify(body));
          }
        }
        for (let i = 0; i < bodies.length; i += 25) {
          await Promise.all(
            bodies.slice(i, i + 25).map(async (body, j) => {
              const path = (i + j) % 2 ? "/v1/completions" : "/v1/chat/completions";
              const res = await post(path, body);
              const text = await res.text();
              assert([200, 400, 404].includes(res.status), `${res.status} for ${body}: ${text}`);
              if (res.status !== 200) {
                const parsed = JSON.parse(text);
                assert(typeof parsed.error.message === "string", text);
              }
            }),
          );
        }
        const after = await client.completions.create({ model, prompt: "hi", max_tokens: 3 });
        assert.deepStrictEqual(after.usage?.completion_tokens, 3);
      });

      await t.step("a client that disconnects mid-stream frees its KV blocks", async () => {
        const abortsBefore = engine.stats().finished.abort;
        const abort = new AbortController();
        const res = await post("/v1/completions", {
          prompt: "a long story",
          max_tokens: 1000,
          ignore_eos: true,
          stream: true,
        }, { signal: abort.signal });
        assert.deepStrictEqual(res.status, 200);
        const reader = res.body!.getReader();
        for (let i = 0; i < 3; i++) await within(reader.read(), "a stream event");
        assert(await metric(base, "denali_kv_cache_blocks_used") > 0);
        abort.abort();
        await reader.cancel().catch(() => {});
        await waitUntil(
          async () => await metric(base, "denali_kv_cache_blocks_used") === 0,
          "KV blocks freed after the disconnect",
          5000,
        );
        assert.deepStrictEqual(await metric(base, "denali_kv_cache_usage_ratio"), 0);
        assert.deepStrictEqual(await metric(base, "denali_requests_running"), 0);
        assert.deepStrictEqual(engine.stats().finished.abort, abortsBefore + 1);
      });

      await t.step(
        "a client that disconnects from a non-streaming request cancels it",
        async () => {
          const abortsBefore = engine.stats().finished.abort;
          const abort = new AbortController();
          const reply = post("/v1/completions", {
            prompt: "another long story",
            max_tokens: 1000,
            ignore_eos: true,
          }, { signal: abort.signal }).catch(() => null);
          await waitUntil(
            async () => await metric(base, "denali_kv_cache_blocks_used") > 0,
            "the request holds KV blocks",
            5000,
            5,
          );
          abort.abort();
          await within(reply, "the aborted request's reply");
          await waitUntil(
            async () => await metric(base, "denali_kv_cache_blocks_used") === 0,
            "KV blocks freed after the disconnect",
            5000,
          );
          assert.deepStrictEqual(engine.stats().finished.abort, abortsBefore + 1);
        },
      );

      await t.step("shutdown cancels a stream with an error event", async () => {
        const routes = new Routes(engine);
        const res = await routes.handle(
          new Request("http://x/v1/completions", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ prompt: "x", max_tokens: 1000, ignore_eos: true, stream: true }),
          }),
        );
        const reader = res.body!.getReader();
        const first = await within(reader.read(), "the first stream event");
        routes.abortAll();
        const text = new TextDecoder().decode(first.value) +
          await readRest(reader, "the cancelled stream's end");
        assert.match(text, /"error":\{"message":"the request was cancelled/);
        assert.ok(text.endsWith("data: [DONE]\n\n"));
        const after = await routes.handle(
          new Request("http://x/v1/completions", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: '{"prompt":"x"}',
          }),
        );
        await assertError(after, 503, null);
      });

      await t.step("metrics", async () => {
        const text = await (await fetch(`${base}/metrics`)).text();
        assert.match(
          text,
          /denali_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/,
        );
        assert.match(
          text,
          /denali_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/,
        );
        assert(await metric(base, "denali_prompt_tokens_total") > 0);
        assert(await metric(base, "denali_completion_tokens_total") > 0);
        assert(await metric(base, "denali_time_to_first_token_seconds_count") > 0);
        assert(await metric(base, "denali_inter_token_latency_seconds_count") > 0);
        assert.deepStrictEqual(await metric(base, "denali_requests_waiting"), 0);
      });
    } finally {
      await served.close();
    }
  },
});
