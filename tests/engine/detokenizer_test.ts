/**
 * engine/detokenizer.ts: streamed text, one id at a time, must add up to the full decode and
 * never carry half a character. Uses the byte-level fixture, whose merges split 世 and 😀
 * inside their UTF-8 sequences (tools/make_test_tokenizer.ts).
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { IncrementalDecoder, type TokenDecoder } from "../../engine/detokenizer.ts";
import { Tokenizer } from "../../engine/tokenizer.ts";
import { mulberry32 } from "../support/numeric.ts";

const tok = await Tokenizer.load(
  fileURLToPath(new URL("../fixtures/tokenizer/", import.meta.url)),
);
const id = (token: string) => tok.tokenToId(token)!;
const E4B8 = id("\u00e4\u00b8");
const F09F = id("\u00f0\u0141");
const BOS = id("<|begin_of_text|>");
const EOT = id("<|eot_id|>");

/** Push every id, then flush; returns each non-empty chunk in order. */
function stream(ids: readonly number[], decoder: IncrementalDecoder): string[] {
  const chunks = ids.map((i) => decoder.push(i));
  chunks.push(decoder.flush());
  return chunks.filter((c) => c !== "");
}

/** A chunk must not hold U+FFFD, nor cut a UTF-16 surrogate pair. */
function assertWholeCharacters(chunks: readonly string[], context: string): void {
  for (const chunk of chunks) {
    assert.ok(!chunk.includes("\ufffd"), `${context}: chunk ${JSON.stringify(chunk)} has U+FFFD`);
    const first = chunk.charCodeAt(0);
    const last = chunk.charCodeAt(chunk.length - 1);
    assert.ok(!(first >= 0xdc00 && first <= 0xdfff), `${context}: chunk starts mid-pair`);
    assert.ok(!(last >= 0xd800 && last <= 0xdbff), `${context}: chunk ends mid-pair`);
  }
}

const SAMPLES = [
  "hello world",
  "世界 中文 and 日本語のテキスト",
  "😀😀 emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
  "café naïve résumé\n\n  the end ",
  "<|start_header_id|>assistant<|end_header_id|>\n\n世😀<|eot_id|>",
  "Hello , world . Isn 't it ?",
];

Deno.test("one id at a time adds up to decode(all ids), in whole characters", () => {
  for (const text of SAMPLES) {
    const ids = tok.encode(text, { addSpecialTokens: false });
    for (const skipSpecialTokens of [false, true]) {
      const full = tok.decode(ids, { skipSpecialTokens });
      assert.ok(!full.includes("\ufffd"));
      const chunks = stream(ids, new IncrementalDecoder(tok, { skipSpecialTokens }));
      assert.equal(chunks.join(""), full, JSON.stringify(text));
      assertWholeCharacters(chunks, JSON.stringify(text));
    }
  }
});

Deno.test("holds back a character split over tokens until it is complete", () => {
  const d = new IncrementalDecoder(tok);
  // 😀 = F0 9F | 98 | 80, then 世 = E4 B8 | 96.
  assert.deepEqual([F09F, 0x98, 0x80, E4B8, 0x96].map((i) => d.push(i)), ["", "", "😀", "", "世"]);
  assert.equal(d.push(id("h")), "h");
  assert.equal(d.flush(), "");
  assert.equal(d.tokenCount, 6);
});

Deno.test("flush returns what was held back, U+FFFD for a sequence that never completed", () => {
  const d = new IncrementalDecoder(tok);
  assert.equal(d.push(id("hello")), "hello");
  assert.equal(d.push(F09F), "");
  assert.equal(d.push(0x98), "");
  assert.equal(d.flush(), "\ufffd");
  assert.equal(d.flush(), "");
  // An invalid byte followed by text is emitted at once: waiting would not repair it.
  const e = new IncrementalDecoder(tok);
  assert.equal(e.push(0x80), "");
  assert.equal(e.push(id("h")), "\ufffdh");
  assert.equal(tok.decode([0x80, id("h")]), "\ufffdh");
});

