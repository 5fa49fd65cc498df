/**
 * A Hugging Face checkpoint's tokenizer: tokenizer.json through `@huggingface/tokenizers`, the
 * chat template through `@huggingface/jinja`, and the special tokens and EOS ids gathered from
 * tokenizer_config.json, generation_config.json and config.json.
 *
 * @example
 * ```ts ignore
 * const tok = await Tokenizer.load("/models/Llama-3.2-1B-Instruct");
 * const ids = tok.encodeChat([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
 * const text = tok.decode(ids);
 * ```
 *
 * @module
 */

// Inline, pinned npm: specifiers so the module resolves when imported by URL (STYLE.md), which
// an import-map entry in deno.json would not give.
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { Template } from "npm:@huggingface/jinja@0.5.11";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** tokenizer.json (or its companions) is missing, malformed or unsupported. */
export class TokenizerError extends Error {
  /**
   * Creates the error.
   * @param message what is wrong, naming the file, and what to do about it
   */
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

/** `messages` with a missing or null `content` replaced by "". */
function withEmptyContent(messages: readonly ChatMessage[]): JsonObject[] {
  return messages.map((m) =>
    (m.content === null || m.content === undefined ? { ...m, content: "" } : m) as JsonObject
  );
}

/** Chat was requested but the model has no usable chat template, or the template failed. */
export class ChatTemplateError extends Error {
  /**
   * Creates the error.
   * @param message what is wrong, naming the template's file, and what to do about it
   */
  constructor(message: string) {
    super(message);
    this.name = "ChatTemplateError";
  }
}

/** One chat message as the template sees it; extra fields (tool_calls, ...) pass through. */
export interface ChatMessage {
  /** "system", "user", "assistant", "tool", ... */
  readonly role: string;
  /** Usually a string; templates that accept content parts take an array. */
  readonly content?: unknown;
  /** Anything else a template reads, e.g. `tool_calls`. */
  readonly [key: string]: unknown;
}

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add BOS/EOS as the tokenizer's post-processor (or add_bos_token) says; default true. */
  readonly addSpecialTokens?: boolean;
}

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (<|eot_id|>, ...) from the text; default false. */
  readonly skipSpecialTokens?: boolean;
}

/** Options for {@link Tokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the header that opens the assistant's turn; default false. */
  readonly addGenerationPrompt?: boolean;
  /** Tool schemas (OpenAI `tools`), passed as `tools`; default none. */
  readonly tools?: readonly unknown[];
  /** More template variables, as HF's `**kwargs` (e.g. `date_string`). */
  readonly variables?: Readonly<Record<string, unknown>>;
}

/** The parsed files a tokenizer is built from, for callers that already read them. */
export interface TokenizerFiles {
  /** tokenizer.json. */
  readonly tokenizer: Record<string, unknown>;
  /** tokenizer_config.json, or {} without one. */
  readonly config?: Record<string, unknown>;
  /** generation_config.json, if present. */
  readonly generationConfig?: Record<string, unknown>;
  /** config.json, if present. */
  readonly modelConfig?: Record<string, unknown>;
  /** chat_template.jinja, if present; it wins over tokenizer_config.json's chat_template. */
  readonly chatTemplateJinja?: string;
}

type JsonObject = Record<string, unknown>;

/**
 * Encode, decode and chat-template for one model. Build it with {@link Tokenizer.load}.
 *
 * Decoding never applies `clean_up_tokenization_spaces` (which Llama 3's config turns on): it
 * deletes the space in "a ." so text would no longer round-trip, and it is not stable under
 * the windowed decoding a stream uses, so streamed and non-streamed output would differ.
 */
export class Tokenizer {
  /** BOS token text from tokenizer_config.json, or null. */
  readonly bosToken: string | null;
  /** Its id, or null. */
  readonly bosId: number | null;
  /** EOS token text from tokenizer_config.json, or null. */
  readonly eosToken: string | null;
  /**
   * Every id that ends generation: generation_config.json's eos_token_id, then config.json's,
   * then tokenizer_config.json's eos_token, without repeats. Llama 3.1 Instruct lists three.
   */
  readonly eosIds: readonly number[];
  /** Ids the model can emit: the largest token id + 1. */
  readonly vocabSize: number;
  /**
   * The most UTF-8 bytes of text one token can stand for (the longest vocabulary or added
   * token), so a text of B bytes encodes to at least B / longestTokenBytes tokens: a cheap
   * bound to refuse a huge prompt without encoding it. Null where no such bound holds (a
   * normalizer that may shrink the text, unknown tokens fused over any length, or a model other
   * than BPE).
   */
  readonly longestTokenBytes: number | null;

