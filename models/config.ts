/**
 * The model configuration: Hugging Face's Llama `config.json`, parsed and checked once into a
 * typed {@link ModelConfig}, plus named presets for benchmarks and `--random-weights` runs.
 *
 * Everything the engine needs to size buffers and run the math comes from here, so the checks
 * are strict: a config Denali would run wrongly (biases, another activation, quantisation, an
 * unsupported RoPE scaling) is refused with the file, the key and a remedy, rather than loaded.
 *
 * @example Read a model directory's config
 * ```ts ignore
 * import { loadModelConfig } from "./models/config.ts";
 * const config = await loadModelConfig("models/Llama-3.2-1B-Instruct");
 * console.log(config.numHiddenLayers, config.eosTokenIds);
 * ```
 *
 * @module
 */

import type { Llama3RopeScaling } from "./rope.ts";

export type { Llama3RopeScaling } from "./rope.ts";

/** The only architecture Denali runs. */
export const LLAMA_ARCHITECTURE = "LlamaForCausalLM";

/** A checkpoint's declared floating-point type (`torch_dtype`, or `dtype` in newer files). */
export type CheckpointDtype = "bfloat16" | "float16" | "float32";

/** A model's shape and constants, named as in HF `config.json` but in camelCase. */
export interface ModelConfig {
  /** The HF architecture, e.g. "LlamaForCausalLM"; it picks the family (models/families.ts). */
  readonly architecture: string;
  /** Width of the residual stream. */
  readonly hiddenSize: number;
  /** Width of the MLP's gate and up projections. */
  readonly intermediateSize: number;
  /** Decoder layers. */
  readonly numHiddenLayers: number;
  /** Query heads. */
  readonly numAttentionHeads: number;
  /** Key/value heads (GQA); equals numAttentionHeads when the config leaves it out. */
  readonly numKeyValueHeads: number;
  /** Per-head width; hiddenSize / numAttentionHeads when the config leaves it out. */
  readonly headDim: number;
  /** RMSNorm epsilon. */
  readonly rmsNormEps: number;
  /** RoPE base. */
  readonly ropeTheta: number;
  /** Llama 3.1 frequency scaling, or null for plain RoPE. */
  readonly ropeScaling: Llama3RopeScaling | null;
  /** The longest context the model supports. */
  readonly maxPositionEmbeddings: number;
  /** Rows of the embedding table and of the output layer. */
  readonly vocabSize: number;
  /** Whether the output layer reuses the embedding table (no `lm_head.weight` in the file). */
  readonly tieWordEmbeddings: boolean;
  /** The dtype the checkpoint declares; Denali computes in bf16 whatever it is. */
  readonly dtype: CheckpointDtype;
  /** The beginning-of-sequence token, or null when the config names none. */
  readonly bosTokenId: number | null;
  /** Every end-of-sequence token (Llama 3.1 Instruct lists several). */
  readonly eosTokenIds: readonly number[];
}

/** A config.json Denali cannot run, or cannot read. `file` is the path it came from. */
export class ConfigError extends Error {
  /** The config file (or preset) the problem is in. */
  readonly file: string;

  /**
   * An error about `file`, its message prefixed with the path.
   *
   * @param file the config file (or preset) the problem is in
   * @param message what is wrong and, where there is one, the remedy
   */
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "ConfigError";
    this.file = file;
  }
}

type Json = Record<string, unknown>;

/** Reads and validates the fields of one JSON object, naming `file` in every error. */
class Fields {
  /** `prefix` qualifies keys of a nested object in messages, e.g. "rope_scaling.". */
  constructor(readonly file: string, readonly json: Json, readonly prefix = "") {}

  fail(message: string): never {
    throw new ConfigError(this.file, message);
  }

  /** A value that is absent or JSON null counts as missing; HF writes both. */
  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  integer(key: string, fallback?: number, min = 1): number {
    if (!this.has(key)) {
      if (fallback !== undefined) return fallback;
      this.fail(`'${this.prefix}${key}' is missing; a Llama config.json must set it`);
    }
    const value = this.json[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      this.fail(
        `'${this.prefix}${key}' must be an integer >= ${min}, found ${JSON.stringify(value)}`,
      );
    }
    return value;
  }

