/**
 * engine/tokenizer.ts against the tiny Llama-3-style fixture (tools/make_test_tokenizer.ts).
 * Expected ids are read from the fixture's own vocabulary and written by hand from its merges,
 * so they do not come from the library under test; round trips are also checked against a
 * byte-level reference decoder written here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ChatTemplateError, Tokenizer, TokenizerError } from "../../engine/tokenizer.ts";

const FIXTURE = fileURLToPath(new URL("../fixtures/tokenizer/", import.meta.url));
const tokenizerJson = JSON.parse(await Deno.readTextFile(join(FIXTURE, "tokenizer.json")));
const configJson = JSON.parse(await Deno.readTextFile(join(FIXTURE, "tokenizer_config.json")));
const vocab: Record<string, number> = tokenizerJson.model.vocab;
const special: Record<string, number> = Object.fromEntries(
  tokenizerJson.added_tokens.map((t: { content: string; id: number }) => [t.content, t.id]),
);
const BOS = special["<|begin_of_text|>"];
const EOT = special["<|eot_id|>"];
const END = special["<|end_of_text|>"];
const SH = special["<|start_header_id|>"];
const EH = special["<|end_header_id|>"];

const tok = await Tokenizer.load(FIXTURE);

/**
 * Reference decode for the byte-level fixture: ids below 256 are the bytes themselves (the
 * generator's layout), so each vocabulary character maps back to a byte through them.
 */
const charToByte = new Map<string, number>();
for (const [text, id] of Object.entries(vocab)) if (id < 256) charToByte.set(text, id);
const idToText = new Map<number, string>();
for (const [text, id] of Object.entries(vocab)) idToText.set(id, text);
/** Decode as HF's Rust tokenizers does: lossy UTF-8, BOM kept, special tokens as text. */
function referenceDecode(ids: readonly number[]): string {
  let out = "";
  let bytes: number[] = [];
  const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
  const drain = () => {
    out += utf8.decode(new Uint8Array(bytes));
    bytes = [];
  };
  for (const id of ids) {
    const content = tokenizerJson.added_tokens.find((t: { id: number }) => t.id === id)?.content;
    if (content !== undefined) {
      drain();
      out += content;
    } else {
      for (const ch of idToText.get(id)!) bytes.push(charToByte.get(ch)!);
    }
  }
  drain();
  return out;
}

const SAMPLES = [
  "hello world",
  " the user said: it's 12345 apples!\n\n  ok\tdone ",
  "世界 中文 and 日本語のテキスト",
  "😀 emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
  "café naïve résumé",
  "<|begin_of_text|>hi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n世界😀",
  "Hello , world . Isn 't it ?",
];

Deno.test("fixture layout: 256 byte tokens at their byte values, specials after the merges", () => {
  assert.equal(charToByte.size, 256);
  assert.equal(vocab["h"], "h".charCodeAt(0));
  assert.deepEqual([BOS, END, SH, EH, EOT], [277, 278, 279, 280, 281]);
  assert.equal(tok.vocabSize, 282);
});

Deno.test("encode: merges applied, BOS from the post-processor only when asked", () => {
  assert.deepEqual(tok.encode("hello world"), [BOS, vocab["hello"], vocab["\u0120world"]]);
  assert.deepEqual(tok.encode("hello world", { addSpecialTokens: false }), [
    vocab["hello"],
    vocab["\u0120world"],
  ]);
  // " user" has no "Ġuser" merge: the space stays a token of its own.
  assert.deepEqual(tok.encode(" the user", { addSpecialTokens: false }), [
    vocab["\u0120the"],
    vocab["\u0120"],
    vocab["user"],
  ]);
});

