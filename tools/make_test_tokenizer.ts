/**
 * Writes tests/fixtures/tokenizer/: a tiny byte-level BPE tokenizer built like Llama 3's
 * (the same Split regex, ByteLevel pre-tokenizer and decoder, `ignore_merges`, a
 * TemplateProcessing post-processor that prepends <|begin_of_text|>), with a handful of merges
 * instead of 280 000, plus the Llama 3 Instruct chat template and a generation_config.json that
 * lists two EOS ids.
 *
 * The merges are chosen to exercise streaming: "世"/"中" (E4 B8 xx) and "😀" (F0 9F 98 80) are
 * split inside their UTF-8 sequences, so an incremental decoder must hold text back.
 *
 * Run: `deno run --allow-write tools/make_test_tokenizer.ts`
 *
 * @module
 */

import { byteLevelBpeModel, bytesToUnicode, specialToken } from "./byte_level_bpe.ts";
import { helpRequested } from "./cli.ts";

const OUT = new URL("../tests/fixtures/tokenizer/", import.meta.url);

const BYTE = bytesToUnicode();

/** The byte-level spelling of `text` (its UTF-8 bytes, one map character each). */
function byteLevel(text: string): string {
  return Array.from(new TextEncoder().encode(text), (b) => BYTE[b]).join("");
}

/**
 * Merges as pairs of plain-text pieces, in rank order. A piece may also be raw bytes given as
 * a Uint8Array, for merges inside a multi-byte character.
 */
const MERGES: [string | Uint8Array, string | Uint8Array][] = [
  [" ", "t"],
  ["h", "e"],
  [" t", "he"],
  ["l", "l"],
  ["e", "ll"],
  ["h", "ell"],
  ["hell", "o"],
  [" ", "w"],
  ["o", "r"],
  [" w", "or"],
  ["l", "d"],
  [" wor", "ld"],
  ["\n", "\n"],
  ["u", "s"],
  ["us", "e"],
  ["use", "r"],
  // These two would merge across pre-token boundaries if the Llama 3 regex were mistranslated:
  // it splits digits in runs of at most three ("123|45") and matches contractions
  // case-insensitively ("'S|AM", not "'SAM").
  ["3", "4"],
  ["S", "A"],
  // "é" (C3 A9) becomes one token.
  [new Uint8Array([0xc3]), new Uint8Array([0xa9])],
  // E4 B8 is the first two bytes of both 世 and 中: each becomes [E4B8][third byte].
  [new Uint8Array([0xe4]), new Uint8Array([0xb8])],
  // F0 9F starts most emoji: 😀 becomes [F09F][98][80].
  [new Uint8Array([0xf0]), new Uint8Array([0x9f])],
];

function spell(piece: string | Uint8Array): string {
  return typeof piece === "string" ? byteLevel(piece) : Array.from(piece, (b) => BYTE[b]).join("");
}

/** Special tokens in Llama 3's order (it has reserved tokens between these; we do not). */
const SPECIAL = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
];

/** Llama 3's pre-tokenizer regex, verbatim from its tokenizer.json. */
const LLAMA3_SPLIT = [
  String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)`,
  String.raw`[^\r\n\p{L}\p{N}]?\p{L}+`,
  String.raw`\p{N}{1,3}`,
  String.raw` ?[^\s\p{L}\p{N}]+[\r\n]*`,
  String.raw`\s*[\r\n]+`,
  String.raw`\s+(?!\S)`,
  String.raw`\s+`,
].join("|");

/** The Llama 3 Instruct chat template, verbatim from Meta-Llama-3-8B-Instruct. */
const LLAMA3_CHAT_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = " +
  "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim " +
  "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}" +
  "{{ content }}{% endfor %}{% if add_generation_prompt %}" +
  "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

function build() {
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[BYTE[b]] = b;
  const merges: [string, string][] = [];
  for (const [a, b] of MERGES) {
    const left = spell(a);
    const right = spell(b);
    if (!(left in vocab) || !(right in vocab)) {
      throw new Error(`merge ${left} + ${right}: a part is not in the vocabulary yet`);
    }
    merges.push([left, right]);
    vocab[left + right] = Object.keys(vocab).length;
  }
  const firstSpecial = Object.keys(vocab).length;
  const id = (token: string) => firstSpecial + SPECIAL.indexOf(token);
  const bos = "<|begin_of_text|>";

  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content, i) => specialToken(firstSpecial + i, content)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_SPLIT }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
          ],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: bos, type_id: 1 } },
            { Sequence: { id: "B", type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [id(bos)], tokens: [bos] } },
        },
      ],
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: byteLevelBpeModel(vocab, merges),
  };

  const tokenizerConfig = {
    // Llama 3 ships clean_up_tokenization_spaces: true; the tests check Denali ignores it.
    added_tokens_decoder: Object.fromEntries(SPECIAL.map((content) => [String(id(content)), {
      content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    }])),
    bos_token: bos,
    chat_template: LLAMA3_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: true,
    eos_token: "<|eot_id|>",
    model_input_names: ["input_ids", "attention_mask"],
    model_max_length: 8192,
    tokenizer_class: "PreTrainedTokenizerFast",
  };

  const generationConfig = {
    bos_token_id: id(bos),
    do_sample: true,
    eos_token_id: [id("<|end_of_text|>"), id("<|eot_id|>")],
    temperature: 0.6,
    top_p: 0.9,
  };
  return { tokenizer, tokenizerConfig, generationConfig };
}

const USAGE = `Usage: deno run --allow-write tools/make_test_tokenizer.ts

Writes tests/fixtures/tokenizer/ (tokenizer.json, tokenizer_config.json,
generation_config.json): a tiny byte-level BPE tokenizer built like Llama 3's.
  -h, --help   show this help`;

if (import.meta.main && !helpRequested(Deno.args, USAGE)) {
  const { tokenizer, tokenizerConfig, generationConfig } = build();
  await Deno.mkdir(OUT, { recursive: true });
  const write = (name: string, value: unknown) =>
    Deno.writeTextFile(new URL(name, OUT), JSON.stringify(value, null, 2) + "\n");
  await write("tokenizer.json", tokenizer);
  await write("tokenizer_config.json", tokenizerConfig);
  await write("generation_config.json", generationConfig);
  const size = Object.keys(tokenizer.model.vocab).length + tokenizer.added_tokens.length;
  console.log(`wrote ${OUT.pathname}: ${size} tokens, ${tokenizer.model.merges.length} merges`);
}