  positive(key: string, fallback?: number): number {
    if (!this.has(key)) {
      if (fallback !== undefined) return fallback;
      this.fail(`'${this.prefix}${key}' is missing; a Llama config.json must set it`);
    }
    const value = this.json[key];
    if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
      this.fail(
        `'${this.prefix}${key}' must be a finite number > 0, found ${JSON.stringify(value)}`,
      );
    }
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const value = this.json[key];
    if (typeof value !== "boolean") {
      this.fail(`'${this.prefix}${key}' must be true or false, found ${JSON.stringify(value)}`);
    }
    return value;
  }
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function tokenIds(fields: Fields, key: string): number[] {
  if (!fields.has(key)) return [];
  const value = fields.json[key];
  const ids = Array.isArray(value) ? value : [value];
  for (const id of ids) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      fields.fail(
        `'${key}' must be a token id or a list of them, found ${JSON.stringify(value)}`,
      );
    }
  }
  return ids as number[];
}

function architecture(fields: Fields): string {
  const archs = fields.json.architectures;
  if (archs === undefined || archs === null) {
    // Old exports omit `architectures`; model_type alone still identifies a Llama.
    if (fields.json.model_type === "llama") return LLAMA_ARCHITECTURE;
    fields.fail(
      `unsupported architecture (none declared, model_type ${
        JSON.stringify(fields.json.model_type)
      }); Denali runs ${LLAMA_ARCHITECTURE}`,
    );
  }
  if (!Array.isArray(archs) || !archs.every((a) => typeof a === "string")) {
    fields.fail(`'architectures' must be a list of names, found ${JSON.stringify(archs)}`);
  }
  if (!archs.includes(LLAMA_ARCHITECTURE)) {
    fields.fail(
      `unsupported architecture ${archs.join(", ") || "(empty list)"}; ` +
        `Denali runs ${LLAMA_ARCHITECTURE}`,
    );
  }
  return LLAMA_ARCHITECTURE;
}

/** Features of the HF Llama class that change the weights or the math, which Denali lacks. */
function unsupportedFeatures(fields: Fields): void {
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (fields.boolean(key, false)) {
      fields.fail(
        `'${key}: true' (biased projections) is not supported; Denali runs bias-free Llama`,
      );
    }
  }
  if (fields.has("hidden_act") && fields.json.hidden_act !== "silu") {
    fields.fail(
      `hidden_act ${JSON.stringify(fields.json.hidden_act)} is not supported; Llama uses "silu"`,
    );
  }
  if (fields.has("quantization_config")) {
    fields.fail(
      "quantized checkpoints (quantization_config) are not supported; " +
        "use the model's unquantized bf16/f16 release",
    );
  }
}

function checkpointDtype(fields: Fields): CheckpointDtype {
  // transformers 4.56+ writes `dtype`; older files `torch_dtype`.
  const key = fields.has("dtype") ? "dtype" : "torch_dtype";
  if (!fields.has(key)) return "bfloat16";
  const value = fields.json[key];
  if (value !== "bfloat16" && value !== "float16" && value !== "float32") {
    fields.fail(
      `'${key}' ${JSON.stringify(value)} is not supported; ` +
        `Denali loads bfloat16, float16 or float32 checkpoints`,
    );
  }
  return value;
}

/**
 * RoPE scaling from `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x). The type key
 * is `rope_type`, or `type` in older files; "default" and null mean plain RoPE.
 */