  #hf: HfTokenizer;
  #eos: Set<number>;
  #eosTokenId: number | null;
  #config: JsonObject;
  #addBos: boolean | undefined;
  #addEos: boolean | undefined;
  #template: Template | null = null;
  #templateProblem: string;
  #templateFile = "";
  #templateText: string | null = null;

  private constructor(readonly source: string, files: TokenizerFiles) {
    const config = files.config ?? {};
    this.#config = config;
    try {
      this.#hf = new HfTokenizer(files.tokenizer, config);
    } catch (e) {
      throw new TokenizerError(
        `${join(source, "tokenizer.json")} could not be loaded by @huggingface/tokenizers: ` +
          `${errorText(e)}. Check that it is a complete Hugging Face tokenizer.json ` +
          `(re-download it, or re-save it with transformers' save_pretrained).`,
      );
    }
    this.vocabSize = this.#hf.model?.vocab.length ?? 0;
    this.longestTokenBytes = longestTokenBytes(files.tokenizer);
    this.bosToken = tokenText(config.bos_token, source);
    this.eosToken = tokenText(config.eos_token, source);
    this.bosId = this.bosToken === null ? null : this.#idOf(this.bosToken, "bos_token");
    this.#addBos = optionalBool(config.add_bos_token, "add_bos_token", source);
    this.#addEos = optionalBool(config.add_eos_token, "add_eos_token", source);

    const eos: number[] = [];
    const add = (ids: number[]) => ids.forEach((id) => eos.includes(id) || eos.push(id));
    add(idList(files.generationConfig?.eos_token_id, join(source, "generation_config.json")));
    add(idList(files.modelConfig?.eos_token_id, join(source, "config.json")));
    this.#eosTokenId = this.eosToken === null ? null : this.#idOf(this.eosToken, "eos_token");
    if (this.#eosTokenId !== null) add([this.#eosTokenId]);
    this.eosIds = eos;
    this.#eos = new Set(eos);

    this.#templateProblem = `${source} has no chat template: tokenizer_config.json has no ` +
      `"chat_template" and there is no chat_template.jinja. This is usually a base (pretrained) ` +
      `model rather than an instruct model: send a plain prompt to the completions endpoint, ` +
      `use the model's Instruct variant, or add a "chat_template" to tokenizer_config.json.`;
    this.#compileTemplate(files);
  }

  /**
   * Reads tokenizer.json (required), tokenizer_config.json, generation_config.json,
   * config.json and chat_template.jinja (all optional) from a checkpoint directory.
   *
   * @param dir the checkpoint directory, as a path or file: URL
   * @throws TokenizerError naming the file that is missing, truncated or malformed
   */
  static async load(dir: string | URL): Promise<Tokenizer> {
    const path = typeof dir === "string" ? dir : fileURLToPath(dir);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      throw new TokenizerError(`cannot open model directory ${path}: ${errorText(e)}`);
    }
    if (!info.isDirectory) {
      throw new TokenizerError(
        `${path} is not a directory: pass the checkpoint directory that holds tokenizer.json`,
      );
    }
    const tokenizer = await readJson(path, "tokenizer.json");
    if (tokenizer === null) {
      throw new TokenizerError(
        `no tokenizer.json in ${path}: Denali reads the Hugging Face fast-tokenizer file. ` +
          `Download it with the checkpoint (huggingface-cli download <repo> tokenizer.json ` +
          `--local-dir ${path}); for a model that ships only tokenizer.model, create it with ` +
          `transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir).`,
      );
    }
    return new Tokenizer(path, {
      tokenizer,
      config: await readJson(path, "tokenizer_config.json") ?? undefined,
      generationConfig: await readJson(path, "generation_config.json") ?? undefined,
      modelConfig: await readJson(path, "config.json") ?? undefined,
      chatTemplateJinja: await readText(path, "chat_template.jinja") ?? undefined,
    });
  }

  /**
   * Builds a tokenizer from files already parsed (weights.ts reads config.json anyway).
   *
   * @param source where the files came from, for error messages
   * @param files the parsed files
   */
  static fromFiles(source: string, files: TokenizerFiles): Tokenizer {
    return new Tokenizer(source, files);
  }

  /** The chat template's source text, or null without one (tool-call formats read it). */
  get chatTemplate(): string | null {
    return this.#templateText;
  }

  /** True when a chat template was found and parsed, so {@link applyChatTemplate} can work. */
  get hasChatTemplate(): boolean {
    return this.#template !== null;
  }

  /** Whether `id` ends generation. Allocation-free, for the scheduler's per-token check. */
  isEos(id: number): boolean {
    return this.#eos.has(id);
  }