Deno.test("prompt ids give context but are never emitted", () => {
  const prompt = tok.encode("<|start_header_id|>user<|end_header_id|>\n\nhi 世", {
    addSpecialTokens: true,
  });
  const generated = tok.encode(" the world 中😀!", { addSpecialTokens: false });
  for (const skipSpecialTokens of [false, true]) {
    const d = new IncrementalDecoder(tok, { promptIds: prompt, skipSpecialTokens });
    const chunks = stream(generated, d);
    const whole = tok.decode([...prompt, ...generated], { skipSpecialTokens });
    const promptText = tok.decode(prompt, { skipSpecialTokens });
    assert.equal(chunks.join(""), whole.slice(promptText.length));
    assert.equal(chunks.join(""), " the world 中😀!");
    assertWholeCharacters(chunks, "with prompt");
  }
});

Deno.test("reset starts a new sequence on the same decoder", () => {
  const d = new IncrementalDecoder(tok);
  d.push(F09F); // left incomplete on purpose
  d.reset();
  assert.equal(d.tokenCount, 0);
  assert.equal(stream(tok.encode("世界", { addSpecialTokens: false }), d).join(""), "世界");
});

Deno.test("skipped special tokens emit nothing and do not disturb the text", () => {
  const d = new IncrementalDecoder(tok, { skipSpecialTokens: true });
  assert.equal(d.push(BOS), "");
  assert.equal(d.push(id("hello")), "hello");
  assert.equal(d.push(EOT), "");
  assert.equal(d.push(id("\u0120world")), " world");
});

Deno.test("context-dependent decoders: SentencePiece's leading-space strip", () => {
  // Llama 2's decoder turns "▁" into a space and strips one space at the start of a decode,
  // so "▁world" alone is "world" but after "▁hello" it is " world".
  const pieces = ["\u2581hello", "\u2581world", "!", "\u2581\u4e16", "\u754c"];
  const sentencePiece: TokenDecoder = {
    decode: (ids) => ids.map((i) => pieces[i]).join("").replaceAll("\u2581", " ").replace(/^ /, ""),
  };
  const ids = [0, 1, 2, 3, 4, 1];
  const chunks = stream(ids, new IncrementalDecoder(sentencePiece));
  assert.deepEqual(chunks, ["hello", " world", "!", " \u4e16", "\u754c", " world"]);
  assert.equal(chunks.join(""), sentencePiece.decode(ids));
  // With the prompt as context the first generated piece keeps its space.
  const withPrompt = stream([1, 2], new IncrementalDecoder(sentencePiece, { promptIds: [0] }));
  assert.equal(withPrompt.join(""), " world!");
});

Deno.test("random id sequences, valid UTF-8 or not: the stream equals the full decode", () => {
  const random = mulberry32(1234);
  // Bias towards multi-byte pieces so that partial and invalid sequences are common.
  const pool = [
    ...Array.from({ length: 256 }, (_, b) => b),
    ...Array(40).fill(E4B8),
    ...Array(40).fill(F09F),
    ...Array.from({ length: 0x40 }, (_, i) => 0x80 + i), // continuation bytes, again
    id("hello"),
    id("\u0120the"),
    BOS,
    EOT,
  ];
  for (let trial = 0; trial < 500; trial++) {
    const ids = Array.from(
      { length: 1 + Math.floor(random() * 24) },
      () => pool[Math.floor(random() * pool.length)],
    );
    const skipSpecialTokens = trial % 2 === 1;
    const chunks = stream(ids, new IncrementalDecoder(tok, { skipSpecialTokens }));
    const full = tok.decode(ids, { skipSpecialTokens });
    assert.equal(chunks.join(""), full, `trial ${trial}: ids ${JSON.stringify(ids)}`);
    // Whatever push() returned (all chunks but a flush) ends in a whole character.
    for (const chunk of chunks) assert.ok(!/[\ud800-\udbff]$/.test(chunk));
  }
});

Deno.test("decodes a bounded window, not the whole sequence, on each step", () => {
  const calls: number[] = [];
  const counting: TokenDecoder = {
    decode(ids, options) {
      calls.push(ids.length);
      return tok.decode(ids, options);
    },
  };
  const ids = tok.encode("hello world the world ".repeat(50), { addSpecialTokens: false });
  const d = new IncrementalDecoder(counting);
  const text = ids.map((i) => d.push(i)).join("") + d.flush();
  assert.equal(text, "hello world the world ".repeat(50));
  assert.ok(ids.length > 200);
  // Every window is the last emission plus the new token: two ids for ASCII.
  assert.ok(Math.max(...calls) <= 2, `largest window ${Math.max(...calls)}`);
});