Deno.test("encode: Llama 3's pre-tokenizer regex survives translation to JavaScript", () => {
  const bytes = (text: string) => Array.from(text, (c) => c.charCodeAt(0));
  const noBos = { addSpecialTokens: false };
  // \p{N}{1,3}: "12345" is "123" + "45", so the "3 4" merge cannot apply; "34" alone merges.
  assert.deepEqual(tok.encode("12345", noBos), bytes("12345"));
  assert.deepEqual(tok.encode("345", noBos), [vocab["34"], vocab["5"]]);
  // (?i:'s|...): "'SAM" is "'S" + "AM", so the "S A" merge cannot apply; in "SAM" it does.
  assert.deepEqual(tok.encode("'SAM", noBos), bytes("'SAM"));
  assert.deepEqual(tok.encode("SAM", noBos), [vocab["SA"], vocab["M"]]);
  // Without the contraction rule "'sam" would be one piece too; lower case must split the same.
  assert.deepEqual(tok.encode("'sam", noBos), bytes("'sam"));
});

Deno.test("encode: multi-byte characters split across byte-level tokens", () => {
  const e4b8 = vocab["\u00e4\u00b8"]; // bytes E4 B8, shared by 世 (E4 B8 96) and 中 (E4 B8 AD)
  const f09f = vocab["\u00f0\u0141"]; // bytes F0 9F, the start of 😀 (F0 9F 98 80)
  assert.deepEqual(tok.encode("世中", { addSpecialTokens: false }), [e4b8, 0x96, e4b8, 0xad]);
  assert.deepEqual(tok.encode("😀", { addSpecialTokens: false }), [f09f, 0x98, 0x80]);
  assert.deepEqual(tok.encode("é", { addSpecialTokens: false }), [vocab["\u00c3\u00a9"]]);
});

Deno.test("encode: special-token text becomes the special token", () => {
  const ids = tok.encode("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", {
    addSpecialTokens: false,
  });
  assert.deepEqual(ids, [
    SH,
    vocab["user"],
    EH,
    vocab["\u010a\u010a"],
    vocab["h"],
    vocab["i"],
    EOT,
  ]);
});

Deno.test("round trips: ASCII, CJK, emoji, accents, special tokens", () => {
  for (const text of SAMPLES) {
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
    assert.equal(referenceDecode(ids), text, JSON.stringify(text));
    assert.equal(tok.decode(tok.encode(text)), "<|begin_of_text|>" + text);
  }
});

Deno.test("decode: no clean_up_tokenization_spaces even though the config asks for it", () => {
  assert.equal(configJson.clean_up_tokenization_spaces, true);
  const text = "Hello , world . Isn 't it ?";
  assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
});

Deno.test("decode: skipSpecialTokens, empty input, partial characters", () => {
  const ids = tok.encode("<|begin_of_text|>hi<|eot_id|> there", { addSpecialTokens: false });
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "hi there");
  assert.equal(tok.decode([]), "");
  // The first token of 世 alone is an incomplete UTF-8 sequence.
  assert.equal(tok.decode([vocab["\u00e4\u00b8"]]), "\ufffd");
});

Deno.test("special tokens and EOS ids: generation_config's list, then tokenizer_config's", () => {
  assert.equal(tok.bosToken, "<|begin_of_text|>");
  assert.equal(tok.bosId, BOS);
  assert.equal(tok.eosToken, "<|eot_id|>");
  assert.deepEqual(tok.eosIds, [END, EOT]);
  assert.ok(tok.isEos(EOT) && tok.isEos(END));
  assert.ok(!tok.isEos(BOS) && !tok.isEos(vocab["h"]));
  assert.equal(tok.tokenToId("<|eot_id|>"), EOT);
  assert.equal(tok.idToToken(vocab["hello"]), "hello");
});

Deno.test("chat template: Llama 3 format for a 2-message conversation", () => {
  const messages = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "  Hi there!\n" },
  ];
  const expected = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
    "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" +
    "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  assert.ok(tok.hasChatTemplate);
  assert.equal(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), expected);
  const noPrompt = expected.slice(0, expected.lastIndexOf("<|start_header_id|>"));
  assert.equal(tok.applyChatTemplate(messages), noPrompt);

  // encodeChat must not add a second BOS in front of the template's own.
  const ids = tok.encodeChat(messages, { addGenerationPrompt: true });
  assert.equal(ids[0], BOS);
  assert.notEqual(ids[1], BOS);
  assert.equal(tok.decode(ids), expected);
  // "assistant" has no merges in the fixture: one token per byte.
  const tail = [SH, ...Array.from("assistant", (c) => c.charCodeAt(0)), EH, vocab["\u010a\u010a"]];
  assert.deepEqual(ids.slice(-tail.length), tail);
});

