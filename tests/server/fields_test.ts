/**
 * Request fields that change the output are honoured or refused, never ignored (the hardening
 * issue's item 4): stop_token_ids ends generation on the token, as vLLM does (the token counts,
 * its text does not); logit_bias is checked; unknown fields, and known ones this server does not
 * implement, get a 400 naming them unless they hold their neutral value.
 */

import assert from "node:assert/strict";
import { assertApiError, startTestServer } from "../support/server.ts";

Deno.test({
  name: "server: stop_token_ids, logit_bias checks, unknown and unsupported fields",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served = await startTestServer({ kvBlocks: 64, maxModelLen: 256 });
    const { engine, model, post } = served;
    const tokenizer = engine.tokenizer!;
    const c = "/v1/completions";
    const chat = "/v1/chat/completions";
    const r400 = async (path: string, body: unknown, param: string) =>
      await assertApiError(await post(path, body), 400, param, JSON.stringify(body));
    try {
      await t.step("stop_token_ids: the token ends it, counts, and adds no text", async () => {
        const base = { model, prompt: "Once upon a time", max_tokens: 12, temperature: 0 };
        // The reference: the same greedy run without stop ids, through the engine.
        const greedy: number[] = [];
        for await (
          const chunk of engine.generate(tokenizer.encode("Once upon a time"), {
            maxTokens: 12,
            temperature: 0,
            ignoreEos: true,
          })
        ) if (chunk.tokenId >= 0) greedy.push(chunk.tokenId);
        // The 4th token, which ends generation at its first occurrence.
        const stopId = greedy[3];
        const at = greedy.indexOf(stopId);
        const body = { ...base, ignore_eos: true, stop_token_ids: [stopId] };
        const res = await (await post(c, body)).json();
        const choice = res.choices[0];
        assert.deepStrictEqual(choice.finish_reason, "stop");
        assert.deepStrictEqual(choice.stop_reason, stopId);
        assert.deepStrictEqual(res.usage.completion_tokens, at + 1, "the stop token counts");
        assert.deepStrictEqual(
          choice.text,
          tokenizer.decode(greedy.slice(0, at), { skipSpecialTokens: true }),
          "the stop token's text is left out",
        );
        // Streamed: the same text and reason.
        let text = "";
        let reason = null;
        const stream = await post(c, { ...body, stream: true });
        for (const line of (await stream.text()).split("\n")) {
          if (!line.startsWith("data: {")) continue;
          const event = JSON.parse(line.slice(6));
          text += event.choices[0]?.text ?? "";
          reason = event.choices[0]?.stop_reason ?? reason;
        }
        assert.deepStrictEqual(text, choice.text);
        assert.deepStrictEqual(reason, stopId);
      });

      await t.step("stop_token_ids and logit_bias: malformed values get a 400", async () => {
        const vocab = engine.config.vocabSize;
        await r400(c, { prompt: "x", stop_token_ids: 5 }, "stop_token_ids");
        await r400(c, { prompt: "x", stop_token_ids: [1, -1] }, "stop_token_ids");
        await r400(c, { prompt: "x", stop_token_ids: [1.5] }, "stop_token_ids");
        await r400(c, { prompt: "x", stop_token_ids: [vocab] }, "stop_token_ids");
        await r400(c, { prompt: "x", logit_bias: [1, 2] }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { abc: 1 } }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { "-1": 1 } }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { "01": 1 } }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { "5": 101 } }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { "5": "1" } }, "logit_bias");
        await r400(c, { prompt: "x", logit_bias: { [String(vocab)]: 1 } }, "logit_bias");
        const e = await r400(chat, {
          messages: [{ role: "user", content: "x" }],
          logit_bias: { "5": 200 },
        }, "logit_bias");
        assert.match(e.message, /token 5 must be in \[-100, 100\], got number 200/);
        // Empty and null are no bias.
        for (const logit_bias of [{}, null]) {
          const ok = await post(c, { prompt: "x", max_tokens: 1, logit_bias });
          assert.deepStrictEqual(ok.status, 200, await ok.text());
        }
      });

      await t.step("logit_bias, allowed_token_ids and min_tokens steer sampling", async () => {
        const promptIds = tokenizer.encode("Once upon a time");
        const greedy = async (extra: Record<string, unknown>) => {
          const res = await (await post(c, {
            model,
            prompt: promptIds,
            max_tokens: 4,
            temperature: 0,
            ignore_eos: true,
            logprobs: 0,
            return_tokens_as_token_ids: true,
            ...extra,
          })).json();
          assert(res.choices, JSON.stringify(res));
          const lp = res.choices[0].logprobs;
          return {
            ids: lp.tokens.map((t: string) => Number(t.slice("token_id:".length))) as number[],
            logprobs: lp.token_logprobs as number[],
          };
        };
        // The reference: the model's own logits for the first token.
        const logits = await engine.lastLogits(promptIds);
        const argmax = (row: ArrayLike<number>) => {
          let best = 0;
          for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
          return best;
        };
        const top = argmax(logits);
        const plain = await greedy({});
        assert.deepStrictEqual(plain.ids[0], top);
        // -100 on the top token: the first token is the argmax of the biased logits.
        const biased = Float32Array.from(logits);
        biased[top] -= 100;
        const banned = await greedy({ logit_bias: { [String(top)]: -100 } });
        assert.deepStrictEqual(banned.ids[0], argmax(biased));
        assert(!banned.ids.includes(top), `token ${top} still sampled: ${banned.ids}`);
        // +100 on one token: it wins every step; its reported logprob stays the raw model's.
        const forced = 7 === top ? 8 : 7;
        const pushed = await greedy({ logit_bias: { [String(forced)]: 100 } });
        assert.deepStrictEqual(pushed.ids, [forced, forced, forced, forced]);
        let max = -Infinity;
        for (const l of logits) max = Math.max(max, l);
        let sum = 0;
        for (const l of logits) sum += Math.exp(l - max);
        const raw = logits[forced] - max - Math.log(sum);
        assert(Math.abs(pushed.logprobs[0] - raw) < 1e-4, `${pushed.logprobs[0]} vs ${raw}`);
        // allowed_token_ids: every token is one of them.
        const allowed = [11, 12, 13];
        const kept = await greedy({ allowed_token_ids: allowed });
        assert(kept.ids.every((id) => allowed.includes(id)), `${kept.ids}`);
        // min_tokens: checked against max_tokens.
        await r400(c, { prompt: "x", max_tokens: 2, min_tokens: 3 }, "min_tokens");
        await r400(c, { prompt: "x", allowed_token_ids: [] }, "allowed_token_ids");
        await r400(c, { prompt: "x", allowed_token_ids: [1e6] }, "allowed_token_ids");
        const min = await post(c, { prompt: "x", max_tokens: 3, min_tokens: 3 });
        assert.deepStrictEqual((await min.json()).usage.completion_tokens, 3);
      });

      await t.step("unknown fields and unsupported ones get a 400 naming them", async () => {
        const e = await r400(c, { prompt: "x", temprature: 0.5 }, "temprature");
        assert.match(e.message, /unrecognized request argument/);
        await r400(chat, { messages: [{ role: "user", content: "x" }], prompt: "x" }, "prompt");
        await r400(c, { prompt: "x", messages: [] }, "messages");
        for (
          const [field, value] of [
            ["structural_tag", { type: "structural_tag" }],
            ["use_beam_search", true],
            ["include_stop_str_in_output", true],
            ["skip_special_tokens", false],
            ["bad_words", ["x"]],
          ] as const
        ) {
          const u = await r400(c, { prompt: "x", [field]: value }, field);
          assert.match(u.message, /not supported by this server/);
        }
        await r400(chat, { messages: [{ role: "user", content: "x" }], echo: true }, "echo");
        // Neutral values and labels pass.
        const ok = await post(c, {
          prompt: "x",
          max_tokens: 1,
          user: "u1",
          metadata: { a: "b" },
          response_format: { type: "text" },
          skip_special_tokens: true,
          include_stop_str_in_output: false,
          guided_json: null,
        });
        assert.deepStrictEqual(ok.status, 200, await ok.text());
        const chatOk = await post(chat, {
          messages: [{ role: "user", content: "x" }],
          max_tokens: 1,
          tool_choice: "none",
          parallel_tool_calls: true,
          echo: false,
        });
        assert.deepStrictEqual(chatOk.status, 200, await chatOk.text());
        // vLLM's return_tokens_as_token_ids names logprobs tokens by id.
        const named = await (await post(c, {
          prompt: "x",
          max_tokens: 2,
          logprobs: 1,
          return_tokens_as_token_ids: true,
        })).json();
        const lp = named.choices[0].logprobs;
        assert(lp.tokens.every((t: string) => /^token_id:\d+$/.test(t)), JSON.stringify(lp));
        assert(Object.keys(lp.top_logprobs[0]).every((t) => t.startsWith("token_id:")));
      });
    } finally {
      await served.close();
    }
  },
});