function ropeScaling(fields: Fields): Llama3RopeScaling | null {
  const key = fields.has("rope_scaling") ? "rope_scaling" : "rope_parameters";
  if (!fields.has(key)) return null;
  const raw = fields.json[key];
  if (!isObject(raw)) fields.fail(`'${key}' must be an object or null`);
  const type = raw.rope_type ?? raw.type ?? "default";
  if (type === "default") return null;
  if (type !== "llama3") {
    fields.fail(
      `${key} type ${JSON.stringify(type)} is not supported; Denali supports "llama3" ` +
        `scaling or none (remove ${key} to run with plain RoPE at the original context length)`,
    );
  }
  const scaling = new Fields(fields.file, raw, `${key}.`);
  const lowFreqFactor = scaling.positive("low_freq_factor");
  const highFreqFactor = scaling.positive("high_freq_factor");
  if (!(highFreqFactor > lowFreqFactor)) {
    scaling.fail(
      `${key}.high_freq_factor (${highFreqFactor}) must exceed ` +
        `${key}.low_freq_factor (${lowFreqFactor})`,
    );
  }
  return {
    ropeType: "llama3",
    factor: scaling.positive("factor"),
    lowFreqFactor,
    highFreqFactor,
    originalMaxPositionEmbeddings: scaling.integer("original_max_position_embeddings"),
  };
}

/**
 * Validates a parsed config.json and returns it typed. `file` names the source in errors.
 * Sizes must be present; the optional fields take HF LlamaConfig's defaults.
 */
export function parseModelConfig(json: unknown, file = "config.json"): ModelConfig {
  if (!isObject(json)) {
    throw new ConfigError(file, "config.json must hold a JSON object");
  }
  const fields = new Fields(file, json);
  const arch = architecture(fields);
  unsupportedFeatures(fields);

  const hiddenSize = fields.integer("hidden_size");
  const numAttentionHeads = fields.integer("num_attention_heads");
  const numKeyValueHeads = fields.integer("num_key_value_heads", numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fields.fail(
      `num_attention_heads (${numAttentionHeads}) must be a multiple of ` +
        `num_key_value_heads (${numKeyValueHeads})`,
    );
  }
  if (!fields.has("head_dim") && hiddenSize % numAttentionHeads !== 0) {
    fields.fail(
      `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads ` +
        `(${numAttentionHeads}); set head_dim explicitly`,
    );
  }
  const headDim = fields.integer("head_dim", hiddenSize / numAttentionHeads);
  if (headDim % 2 !== 0) fields.fail(`head_dim (${headDim}) must be even for RoPE`);

  const scaling = ropeScaling(fields);
  // transformers 5.x moves rope_theta into rope_parameters.
  const ropeParameters = isObject(fields.json.rope_parameters)
    ? new Fields(file, fields.json.rope_parameters as Json, "rope_parameters.")
    : null;
  const ropeTheta = !fields.has("rope_theta") && ropeParameters?.has("rope_theta")
    ? ropeParameters.positive("rope_theta")
    : fields.positive("rope_theta", 10000);

  const eosTokenIds = tokenIds(fields, "eos_token_id");
  const bos = tokenIds(fields, "bos_token_id");
  if (bos.length > 1) fields.fail(`'bos_token_id' must be a single token id`);

  return {
    architecture: arch,
    hiddenSize,
    intermediateSize: fields.integer("intermediate_size"),
    numHiddenLayers: fields.integer("num_hidden_layers"),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: fields.positive("rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling: scaling,
    maxPositionEmbeddings: fields.integer("max_position_embeddings", 2048),
    vocabSize: fields.integer("vocab_size"),
    tieWordEmbeddings: fields.boolean("tie_word_embeddings", false),
    dtype: checkpointDtype(fields),
    bosTokenId: bos.length === 1 ? bos[0] : null,
    eosTokenIds,
  };
}

/**
 * Reads `<dir>/config.json` and validates it with {@link parseModelConfig}. A missing file or
 * broken JSON is a ConfigError naming the path.
 */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const file = `${dir.replace(/\/+$/, "")}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ConfigError(
        file,
        "not found; point Denali at a Hugging Face model directory " +
          "(one holding config.json and *.safetensors), or use --random-weights with a preset",
      );
    }
    throw new ConfigError(file, `cannot be read: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(
      file,
      `is not valid JSON (${(error as Error).message}); re-download it`,
    );
  }
  return parseModelConfig(json, file);
}

