/**
 * engine/request_text.ts against an independent reference: the tokenizer's decode of the whole
 * output, cut at the first occurrence of a stop string. Every split of the text into chunks,
 * every stop string taken from the text (straddling tokens, inside a token, spanning a
 * multi-byte character) must give exactly the reference text, end on the token that completes
 * the string, and report one logprobs entry per token, in order.
 *
 * Uses the byte-level fixture, whose merges split 世 and 😀 inside their UTF-8 sequences.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { OutputText } from "../../engine/request_text.ts";
import { TokenTexts } from "../../engine/token_texts.ts";
import { Tokenizer } from "../../engine/tokenizer.ts";

const tok = await Tokenizer.load(
  fileURLToPath(new URL("../fixtures/tokenizer/", import.meta.url)),
);
const texts = new TokenTexts(tok);
const decode = (ids: readonly number[]) => tok.decode(ids, { skipSpecialTokens: true });
const prompt = tok.encode("Say:");
const output = tok.encode("Hello 世界, a 😀 here and there.", { addSpecialTokens: false });
const EOT = tok.tokenToId("<|eot_id|>")!;
const lp = (id: number) => ({ logprob: -id / 1000, top: [] });

/** Feeds `ids` (the last ends the sequence unless a stop string does first). */
function run(ids: readonly number[], stop: string[], stopToken = false) {
  const out = new OutputText({ texts, promptIds: prompt, stop, logprobs: true });
  let text = "";
  const entries: { tokenId: number; textOffset: number }[] = [];
  let used = 0;
  const take = () => {
    assert.equal(out.textOffset, [...text].length, "textOffset counts code points sent");
    text += out.text;
    entries.push(...out.entries);
  };
  for (let i = 0; i < ids.length; i++) {
    used++;
    if (i === ids.length - 1) {
      out.finish(ids[i], lp(ids[i]), stopToken);
      take();
      break;
    }
    const stopped = out.push(ids[i], lp(ids[i]));
    take();
    if (stopped) break;
  }
  return { text, entries, used, stopString: out.stopString };
}

Deno.test("output text: no stop string gives the whole decode, one entry per token", () => {
  const full = decode(output);
  const got = run(output, []);
  assert.equal(got.text, full);
  assert.deepEqual(got.entries.map((e) => e.tokenId), output);
  // Each whole-character token's text sits at its offset (code points).
  const chars = [...full];
  got.entries.forEach((e, i) => {
    const own = texts.text(e.tokenId);
    if (own.includes("\ufffd")) return;
    assert.equal(chars.slice(e.textOffset, e.textOffset + [...own].length).join(""), own);
    if (i > 0) assert.ok(e.textOffset >= got.entries[i - 1].textOffset);
  });
});

Deno.test("output text: every stop string taken from the text cuts at its first match", () => {
  const full = decode(output);
  const chars = [...full];
  let cases = 0;
  for (let start = 0; start < chars.length; start++) {
    for (const length of [1, 2, 3, 5]) {
      if (start + length > chars.length) continue;
      const stop = chars.slice(start, start + length).join("");
      const at = full.indexOf(stop);
      // The reference: the first token whose decoded prefix holds the string ends the output.
      let ends = output.length;
      for (let i = 1; i <= output.length; i++) {
        if (decode(output.slice(0, i)).includes(stop)) {
          ends = i;
          break;
        }
      }
      const got = run([...output, EOT], [stop, "never-there"], true);
      const what = `stop ${JSON.stringify(stop)}`;
      assert.equal(got.text, full.slice(0, at), what);
      assert.equal(got.stopString, stop, what);
      assert.equal(got.used, ends, what);
      assert.deepEqual(got.entries.map((e) => e.tokenId), output.slice(0, ends), what);
      cases++;
    }
  }
  assert.ok(cases > 50, `${cases} cases`);
});

Deno.test("output text: before min_tokens, no stop string can end", () => {
  const text = "ab ab ab";
  const ids = tok.encode(text, { addSpecialTokens: false });
  const withMin = (minTokens: number) => {
    const out = new OutputText({
      texts,
      promptIds: prompt,
      stop: ["ab"],
      logprobs: false,
      minTokens,
    });
    let sent = "";
    for (let i = 0; i < ids.length; i++) {
      const stopped = out.push(ids[i], undefined);
      sent += out.text;
      if (stopped) return { sent, used: i + 1 };
    }
    return { sent, used: ids.length };
  };
  // The reference: the first token after the first min_tokens whose text completes "ab".
  const decodedAt = (n: number) => decode(ids.slice(0, n));
  for (let min = 0; min < ids.length; min++) {
    let ends = -1;
    for (let n = min + 1; n <= ids.length && ends < 0; n++) {
      const at = decodedAt(n).indexOf("ab", Math.max(0, decodedAt(min).length - 1));
      if (at >= 0) ends = n;
    }
    const got = withMin(min);
    if (ends < 0) {
      assert.equal(got.sent, text, `min ${min}`);
      continue;
    }
    assert.equal(got.used, ends, `min ${min}`);
    const cut = decodedAt(ends);
    assert.equal(got.sent, cut.slice(0, cut.indexOf("ab", Math.max(0, decodedAt(min).length - 1))));
  }
});

Deno.test("output text: a stop token adds no text but has its entry at the end", () => {
  const cut = output.slice(0, 4);
  const stopId = output[4]; // an ordinary token used as a stop token id
  const got = run([...cut, stopId], [], true);
  assert.equal(got.text, decode(cut));
  assert.deepEqual(got.entries.map((e) => e.tokenId), [...cut, stopId]);
  assert.equal(got.entries.at(-1)!.textOffset, [...decode(cut)].length);
  // Without the stop-token flag the same token's text is part of the output.
  assert.equal(run([...cut, stopId], []).text, decode([...cut, stopId]));
});

Deno.test("output text: stop strings need a tokenizer", () => {
  assert.throws(
    () => new OutputText({ texts: null, promptIds: [1], stop: ["x"], logprobs: false }),
    /stop strings need a tokenizer/,
  );
  const bare = new OutputText({ texts: null, promptIds: [1], stop: [], logprobs: true });
  assert.equal(bare.push(5, lp(5)), false);
  assert.deepEqual(bare.entries.map((e) => [e.tokenId, e.textOffset]), [[5, 0]]);
  assert.equal(bare.text, "");
});
