/**
 * Pieces of a byte-level BPE tokenizer.json (GPT-2's scheme, as Llama 3's uses it), shared by
 * the scripts that write synthetic tokenizers: tools/make_test_tokenizer.ts (the test fixture)
 * and bench/structured_bench.ts (a Llama-3-sized vocabulary). Written from the format, not from
 * engine/, so the engine's tokenizer code reads files it did not make.
 *
 * @module
 */

/**
 * GPT-2's byte → printable character map (`bytes_to_unicode` in openai/gpt-2 encoder.py):
 * printable Latin-1 bytes map to themselves, the rest to U+0100 upwards, so every byte is one
 * visible character and a BPE vocabulary can be a JSON object of strings.
 */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  const ranges: [number, number][] = [[0x21, 0x7e], [0xa1, 0xac], [0xae, 0xff]];
  for (const [lo, hi] of ranges) for (let b = lo; b <= hi; b++) printable.push(b);
  const map = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return map;
}

/** The `model` section of a byte-level BPE tokenizer.json, Llama 3's way (`ignore_merges`). */
export function byteLevelBpeModel<Merges extends readonly (readonly [string, string])[]>(
  vocab: Record<string, number>,
  merges: Merges,
) {
  return {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: true,
    vocab,
    merges,
  };
}

/** An `added_tokens` entry of tokenizer.json for a special token (matched whole, never split). */
export function specialToken(id: number, content: string) {
  return {
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}