  /** The id of a token's text (special tokens included), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /** The text of a token id as stored in the vocabulary (byte-level form), or undefined. */
  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** The ids of special added tokens (<|eot_id|>, ...): control tokens, never output text. */
  specialIds(): number[] {
    const ids: number[] = [];
    for (const [id, token] of this.#hf.get_added_tokens_decoder()) if (token.special) ids.push(id);
    return ids;
  }

  /**
   * Token ids for `text`. Special-token text in `text` (e.g. "<|eot_id|>") becomes the special
   * token, as in HF. With `addSpecialTokens`, tokenizer_config.json's add_bos_token and
   * add_eos_token decide when set (as LlamaTokenizerFast does); otherwise tokenizer.json's
   * post-processor does (Llama 3's prepends <|begin_of_text|>).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const special = options.addSpecialTokens ?? true;
    const override = this.#addBos !== undefined || this.#addEos !== undefined;
    const ids = this.#hf.encode(text, { add_special_tokens: special && !override }).ids;
    if (special && override) {
      if (this.#addBos && this.bosId !== null) ids.unshift(this.bosId);
      if (this.#addEos && this.#eosTokenId !== null) ids.push(this.#eosTokenId);
    }
    return ids;
  }

  /** The text of `ids`; ids outside the vocabulary decode to nothing, as in HF. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return "";
    return this.#hf.decode(ids as number[], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  /**
   * Renders a conversation with the model's chat template and the variables HF passes:
   * `messages`, `add_generation_prompt`, `tools`, `documents`, the special tokens
   * (`bos_token`, `eos_token`, `pad_token`, `unk_token`) and `raise_exception` (a global of
   * @huggingface/jinja, which throws with the template's message; the library refuses a
   * redefinition, so we rely on it and report what it throws).
   *
   * The result already holds the BOS text when the template adds it, so encode it with
   * `addSpecialTokens: false`, or use {@link encodeChat}.
   *
   * @throws ChatTemplateError when the model has no template, the template does not parse,
   * or it fails on (or rejects, through raise_exception) this conversation
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (this.#template === null) throw new ChatTemplateError(this.#templateProblem);
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new ChatTemplateError("chat messages must be a non-empty array of {role, content}");
    }
    messages.forEach((m, i) => {
      if (m === null || typeof m !== "object" || typeof m.role !== "string") {
        throw new ChatTemplateError(`chat message ${i} must be an object with a string "role"`);
      }
    });
    const context: JsonObject = {
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      tools: options.tools ?? null,
      documents: null,
      ...this.#specialTokenVariables(),
      ...options.variables,
    };
    try {
      return this.#template.render(context);
    } catch (e) {
      // OpenAI's schema allows `content: null` (an assistant turn with tool_calls), but templates
      // written for strings may filter it (`| trim`). Such a template gets "" in its place; one
      // that handles null itself never sees the substitute.
      if (messages.some((m) => m.content === null || m.content === undefined)) {
        try {
          return this.#template.render({ ...context, messages: withEmptyContent(messages) });
        } catch { /* report the first failure: it is about the conversation as sent */ }
      }
      throw new ChatTemplateError(
        `the chat template from ${this.#templateFile} failed on this conversation: ` +
          `${errorText(e)}`,
      );
    }
  }

  /** {@link applyChatTemplate}, then {@link encode} without adding special tokens twice. */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }

  #idOf(token: string, key: string): number {
    const id = this.#hf.token_to_id(token);
    if (id === undefined) {
      throw new TokenizerError(
        `${join(this.source, "tokenizer_config.json")}: ${key} "${token}" is not a token of ` +
          `tokenizer.json; the two files come from different tokenizers. Download both from ` +
          `the same checkpoint.`,
      );
    }
    return id;
  }

  #specialTokenVariables(): JsonObject {
    const out: JsonObject = {};
    for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"]) {
      const text = tokenText(this.#config[key], this.source);
      if (text !== null) out[key] = text;
    }
    return out;
  }

  #compileTemplate(files: TokenizerFiles): void {
    let text: string | null = null;
    if (files.chatTemplateJinja !== undefined) {
      this.#templateFile = join(this.source, "chat_template.jinja");
      text = files.chatTemplateJinja;
    } else {
      this.#templateFile = join(this.source, "tokenizer_config.json");
      const raw = this.#config.chat_template;
      if (typeof raw === "string") {
        text = raw;
      } else if (Array.isArray(raw)) {
        // Several named templates are stored as [{name, template}]; HF uses "default".
        const named = raw.find((t) => t?.name === "default");
        if (named && typeof named.template === "string") {
          text = named.template;
        } else {
          this.#templateProblem = `${this.#templateFile} has several chat templates ` +
            `(${raw.map((t) => t?.name).join(", ")}) and none named "default": rename the one ` +
            `to use to "default".`;
        }
      } else if (raw !== undefined && raw !== null) {
        this.#templateProblem = `${this.#templateFile}: "chat_template" must be a string, ` +
          `got ${typeof raw}`;
      }
    }
    if (text === null) return;
    this.#templateText = text;
    try {
      this.#template = new Template(text);
    } catch (e) {
      // Kept, not thrown: the completions endpoint still works without a chat template.
      this.#templateProblem = `the chat template in ${this.#templateFile} does not parse with ` +
        `@huggingface/jinja: ${errorText(e)}. Fix the template or replace it with a simpler ` +
        `equivalent.`;
    }
  }
}

