/**
 * What a new user, a careless client and a hostile one hit first (the hardening issue): routes
 * and headers (GET /v1/models/{id}, 405 with Allow, Retry-After on 429), Content-Type, the API
 * key (env, file, constant-time check, 401 before 404), max_tokens against the context, the
 * standard tool-call message with null content, server paths kept out of errors, and a port in
 * use refused before the model loads.
 */

import assert from "node:assert/strict";
import { Routes } from "../../server/routes.ts";
import { ApiKeyCheck, resolveApiKey } from "../../server/auth.ts";
import { withoutServerPaths } from "../../server/errors.ts";
import { assertApiError, startTestServer, TINY_MODEL_DIR, within } from "../support/server.ts";

const MAX_MODEL_LEN = 96;

Deno.test({
  name: "hardening: routes, headers, content type, max_tokens and null content",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served = await startTestServer({
      kvBlocks: 128,
      blockSize: 4,
      maxModelLen: MAX_MODEL_LEN,
    });
    const { engine, base, model, client, post } = served;
    try {
      await t.step("GET /v1/models/{id}: the OpenAI client's models.retrieve", async () => {
        const one = await client.models.retrieve(model);
        const list = await client.models.list();
        assert.deepStrictEqual(one, list.data[0]);
        assert.deepStrictEqual(one.id, model);
        const res = await fetch(`${base}/v1/models/gpt-4`);
        const error = await assertApiError(res, 404, "model");
        assert.match(error.message, /'gpt-4' does not exist/);
      });

      await t.step("a known path with the wrong method is 405 with Allow", async () => {
        const cases: [string, string, string][] = [
          ["GET", "/v1/completions", "POST"],
          ["PUT", "/v1/chat/completions", "POST"],
          ["POST", "/v1/models", "GET"],
          ["DELETE", `/v1/models/${model}`, "GET"],
          ["POST", "/health", "GET"],
          ["POST", "/metrics", "GET"],
        ];
        for (const [method, path, allowed] of cases) {
          const res = await fetch(`${base}${path}`, { method });
          assert.equal(res.headers.get("allow"), allowed, `${method} ${path}`);
          const error = await assertApiError(res, 405, null, `${method} ${path}`);
          assert.match(error.message, new RegExp(`use ${allowed}`));
        }
        await assertApiError(await fetch(`${base}/v1/nothing`), 404, null);
      });

      await t.step("POST bodies must be declared application/json (415)", async () => {
        const body = JSON.stringify({ prompt: "x", max_tokens: 1 });
        for (const type of ["text/plain", "application/x-www-form-urlencoded", null]) {
          const headers: Record<string, string> = type === null ? {} : { "content-type": type };
          const res = await fetch(`${base}/v1/completions`, { method: "POST", headers, body });
          const error = await assertApiError(res, 415, null, String(type));
          assert.match(error.message, /Content-Type: application\/json/);
        }
        const ok = await post("/v1/completions", body, {
          headers: { "Content-Type": "Application/JSON; charset=utf-8" },
        });
        assert.equal(ok.status, 200, await ok.text());
      });

      await t.step("429 carries Retry-After", async () => {
        const full = new Routes(engine, { maxQueue: 0 });
        const res = await full.handle(
          new Request("http://x/v1/completions", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ prompt: "x", max_tokens: 1 }),
          }),
        );
        assert.equal(res.headers.get("retry-after"), "1");
        await assertApiError(res, 429, null);
      });

      await t.step("chat without max_tokens may use the rest of the context", async () => {
        const messages = [{ role: "user" as const, content: "Tell me everything." }];
        const reply = await client.chat.completions.create(
          {
            model,
            messages,
            temperature: 0,
            ignore_eos: true,
          } as Parameters<typeof client.chat.completions.create>[0] & { stream?: false },
        );
        const usage = reply.usage!;
        // The independent count: the template rendered with the generation prompt, encoded.
        const promptTokens = engine.tokenizer!.encodeChat(messages, { addGenerationPrompt: true })
          .length;
        assert.equal(usage.prompt_tokens, promptTokens);
        assert.equal(usage.completion_tokens, MAX_MODEL_LEN - promptTokens);
        assert.equal(reply.choices[0].finish_reason, "length");
        // Completions keep vLLM's default of 16.
        const completion = await client.completions.create(
          {
            model,
            prompt: "x",
            temperature: 0,
            ignore_eos: true,
          } as Parameters<typeof client.completions.create>[0] & { stream?: false },
        );
        assert.equal(completion.usage!.completion_tokens, 16);
      });

      await t.step("max_tokens past the remaining context is a 400 naming it", async () => {
        const prompt = [5, 6, 7, 8, 9, 10];
        const remaining = MAX_MODEL_LEN - prompt.length;
        const over = await post("/v1/completions", { prompt, max_tokens: remaining + 1 });
        const error = await assertApiError(over, 400, "max_tokens");
        assert.match(error.message, new RegExp(`is ${remaining + 1}.* ${prompt.length} tokens`));
        assert.match(error.message, new RegExp(`max_tokens <= ${remaining}`));
        const chat = await post("/v1/chat/completions", {
          messages: [{ role: "user", content: "hi" }],
          max_completion_tokens: MAX_MODEL_LEN,
        });
        await assertApiError(chat, 400, "max_completion_tokens");
        const exact = await post("/v1/completions", {
          prompt,
          max_tokens: remaining,
          ignore_eos: true,
          temperature: 0,
        });
        assert.equal(exact.status, 200);
        assert.equal((await exact.json()).usage.completion_tokens, remaining);
      });

      await t.step("an assistant tool-call turn with content null renders", async () => {
        const messages = [
          { role: "user", content: "What is the weather in Paris?" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{
              id: "call_1",
              type: "function",
              function: { name: "weather", arguments: '{"city":"Paris"}' },
            }],
          },
          { role: "tool", tool_call_id: "call_1", content: "sunny" },
        ];
        const res = await post("/v1/chat/completions", { messages, max_tokens: 2 });
        const body = await res.json();
        assert.equal(res.status, 200, JSON.stringify(body));
        // The template (`content | trim`) needs a string: null renders as the empty string.
        const asEmpty = messages.map((m) => ({ ...m, content: m.content ?? "" }));
        const expected = engine.tokenizer!.encodeChat(asEmpty, { addGenerationPrompt: true });
        assert.equal(body.usage.prompt_tokens, expected.length);
        const rendered = engine.tokenizer!.applyChatTemplate(messages, {
          addGenerationPrompt: true,
        });
        assert.match(rendered, /<\|start_header_id\|>assistant<\|end_header_id\|>\n\n<\|eot_id\|>/);
      });
    } finally {
      await served.close();
    }
  },
});