// ---------------------------------------------------------------- files and error paths

const tempDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) Deno.removeSync(dir, { recursive: true });
});

/** A throwaway model directory holding `files` (objects are written as JSON). */
async function modelDir(files: Record<string, string | object>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "denali_tok_" });
  tempDirs.push(dir);
  for (const [name, body] of Object.entries(files)) {
    await Deno.writeTextFile(
      join(dir, name),
      typeof body === "string" ? body : JSON.stringify(body),
    );
  }
  return dir;
}

async function rejects(
  promise: Promise<unknown>,
  type: new (...args: never[]) => Error,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
    assert.match((e as Error).message, pattern);
    return true;
  });
}

Deno.test("load errors name the file and the remedy", async (t) => {
  await t.step("missing directory", async () => {
    await rejects(
      Tokenizer.load("/nonexistent/denali-model"),
      TokenizerError,
      /cannot open model directory \/nonexistent\/denali-model/,
    );
  });
  await t.step("missing tokenizer.json", async () => {
    const dir = await modelDir({ "tokenizer_config.json": configJson });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /no tokenizer\.json in .*denali_tok_.*huggingface-cli download.*save_pretrained/,
    );
  });
  await t.step("truncated tokenizer.json", async () => {
    const text = JSON.stringify(tokenizerJson);
    const dir = await modelDir({ "tokenizer.json": text.slice(0, text.length / 2) });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /tokenizer\.json is not valid JSON .*truncated: download it again/,
    );
  });
  await t.step("Git LFS pointer instead of tokenizer.json", async () => {
    const pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9085657\n";
    const dir = await modelDir({ "tokenizer.json": pointer });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /tokenizer\.json is a Git LFS pointer.*git lfs pull/,
    );
  });
  await t.step("tokenizer.json the library cannot build", async () => {
    const { model: _, ...noModel } = tokenizerJson;
    const dir = await modelDir({ "tokenizer.json": noModel });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /tokenizer\.json could not be loaded by @huggingface\/tokenizers: .*"model"/,
    );
  });
  await t.step("eos_token that tokenizer.json does not know", async () => {
    const dir = await modelDir({
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": { ...configJson, eos_token: "</s>" },
    });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /tokenizer_config\.json: eos_token "<\/s>" is not a token of tokenizer\.json/,
    );
  });
  await t.step("malformed eos_token_id", async () => {
    const dir = await modelDir({
      "tokenizer.json": tokenizerJson,
      "generation_config.json": { eos_token_id: "<|eot_id|>" },
    });
    await rejects(
      Tokenizer.load(dir),
      TokenizerError,
      /generation_config\.json: "eos_token_id" must be a token id or a list of ids/,
    );
  });
});

Deno.test("config.json's eos_token_id joins the list; tokenizer_config.json is optional", async () => {
  const dir = await modelDir({
    "tokenizer.json": tokenizerJson,
    "config.json": { eos_token_id: END },
  });
  const bare = await Tokenizer.load(dir);
  assert.deepEqual(bare.eosIds, [END]);
  assert.equal(bare.bosToken, null);
  // tokenizer.json's post-processor still adds BOS.
  assert.deepEqual(bare.encode("hello"), [BOS, vocab["hello"]]);
});

Deno.test("fromFiles: parsed files, special tokens written as AddedToken objects", () => {
  const t = Tokenizer.fromFiles("in-memory", {
    tokenizer: tokenizerJson,
    config: {
      ...configJson,
      bos_token: { __type: "AddedToken", content: "<|begin_of_text|>", special: true },
      eos_token: { __type: "AddedToken", content: "<|end_of_text|>", special: true },
    },
    modelConfig: { eos_token_id: [EOT] },
  });
  assert.equal(t.bosId, BOS);
  assert.deepEqual(t.eosIds, [EOT, END]);
  assert.deepEqual(t.encode("hello"), [BOS, vocab["hello"]]);
  assert.throws(
    () => Tokenizer.fromFiles("in-memory", { tokenizer: tokenizerJson, config: { bos_token: 7 } }),
    /in-memory\/tokenizer_config\.json: a special token must be a string or \{"content": "..."\}/,
  );
});