/** Weights of a Llama model with this config, counted in elements (tied tables once). */
export function parameterCount(config: ModelConfig): number {
  const { hiddenSize: h, intermediateSize: i, numAttentionHeads: q, numKeyValueHeads: kv } = config;
  const d = config.headDim;
  const perLayer = (q + 2 * kv) * d * h + h * q * d + 3 * h * i + 2 * h;
  const embeddings = config.vocabSize * h * (config.tieWordEmbeddings ? 1 : 2);
  return config.numHiddenLayers * perLayer + embeddings + h;
}

const LLAMA3_SCALING_31: Llama3RopeScaling = {
  ropeType: "llama3",
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};

const LLAMA3_SCALING_32: Llama3RopeScaling = { ...LLAMA3_SCALING_31, factor: 32 };

/** Meta-Llama-3-8B (the base model; Instruct ends turns with 128009 too). */
export const llama3_8b: ModelConfig = {
  architecture: LLAMA_ARCHITECTURE,
  hiddenSize: 4096,
  intermediateSize: 14336,
  numHiddenLayers: 32,
  numAttentionHeads: 32,
  numKeyValueHeads: 8,
  headDim: 128,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: null,
  maxPositionEmbeddings: 8192,
  vocabSize: 128256,
  tieWordEmbeddings: false,
  dtype: "bfloat16",
  bosTokenId: 128000,
  eosTokenIds: [128001],
};

/**
 * Named model shapes for benchmarks and `--random-weights`, transcribed from the models'
 * config.json files; "tiny" is a CPU-sized model for tests.
 */
export const CONFIG_PRESETS: Readonly<Record<string, ModelConfig>> = {
  "tiny": {
    architecture: LLAMA_ARCHITECTURE,
    hiddenSize: 64,
    intermediateSize: 128,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 16,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 512,
    vocabSize: 256,
    tieWordEmbeddings: false,
    dtype: "bfloat16",
    bosTokenId: 1,
    eosTokenIds: [2],
  },
  "llama2-7b": {
    architecture: LLAMA_ARCHITECTURE,
    hiddenSize: 4096,
    intermediateSize: 11008,
    numHiddenLayers: 32,
    numAttentionHeads: 32,
    numKeyValueHeads: 32,
    headDim: 128,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 4096,
    vocabSize: 32000,
    tieWordEmbeddings: false,
    dtype: "float16",
    bosTokenId: 1,
    eosTokenIds: [2],
  },
  "llama3-8b": llama3_8b,
  "llama3.1-8b": {
    ...llama3_8b,
    ropeScaling: LLAMA3_SCALING_31,
    maxPositionEmbeddings: 131072,
    eosTokenIds: [128001, 128008, 128009],
  },
  "llama3.2-1b": {
    ...llama3_8b,
    hiddenSize: 2048,
    intermediateSize: 8192,
    numHiddenLayers: 16,
    numAttentionHeads: 32,
    numKeyValueHeads: 8,
    headDim: 64,
    ropeScaling: LLAMA3_SCALING_32,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: true,
    eosTokenIds: [128001, 128008, 128009],
  },
  "llama3.2-3b": {
    ...llama3_8b,
    hiddenSize: 3072,
    intermediateSize: 8192,
    numHiddenLayers: 28,
    numAttentionHeads: 24,
    numKeyValueHeads: 8,
    headDim: 128,
    ropeScaling: LLAMA3_SCALING_32,
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: true,
    eosTokenIds: [128001, 128008, 128009],
  },
  "llama3-70b": {
    ...llama3_8b,
    hiddenSize: 8192,
    intermediateSize: 28672,
    numHiddenLayers: 80,
    numAttentionHeads: 64,
    numKeyValueHeads: 8,
    headDim: 128,
  },
};

/**
 * The preset called `name` (see {@link CONFIG_PRESETS}); an unknown name is a ConfigError
 * listing the known ones.
 */
export function configPreset(name: string): ModelConfig {
  if (!Object.hasOwn(CONFIG_PRESETS, name)) {
    throw new ConfigError(
      `preset '${name}'`,
      `unknown model preset; choose one of ${Object.keys(CONFIG_PRESETS).join(", ")}`,
    );
  }
  return CONFIG_PRESETS[name];
}