Deno.test({
  name:
    "hardening: with an API key, /v1/* needs it (401 before 404), /health and /metrics stay open",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const served = await startTestServer({ kvBlocks: 32 }, { apiKey: "sekrit" });
    const { base } = served;
    try {
      const get = (path: string, key?: string) =>
        fetch(`${base}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
      for (const path of ["/v1/models", "/v1/nothing", "/v1/models/x", "/v1/completions"]) {
        await assertApiError(await get(path), 401, null, path);
        await assertApiError(await get(path, "wrong"), 401, null, path);
      }
      assert.equal((await get("/v1/models", "sekrit")).status, 200);
      await assertApiError(await get("/v1/nothing", "sekrit"), 404, null);
      await assertApiError(await get("/v1/completions", "sekrit"), 405, null);
      assert.equal((await get("/health")).status, 200);
      assert.equal((await get("/metrics")).status, 200);
      await (await get("/metrics")).body?.cancel();
      await (await get("/health")).body?.cancel();
    } finally {
      await served.close();
    }
  },
});

Deno.test("hardening: the key check matches exactly `Bearer <key>`", () => {
  const check = new ApiKeyCheck("sekrit");
  assert.equal(check.matches("Bearer sekrit"), true);
  for (const header of [null, "", "Bearer", "Bearer sekri", "Bearer sekrit ", "bearer sekrit"]) {
    assert.equal(check.matches(header), false, String(header));
  }
});

Deno.test("hardening: the API key comes from exactly one of flag, file and environment", async () => {
  assert.equal(resolveApiKey({}), null);
  assert.equal(resolveApiKey({ env: "from-env" }), "from-env");
  assert.equal(resolveApiKey({ flag: "from-flag" }), "from-flag");
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/key`;
    await Deno.writeTextFile(file, "from-file\n");
    assert.equal(resolveApiKey({ file }), "from-file");
    assert.throws(() => resolveApiKey({ file, env: "x" }), /given 2 ways.*give exactly one/);
    assert.throws(() => resolveApiKey({ file: `${dir}/missing` }), /--api-key-file .*missing/);
    await Deno.writeTextFile(file, "\n");
    assert.throws(() => resolveApiKey({ file }), /--api-key-file: the API key is empty/);
    assert.throws(() => resolveApiKey({ env: " " }), /DENALI_API_KEY: the API key is empty/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hardening: error messages name no server path", () => {
  const cwd = Deno.cwd();
  const cases: [string, string][] = [
    [
      `the chat template from ${cwd}/models/x/tokenizer_config.json failed`,
      "the chat template from tokenizer_config.json failed",
    ],
    ["/opt/models/llama/config.json: bad", "config.json: bad"],
    [`at file://${cwd}/server/routes.ts:12:3`, "at routes.ts:12:3"],
    [`under ${cwd}/models/tiny-llama`, "under tiny-llama"],
    // What the client sent, and URLs, stay as they are.
    ["no route for GET /v1/foo/bar", "no route for GET /v1/foo/bar"],
    ["see https://example.com/a/b.json", "see https://example.com/a/b.json"],
  ];
  for (const [message, expected] of cases) assert.equal(withoutServerPaths(message), expected);
});

Deno.test({
  name: "hardening: a chat template failure names the file, not where it lies",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    for (const entry of Deno.readDirSync(TINY_MODEL_DIR)) {
      await Deno.copyFile(`${TINY_MODEL_DIR}/${entry.name}`, `${dir}/${entry.name}`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    config.chat_template = "{{ messages[0].content.no_such_method() }}";
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    const served = await startTestServer({ kvBlocks: 32 }, { modelDir: dir });
    try {
      const res = await served.post("/v1/chat/completions", {
        messages: [{ role: "user", content: "hi" }],
      });
      const error = await assertApiError(res, 400, "messages");
      assert.match(error.message, /the chat template from tokenizer_config\.json failed/);
      assert.ok(!error.message.includes(dir), error.message);
      assert.ok(!error.message.includes("/"), error.message);
    } finally {
      await served.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("hardening: a port in use is one line and exit 1, before the model loads", async () => {
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (held.addr as Deno.NetAddr).port;
    const serve = new URL("../../serve.ts", import.meta.url).pathname;
    const out = await within(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", serve, "--port", String(port), "--backend", "cpu"],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output(),
      "serve.ts with its port taken",
      60_000,
    );
    const stderr = new TextDecoder().decode(out.stderr).trim();
    assert.equal(out.code, 1, stderr);
    assert.deepEqual(stderr.split("\n").length, 1, stderr);
    assert.match(stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use.*--port`));
  } finally {
    held.close();
  }
});
