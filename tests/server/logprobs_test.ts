/**
 * Logprobs and penalties through the OpenAI-compatible server, checked against an independent
 * computation: the engine's own forward pass (`Engine.lastLogits`, the f32 logits of the last
 * position) for the prompt plus the tokens so far, with log_softmax, ranking and the penalty
 * formula redone here in float64, step by step.
 *
 * The tiny model's output is byte soup (random weights), which is what these tests want: many
 * tokens are parts of UTF-8 characters, exercising `bytes`, text offsets and U+FFFD texts.
 */

import assert from "node:assert/strict";
import type { Engine } from "../../engine/engine.ts";
import { logSoftmax } from "../support/numeric.ts";
import { assertApiError, startTestServer, type TestServer } from "../support/server.ts";

/**
 * The engine computes log_softmax in f32 from the same (bf16-valued) logits: its error is a few
 * f32 ulps of the log-sum-exp (~5 here), about 1e-6. A wrong distribution (temperature-scaled,
 * penalised, another position) is off by far more than 1e-4.
 */
const TOL = 1e-4;

/** repetition (1 off), presence and frequency (0 off), as in SamplingParams. */
interface Penalties {
  readonly repetition: number;
  readonly presence: number;
  readonly frequency: number;
}
const NO_PENALTY: Penalties = { repetition: 1, presence: 0, frequency: 0 };

/** vLLM's ignore_eos, spread into requests (the client's types do not know it). */
const IGNORE_EOS = { ignore_eos: true };
/** Greedy, to a fixed length. */
const GREEDY = { temperature: 0, ...IGNORE_EOS };

/** One step of the reference: the raw log-probabilities and the greedy choice. */
interface RefStep {
  readonly id: number;
  readonly logprobs: Float64Array;
}

/** Token ids by descending value; ties: lower id first (the engine's rule). */
function ranked(values: ArrayLike<number>): number[] {
  const ids = Array.from({ length: values.length }, (_, i) => i);
  return ids.sort((a, b) => values[b] - values[a] || a - b);
}

/**
 * The logits greedy decoding compares, as SamplingParams documents the penalties (vLLM's
 * rules): every token of the prompt and output gets the repetition penalty (positive logits
 * divided, negative multiplied), then output tokens lose frequency × count and presence once.
 * The values the tests use (1, 2, 0.5, 1.5) make these operations exact in f32 as in float64,
 * so ties are ties here as on the engine.
 */
function penalise(
  logits: Float32Array,
  prompt: readonly number[],
  output: readonly number[],
  p: Penalties,
): Float64Array {
  const out = Float64Array.from(logits);
  const counts = new Map<number, number>();
  for (const id of prompt) counts.set(id, 0);
  for (const id of output) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, n] of counts) {
    let l = out[id];
    l = l > 0 ? l / p.repetition : l * p.repetition;
    l -= p.frequency * n;
    if (n > 0) l -= p.presence;
    out[id] = l;
  }
  return out;
}

/** Greedy decoding of `steps` tokens from `prompt`, one full forward pass per step. */
async function greedyReference(
  engine: Engine,
  prompt: readonly number[],
  steps: number,
  penalties: Penalties = NO_PENALTY,
): Promise<RefStep[]> {
  const output: number[] = [];
  const result: RefStep[] = [];
  for (let i = 0; i < steps; i++) {
    const logits = await engine.lastLogits([...prompt, ...output]);
    const id = ranked(penalise(logits, prompt, output, penalties))[0];
    result.push({ id, logprobs: logSoftmax(logits) });
    output.push(id);
  }
  return result;
}

function close(got: number, want: number, what: string): void {
  assert(Math.abs(got - want) <= TOL, `${what}: ${got}, want ${want}`);
}

/** A completion choice's legacy logprobs, as the client types them. */
interface Legacy {
  tokens?: string[];
  token_logprobs?: number[];
  top_logprobs?: Record<string, number>[];
  text_offset?: number[];
}