Deno.test("add_bos_token / add_eos_token override the post-processor when set", async () => {
  const dir = await modelDir({
    "tokenizer.json": tokenizerJson,
    "tokenizer_config.json": { ...configJson, add_bos_token: false, add_eos_token: true },
  });
  const t = await Tokenizer.load(dir);
  assert.deepEqual(t.encode("hello"), [vocab["hello"], EOT]);
  assert.deepEqual(t.encode("hello", { addSpecialTokens: false }), [vocab["hello"]]);
});

Deno.test("chat errors: no template, unparsable template, raise_exception, bad messages", async (t) => {
  await t.step("base model without a chat template", async () => {
    const { chat_template: _, ...noTemplate } = configJson;
    const dir = await modelDir({
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": noTemplate,
    });
    const base = await Tokenizer.load(dir);
    assert.equal(base.hasChatTemplate, false);
    assert.throws(
      () => base.applyChatTemplate([{ role: "user", content: "hi" }]),
      (e: unknown) =>
        e instanceof ChatTemplateError &&
        /denali_tok_.* has no chat template: tokenizer_config\.json has no "chat_template" and there is no chat_template\.jinja.*completions endpoint/
          .test(e.message),
    );
    assert.deepEqual(base.encode("hello", { addSpecialTokens: false }), [vocab["hello"]]);
  });
  await t.step("template that does not parse", async () => {
    const dir = await modelDir({
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": { ...configJson, chat_template: "{% for %}" },
    });
    const broken = await Tokenizer.load(dir);
    assert.equal(broken.hasChatTemplate, false);
    assert.throws(
      () => broken.applyChatTemplate([{ role: "user", content: "hi" }]),
      (e: unknown) =>
        e instanceof ChatTemplateError &&
        /chat template in .*tokenizer_config\.json does not parse with @huggingface\/jinja/
          .test(e.message),
    );
  });
  await t.step("template that calls raise_exception", () => {
    assert.throws(
      () => jinjaTok.applyChatTemplate([{ role: "tool", content: "{}" }]),
      (e: unknown) =>
        e instanceof ChatTemplateError &&
        /chat_template\.jinja failed on this conversation: roles must be user or assistant, got tool/
          .test(e.message),
    );
  });
  await t.step("messages that are not a conversation", () => {
    assert.throws(() => tok.applyChatTemplate([]), /non-empty array/);
    assert.throws(
      () => tok.applyChatTemplate([{ content: "x" } as never]),
      /chat message 0 must be an object with a string "role"/,
    );
  });
});

/** A Llama-3.1-like template using the jinja features real templates lean on. */
const JINJA_TEMPLATE = `{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message + "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message['role'] not in ['user', 'assistant'] %}
        {{- raise_exception("roles must be user or assistant, got " + message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']|trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
`;

const jinjaTok = await Tokenizer.load(
  await modelDir({
    "tokenizer.json": tokenizerJson,
    "tokenizer_config.json": configJson,
    "chat_template.jinja": JINJA_TEMPLATE,
  }),
);

Deno.test("chat_template.jinja wins over tokenizer_config.json; variables and tools pass through", () => {
  const messages = [
    { role: "system", content: "You are terse. " },
    { role: "user", content: "Hi" },
  ];
  const head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";
  const rest = "Today Date: 01 Jan 2025\n\nYou are terse.<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
    "<|start_header_id|>assistant<|end_header_id|>\n\n";
  const variables = { date_string: "01 Jan 2025" };
  assert.equal(
    jinjaTok.applyChatTemplate(messages, { addGenerationPrompt: true, variables }),
    head + rest,
  );
  assert.equal(
    jinjaTok.applyChatTemplate(messages, { addGenerationPrompt: true, variables, tools: [{}] }),
    head + "Environment: ipython\n" + rest,
  );
  // Without date_string the template falls back to strftime_now, today's date.
  const today = jinjaTok.applyChatTemplate(messages);
  assert.match(today, /Today Date: \d\d \w{3} \d{4}\n\n/);
});