/**
 * The longest token of a BPE tokenizer.json in UTF-8 bytes, or null when a token may stand for
 * more text than its own entry: every BPE token covers exactly the text its entry spells (in
 * byte-level BPE each byte is one 1- or 2-byte character of the entry; SentencePiece-style "▁" is
 * 3 bytes for a 1-byte space; a byte-fallback "<0xNN>" is 6 for 1), as long as the normalizer
 * only grows the text and unknown characters are not fused into one token.
 */
function longestTokenBytes(json: JsonObject): number | null {
  const model = json.model as JsonObject | undefined;
  if (model?.type !== "BPE" || typeof model.vocab !== "object" || model.vocab === null) return null;
  if (model.fuse_unk === true && model.byte_fallback !== true && model.unk_token != null) {
    return null;
  }
  if (!growsOnly(json.normalizer)) return null;
  let longest = 0;
  const consider = (token: unknown) => {
    if (typeof token === "string") longest = Math.max(longest, utf8Length(token));
  };
  for (const token of Object.keys(model.vocab)) consider(token);
  for (const added of (json.added_tokens ?? []) as JsonObject[]) consider(added?.content);
  return longest > 0 ? longest : null;
}

/** Whether a tokenizer.json normalizer never makes a text shorter in UTF-8. */
function growsOnly(normalizer: unknown): boolean {
  if (normalizer === null || normalizer === undefined) return true;
  const n = normalizer as JsonObject;
  if (n.type === "Sequence") return Array.isArray(n.normalizers) && n.normalizers.every(growsOnly);
  if (n.type === "Prepend") return true;
  if (n.type === "Replace") {
    const pattern = (n.pattern as JsonObject | undefined)?.String;
    return typeof pattern === "string" && typeof n.content === "string" &&
      utf8Length(n.content) >= utf8Length(pattern);
  }
  return false;
}

/** UTF-8 length of `text` without encoding it. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object. */
function tokenText(value: unknown, source: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  if (typeof value === "object" && typeof (value as JsonObject).content === "string") {
    return (value as JsonObject).content as string;
  }
  throw new TokenizerError(
    `${join(source, "tokenizer_config.json")}: a special token must be a string or ` +
      `{"content": "..."}, got ${JSON.stringify(value)}`,
  );
}

function optionalBool(value: unknown, key: string, source: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "boolean") return value;
  throw new TokenizerError(
    `${join(source, "tokenizer_config.json")}: "${key}" must be true or false, got ` +
      `${JSON.stringify(value)}`,
  );
}

/** eos_token_id as HF configs write it: absent, one id, or a list of ids. */
function idList(value: unknown, file: string): number[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  if (!list.every((id) => Number.isInteger(id) && id >= 0)) {
    throw new TokenizerError(
      `${file}: "eos_token_id" must be a token id or a list of ids, got ${JSON.stringify(value)}`,
    );
  }
  return list;
}

async function readText(dir: string, name: string): Promise<string | null> {
  const path = join(dir, name);
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new TokenizerError(`cannot read ${path}: ${errorText(e)}`);
  }
}

async function readJson(dir: string, name: string): Promise<JsonObject | null> {
  const text = await readText(dir, name);
  if (text === null) return null;
  const path = join(dir, name);
  // A clone without git-lfs leaves a pointer where the big tokenizer.json should be.
  if (text.startsWith("version https://git-lfs")) {
    throw new TokenizerError(
      `${path} is a Git LFS pointer, not the file: run "git lfs pull" in ${dir}, or download ` +
        `the file directly.`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(
      `${path} is not valid JSON (${errorText(e)}); the file may be truncated: download it ` +
        `again.`,
    );
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TokenizerError(`${path} must hold a JSON object`);
  }
  return value as JsonObject;
}