/** A chat choice's logprobs entry. */
interface ChatEntry {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

/** Code-point slice, as text_offset counts. */
function cpSlice(text: string, start: number, end?: number): string {
  return [...text].slice(start, end).join("");
}

Deno.test({
  name: "server logprobs and penalties",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const served: TestServer = await startTestServer({
      kvBlocks: 128,
      blockSize: 16,
      maxRunning: 8,
      maxBatchedTokens: 256,
      maxModelLen: 512,
    });
    const { engine, model, client, post } = served;
    const tokenizer = engine.tokenizer!;
    const text = (id: number) => tokenizer.decode([id]);
    const isSpecial = (id: number) => tokenizer.decode([id], { skipSpecialTokens: true }) === "";

    /** Checks legacy logprobs against the reference, `k` alternatives per token. */
    const checkLegacy = (lp: Legacy, ref: RefStep[], k: number, where: string) => {
      assert.deepStrictEqual(lp.tokens, ref.map((s) => text(s.id)), `${where}: tokens`);
      for (let i = 0; i < ref.length; i++) {
        const { id, logprobs } = ref[i];
        close(lp.token_logprobs![i], logprobs[id], `${where} token ${i}`);
        // vLLM's dict: the chosen token, then the top k by rank; a repeated text takes the
        // later logprob.
        const want = new Map<string, number>();
        for (const alt of [id, ...ranked(logprobs).slice(0, k).filter((a) => a !== id)]) {
          want.set(text(alt), logprobs[alt]);
        }
        const got = lp.top_logprobs![i];
        // JSON objects put integer-like keys first, so compare as sets.
        assert.deepStrictEqual(
          Object.keys(got).sort(),
          [...want.keys()].sort(),
          `${where} token ${i}: top_logprobs keys`,
        );
        for (const [key, value] of want) close(got[key], value, `${where} token ${i} top ${key}`);
      }
    };

    /** Checks chat logprobs against the reference, `k` alternatives per token. */
    const checkChat = (content: ChatEntry[], ref: RefStep[], k: number, where: string) => {
      assert.deepStrictEqual(content.length, ref.length, `${where}: entries`);
      for (let i = 0; i < ref.length; i++) {
        const { id, logprobs } = ref[i];
        const e = content[i];
        assert.deepStrictEqual(e.token, text(id), `${where} token ${i}`);
        close(e.logprob, logprobs[id], `${where} token ${i}`);
        const want = ranked(logprobs).slice(0, k);
        assert.deepStrictEqual(
          e.top_logprobs.map((a) => a.token),
          want.map(text),
          `${where} token ${i}: top_logprobs`,
        );
        for (let j = 0; j < k; j++) {
          close(e.top_logprobs[j].logprob, logprobs[want[j]], `${where} token ${i} top ${j}`);
        }
      }
    };

    /**
     * Checks text offsets: from 0, never decreasing, each whole token's text (not part of a
     * character, not special) found at its offset in code points. Returns how many were whole.
     */
    const checkOffsets = (text: string, lp: Legacy, where: string) => {
      const offsets = lp.text_offset!;
      assert.deepStrictEqual(offsets[0], 0, where);
      let whole = 0;
      for (let i = 0; i < offsets.length; i++) {
        if (i > 0) assert(offsets[i] >= offsets[i - 1], `${where}: offsets ${offsets}`);
        const token = lp.tokens![i];
        const id = tokenizer.tokenToId(token);
        if (token.includes("\ufffd") || (id !== undefined && isSpecial(id))) continue;
        whole++;
        const at = cpSlice(text, offsets[i], offsets[i] + [...token].length);
        assert.deepStrictEqual(at, token, `${where}: token ${i} at ${offsets[i]}`);
      }
      return whole;
    };

    try {
      const promptIds = tokenizer.encode("Once upon a time");

      await t.step("completions: greedy logprobs match the model, not streamed", async () => {
        const steps = 12;
        const ref = await greedyReference(engine, promptIds, steps);
        const res = await client.completions.create({
          model,
          prompt: promptIds,
          max_tokens: steps,
          ...GREEDY,
          logprobs: 5,
        });
        const choice = res.choices[0];
        const lp = choice.logprobs as Legacy;
        checkLegacy(lp, ref, 5, "completions");
        // Greedy: the chosen token is the top one (a less likely token of the same text may
        // hold its key, by vLLM's convention).
        for (let i = 0; i < steps; i++) {
          assert(lp.token_logprobs![i] >= Math.max(...Object.values(lp.top_logprobs![i])));
        }
        assert.deepStrictEqual(
          choice.text,
          tokenizer.decode(ref.map((s) => s.id), { skipSpecialTokens: true }),
        );
        const wholeTokens = checkOffsets(choice.text, lp, "completions");
        assert(wholeTokens >= 4, `only ${wholeTokens} whole tokens to check offsets with`);
      });

      await t.step("completions: streamed logprobs equal the non-streamed ones", async () => {
        const args = {
          model,
          prompt: promptIds,
          max_tokens: 10,
          ...GREEDY,
          logprobs: 3,
        };
        const whole = (await client.completions.create(args)).choices[0].logprobs as Legacy;
        const joined: Legacy = {
          tokens: [],
          token_logprobs: [],
          top_logprobs: [],
          text_offset: [],
        };
        let events = 0;
        const stream = await client.completions.create({ ...args, stream: true });
        for await (const chunk of stream) {
          const lp = chunk.choices[0].logprobs as Legacy;
          // A token that is part of a character comes with the one completing it.
          events++;
          joined.tokens!.push(...lp.tokens!);
          joined.token_logprobs!.push(...lp.token_logprobs!);
          joined.top_logprobs!.push(...lp.top_logprobs!);
          joined.text_offset!.push(...lp.text_offset!);
        }
        assert.deepStrictEqual(joined, whole);
        assert.deepStrictEqual(events, args.max_tokens, "one event per token");
      });

      await t.step("completions: logprobs 0 gives the chosen token alone", async () => {
        const ref = await greedyReference(engine, promptIds, 3);
        const res = await client.completions.create({
          model,
          prompt: promptIds,
          max_tokens: 3,
          ...GREEDY,
          logprobs: 0,
        });
        checkLegacy(res.choices[0].logprobs as Legacy, ref, 0, "logprobs 0");
        // And without logprobs there are none.
        const plain = await client.completions.create({ model, prompt: promptIds, max_tokens: 2 });
        assert.deepStrictEqual(plain.choices[0].logprobs, null);
      });

      const messages = [{ role: "user" as const, content: "Tell me a story." }];
      const chatIds = tokenizer.encodeChat(messages, { addGenerationPrompt: true });

      await t.step("chat: logprobs, top_logprobs and bytes, streamed or not", async () => {
        const steps = 12;
        const ref = await greedyReference(engine, chatIds, steps);
        const args = {
          model,
          messages,
          max_tokens: steps,
          ...GREEDY,
          logprobs: true,
          top_logprobs: 4,
        };
        const res = await client.chat.completions.create(args);
        const choice = res.choices[0];
        const content = choice.logprobs!.content as ChatEntry[];
        checkChat(content, ref, 4, "chat");
        assert.deepStrictEqual(choice.logprobs!.refusal, null);
        // bytes: the UTF-8 of whole-character tokens; joined, every token's bytes give the text
        // back, characters split across tokens included (which their texts, U+FFFD, do not).
        let partial = 0;
        const bytes: number[] = [];
        for (let i = 0; i < steps; i++) {
          const e = content[i];
          if (e.token.includes("\ufffd")) partial++;
          else assert.deepStrictEqual(e.bytes, [...new TextEncoder().encode(e.token)]);
          for (const alt of e.top_logprobs) {
            assert(Array.isArray(alt.bytes) && alt.bytes.length > 0);
          }
          if (!isSpecial(ref[i].id)) bytes.push(...e.bytes!);
        }
        assert(partial > 0, "no token split a character: the bytes check proved nothing");
        assert.deepStrictEqual(
          new TextDecoder().decode(new Uint8Array(bytes)),
          choice.message.content,
        );

        // Streamed: a token's entry comes with its own chunk, or, while it holds part of a
        // character, with the chunk completing that character.
        const stream = await client.chat.completions.create({ ...args, stream: true });
        const joined: ChatEntry[] = [];
        let first = true;
        let late = 0;
        for await (const chunk of stream) {
          const lp = chunk.choices[0].logprobs;
          if (first) assert.deepStrictEqual(lp, null, "the role chunk carries no token");
          else {
            const entries = lp!.content as ChatEntry[];
            joined.push(...entries);
            if (entries.length !== 1) late++;
          }
          first = false;
        }
        assert.deepStrictEqual(joined, content);
        assert(late <= 2 * partial, `${late} chunks without exactly one entry`);

        // logprobs without top_logprobs: no alternatives; logprobs false: none at all.
        const bare = await client.chat.completions.create({ ...args, top_logprobs: undefined });
        const bareContent = bare.choices[0].logprobs!.content!;
        assert.deepStrictEqual(bareContent.map((e) => e.top_logprobs), ref.map(() => []));
        checkChat(bareContent as ChatEntry[], ref, 0, "chat, no top_logprobs");
        const none = await client.chat.completions.create({
          ...args,
          logprobs: false,
          top_logprobs: 0,
        });
        assert.deepStrictEqual(none.choices[0].logprobs, null);
      });

      await t.step("sampled tokens get their own logprob, and the top list stays", async () => {
        const steps = 10;
        const res = await client.completions.create({
          model,
          prompt: promptIds,
          max_tokens: steps,
          temperature: 1,
          seed: 11,
          ...IGNORE_EOS,
          logprobs: 2,
        });
        const lp = res.choices[0].logprobs as Legacy;
        const output: number[] = [];
        let notTop = 0;
        for (let i = 0; i < steps; i++) {
          const logprobs = logSoftmax(await engine.lastLogits([...promptIds, ...output]));
          // The id behind the text: the one whose logprob is the one returned (texts may share).
          const candidates = ranked(logprobs).filter((id) =>
            text(id) === lp.tokens![i] && Math.abs(logprobs[id] - lp.token_logprobs![i]) <= TOL
          );
          assert(candidates.length > 0, `step ${i}: no token ${lp.tokens![i]} with that logprob`);
          const id = candidates[0];
          if (id !== ranked(logprobs)[0]) notTop++;
          output.push(id);
          checkLegacy(
            {
              ...lp,
              tokens: [lp.tokens![i]],
              token_logprobs: [lp.token_logprobs![i]],
              top_logprobs: [lp.top_logprobs![i]],
            },
            [{ id, logprobs }],
            2,
            `sampled step ${i}`,
          );
        }
        assert(notTop > 0, "temperature 1 never left the top token: nothing was tested");
      });

      /**
       * Stop strings to cut the greedy output of `prompt` with, found in that output: one
       * starting where a token starts and one starting inside a token. Each with the text and
       * the number of tokens that should come back: as in vLLM, every token generated up to
       * the one completing the stop string, cut or not.
       */
      const stopCases = async (prompt: number[]) => {
        const clean = (s: string) => /^[ -~]+$/.test(s);
        const res = await client.completions.create({
          model,
          prompt,
          max_tokens: 16,
          ...GREEDY,
          logprobs: 0,
        });
        const out = res.choices[0].text;
        const { tokens, text_offset: offsets } = res.choices[0].logprobs as Required<Legacy>;
        checkOffsets(out, res.choices[0].logprobs as Legacy, `offsets for ${prompt}`);
        const firstAt = (s: string) => {
          const at = out.indexOf(s);
          return at < 0 ? -1 : [...out.slice(0, at)].length;
        };
        const cases: {
          stop: string;
          text: string;
          tokens: number;
          offsets: number[];
          inside: boolean;
        }[] = [];
        // Stop strings of one or two whole printable tokens, or from the second character of a
        // token on, taken where they first occur in the output.
        for (let k = 0; k < tokens.length; k++) {
          if (!clean(tokens[k])) continue;
          const next = k + 1 < tokens.length && clean(tokens[k + 1]) ? tokens[k + 1] : "";
          const atStart = tokens[k] + next;
          if (firstAt(atStart) === offsets[k]) {
            cases.push({
              stop: atStart,
              text: cpSlice(out, 0, offsets[k]),
              tokens: next === "" ? k + 1 : k + 2,
              offsets: offsets.slice(0, next === "" ? k + 1 : k + 2),
              inside: false,
            });
          }
          const inside = tokens[k].slice(1) + next;
          if (inside.length > 0 && firstAt(inside) === offsets[k] + 1) {
            cases.push({
              stop: inside,
              text: cpSlice(out, 0, offsets[k] + 1),
              tokens: next === "" ? k + 1 : k + 2,
              offsets: offsets.slice(0, next === "" ? k + 1 : k + 2),
              inside: true,
            });
          }
        }
        return cases;
      };

      await t.step("a stop string: logprobs and usage count every generated token", async () => {
        let inside = 0, atStart = 0;
        for (
          const p of ["Once upon a time", "Hello there", "The quick brown fox", "abc", "x y z"]
        ) {
          const prompt = tokenizer.encode(p);
          for (const c of await stopCases(prompt)) {
            if (c.inside) inside++;
            else atStart++;
            const args = {
              model,
              prompt,
              max_tokens: 16,
              ...GREEDY,
              logprobs: 1,
              stop: c.stop,
            };
            const what = `${p}: ${JSON.stringify(c)}`;
            const res = await client.completions.create(args);
            const choice = res.choices[0];
            assert.deepStrictEqual(choice.finish_reason, "stop", what);
            assert.deepStrictEqual(choice.text, c.text, what);
            const lp = choice.logprobs as Legacy;
            assert.deepStrictEqual(lp.tokens!.length, c.tokens, what);
            assert.deepStrictEqual(res.usage!.completion_tokens, c.tokens, what);
            // Offsets are those of the uncut output: the tokens the stop string cut start at or
            // past the end of the returned text.
            assert.deepStrictEqual(lp.text_offset, c.offsets, what);
            const length = [...c.text].length;
            assert(c.offsets.at(-1)! >= length || c.inside, what);
            checkLegacy(lp, await greedyReference(engine, prompt, c.tokens), 1, what);
            // Streamed: the same, so no chunk carried a token the stop string removed.
            const joined: Legacy = {
              tokens: [],
              token_logprobs: [],
              top_logprobs: [],
              text_offset: [],
            };
            let streamed = "";
            for await (const chunk of await client.completions.create({ ...args, stream: true })) {
              const l = chunk.choices[0].logprobs as Legacy;
              streamed += chunk.choices[0].text;
              joined.tokens!.push(...l.tokens!);
              joined.token_logprobs!.push(...l.token_logprobs!);
              joined.top_logprobs!.push(...l.top_logprobs!);
              joined.text_offset!.push(...l.text_offset!);
            }
            assert.deepStrictEqual(streamed, c.text, what);
            assert.deepStrictEqual(joined, lp, what);
          }
        }
        assert(inside > 0 && atStart > 0, `stop cases: ${inside} inside, ${atStart} at a start`);
        console.log(`stop cases: ${inside} inside a token, ${atStart} at a token's start`);

        // Chat, streamed and not, by the same rule (its prompt ids give the same tokens on
        // /v1/completions, where the cases are found).
        const cases = await stopCases(chatIds);
        assert(cases.length > 0, "no stop case in the chat output");
        for (const c of cases) {
          const args = {
            model,
            messages,
            max_tokens: 16,
            ...GREEDY,
            logprobs: true,
            stop: c.stop,
          };
          const what = `chat: ${JSON.stringify(c)}`;
          const choice = (await client.chat.completions.create(args)).choices[0];
          assert.deepStrictEqual(choice.message.content, c.text, what);
          const content = choice.logprobs!.content as ChatEntry[];
          checkChat(content, await greedyReference(engine, chatIds, c.tokens), 0, what);
          const joined: ChatEntry[] = [];
          let streamed = "";
          for await (
            const chunk of await client.chat.completions.create({ ...args, stream: true })
          ) {
            streamed += chunk.choices[0].delta.content ?? "";
            joined.push(...(chunk.choices[0].logprobs?.content ?? []) as ChatEntry[]);
          }
          assert.deepStrictEqual(streamed, c.text, what);
          assert.deepStrictEqual(joined, content, what);
        }
      });

      await t.step("penalties: greedy follows the penalised logits step by step", async () => {
        const steps = 16;
        // This prompt's greedy output repeats tokens.
        const promptIds = tokenizer.encode("The quick brown fox");
        const plain = await greedyReference(engine, promptIds, steps);
        const repeats = steps - new Set(plain.map((s) => s.id)).size;
        assert(repeats > 0, "the unpenalised output repeats no token: a penalty changes nothing");
        const cases: [Record<string, number>, Penalties][] = [
          [{ frequency_penalty: 2 }, { ...NO_PENALTY, frequency: 2 }],
          [{ presence_penalty: 1.5 }, { ...NO_PENALTY, presence: 1.5 }],
          [{ repetition_penalty: 2 }, { ...NO_PENALTY, repetition: 2 }],
          [
            { repetition_penalty: 0.5, presence_penalty: -1, frequency_penalty: 0.5 },
            { repetition: 0.5, presence: -1, frequency: 0.5 },
          ],
        ];
        for (const [fields, penalties] of cases) {
          const ref = await greedyReference(engine, promptIds, steps, penalties);
          const res = await client.completions.create({
            model,
            prompt: promptIds,
            max_tokens: steps,
            ...GREEDY,
            logprobs: 2,
            ...fields,
          });
          // Logprobs stay those of the raw model output, penalties or not.
          checkLegacy(res.choices[0].logprobs as Legacy, ref, 2, JSON.stringify(fields));
          if (penalties.frequency === 2) {
            assert.notDeepStrictEqual(ref.map((s) => s.id), plain.map((s) => s.id));
            // A penalty of 2 per use outweighs these logits' spread: nothing repeats.
            const ids = ref.map((s) => s.id);
            assert.deepStrictEqual(
              new Set(ids).size,
              ids.length,
              `repeats under penalty 2: ${ids}`,
            );
          }
        }
        // Chat passes the penalties too.
        const ref = await greedyReference(engine, chatIds, 8, { ...NO_PENALTY, frequency: 2 });
        const res = await client.chat.completions.create({
          model,
          messages,
          max_tokens: 8,
          ...GREEDY,
          frequency_penalty: 2,
          logprobs: true,
        });
        checkChat(res.choices[0].logprobs!.content as ChatEntry[], ref, 0, "chat penalty");
      });

      await t.step("errors: bad logprobs and penalty fields get a 400 naming them", async () => {
        const c = "/v1/completions";
        const chat = "/v1/chat/completions";
        const m = [{ role: "user", content: "x" }];
        const bad: [string, Record<string, unknown>, string][] = [
          [c, { prompt: "x", presence_penalty: 2.5 }, "presence_penalty"],
          [c, { prompt: "x", presence_penalty: -3 }, "presence_penalty"],
          [c, { prompt: "x", presence_penalty: "1" }, "presence_penalty"],
          [chat, { messages: m, frequency_penalty: -2.01 }, "frequency_penalty"],
          [chat, { messages: m, frequency_penalty: [1] }, "frequency_penalty"],
          [c, { prompt: "x", repetition_penalty: 0 }, "repetition_penalty"],
          [chat, { messages: m, repetition_penalty: -1 }, "repetition_penalty"],
          [c, { prompt: "x", repetition_penalty: true }, "repetition_penalty"],
          [c, { prompt: "x", logprobs: 21 }, "logprobs"],
          [c, { prompt: "x", logprobs: -1 }, "logprobs"],
          [c, { prompt: "x", logprobs: 1.5 }, "logprobs"],
          [c, { prompt: "x", logprobs: true }, "logprobs"],
          [c, { prompt: "x", logprobs: "5" }, "logprobs"],
          [c, { prompt: "x", top_logprobs: 2 }, "top_logprobs"],
          [chat, { messages: m, logprobs: 1 }, "logprobs"],
          [chat, { messages: m, logprobs: "true" }, "logprobs"],
          [chat, { messages: m, top_logprobs: 3 }, "top_logprobs"],
          [chat, { messages: m, logprobs: false, top_logprobs: 3 }, "top_logprobs"],
          [chat, { messages: m, logprobs: true, top_logprobs: 21 }, "top_logprobs"],
          [chat, { messages: m, logprobs: true, top_logprobs: -1 }, "top_logprobs"],
          [chat, { messages: m, logprobs: true, top_logprobs: 2.5 }, "top_logprobs"],
          [chat, { messages: m, logprobs: true, top_logprobs: "3" }, "top_logprobs"],
          [chat, { messages: m, n: 0 }, "n"],
        ];
        for (const [path, body, param] of bad) {
          await assertApiError(await post(path, body), 400, param, JSON.stringify(body));
        }
        // Limits pass, and the server still answers.
        const edge = await post(c, {
          prompt: "x",
          max_tokens: 2,
          logprobs: 20,
          presence_penalty: -2,
          frequency_penalty: 2,
          repetition_penalty: 1e-3,
        });
        assert.deepStrictEqual(edge.status, 200, await edge.clone().text());
        const body = await edge.json();
        assert.deepStrictEqual(body.choices[0].logprobs.tokens.length, 2);
        assert(Object.keys(body.choices[0].logprobs.top_logprobs[0]).length >= 15);
        const chatEdge = await post(chat, {
          messages: m,
          max_tokens: 1,
          logprobs: true,
          top_logprobs: 20,
        });
        assert.deepStrictEqual(
          (await chatEdge.json()).choices[0].logprobs.content[0].top_logprobs.length,
          20,
        );
      });
    } finally {
      await served.close();
    }
  },
});
