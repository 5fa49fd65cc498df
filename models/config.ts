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

import {
  type Fp8Checkpoint,
  type Int4Checkpoint,
  parseQuantizationConfig,
} from "./quantization.ts";
import type { Llama3RopeScaling } from "./rope.ts";

export type { Llama3RopeScaling } from "./rope.ts";
export type { Fp8Checkpoint, Int4Checkpoint } from "./quantization.ts";

/** Llama's architecture name in config.json. */
export const LLAMA_ARCHITECTURE = "LlamaForCausalLM";
/** Qwen2 and Qwen2.5 (q/k/v biases). */
export const QWEN2_ARCHITECTURE = "Qwen2ForCausalLM";
/** Qwen3 (per-head RMSNorm on q and k). */
export const QWEN3_ARCHITECTURE = "Qwen3ForCausalLM";
/** Mistral (Llama's math; sliding window off). */
export const MISTRAL_ARCHITECTURE = "MistralForCausalLM";

/** Every architecture Denali runs, as config.json names them. */
export const ARCHITECTURES = [
  LLAMA_ARCHITECTURE,
  QWEN2_ARCHITECTURE,
  QWEN3_ARCHITECTURE,
  MISTRAL_ARCHITECTURE,
] as const;

/** An architecture Denali runs. */
export type Architecture = typeof ARCHITECTURES[number];

/** config.json's model_type of each, for old files without `architectures`. */
const MODEL_TYPES: Readonly<Record<string, Architecture>> = {
  llama: LLAMA_ARCHITECTURE,
  qwen2: QWEN2_ARCHITECTURE,
  qwen3: QWEN3_ARCHITECTURE,
  mistral: MISTRAL_ARCHITECTURE,
};

/** A checkpoint's declared floating-point type (`torch_dtype`, or `dtype` in newer files). */
export type CheckpointDtype = "bfloat16" | "float16" | "float32";

/** A model's shape and constants, named as in HF `config.json` but in camelCase. */
export interface ModelConfig {
  /** The HF architecture, e.g. "LlamaForCausalLM"; it picks the family (models/families.ts). */
  readonly architecture: Architecture;
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
  /**
   * The checkpoint's quantized weight scheme (`quantization_config`): FP8, or 4-bit AWQ/GPTQ;
   * absent or null for bf16.
   */
  readonly quantization?: Fp8Checkpoint | Int4Checkpoint | null;
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

function architecture(fields: Fields): Architecture {
  const archs = fields.json.architectures;
  const supported = ARCHITECTURES.join(", ");
  if (archs === undefined || archs === null) {
    // Old exports omit `architectures`; model_type alone still identifies the family.
    const byType = MODEL_TYPES[String(fields.json.model_type)];
    if (byType !== undefined) return byType;
    fields.fail(
      `unsupported architecture (none declared, model_type ${
        JSON.stringify(fields.json.model_type)
      }); Denali runs ${supported}`,
    );
  }
  if (!Array.isArray(archs) || !archs.every((a) => typeof a === "string")) {
    fields.fail(`'architectures' must be a list of names, found ${JSON.stringify(archs)}`);
  }
  const found = ARCHITECTURES.find((a) => archs.includes(a));
  if (found === undefined) {
    fields.fail(
      `unsupported architecture ${archs.join(", ") || "(empty list)"}; Denali runs ${supported}`,
    );
  }
  return found;
}

/** Features of the HF classes that change the weights or the math, which Denali lacks. */
function unsupportedFeatures(fields: Fields, arch: Architecture): void {
  // Qwen2 always has q/k/v biases (its family runs them); elsewhere a bias flag is refused.
  const biasKeys = arch === QWEN2_ARCHITECTURE ? ["mlp_bias"] : ["attention_bias", "mlp_bias"];
  for (const key of biasKeys) {
    if (fields.boolean(key, false)) {
      fields.fail(
        `'${key}: true' (biased projections) is not supported for ${arch}; Denali runs its ` +
          "bias-free form (only Qwen2ForCausalLM has q/k/v biases)",
      );
    }
  }
  if (fields.has("hidden_act") && fields.json.hidden_act !== "silu") {
    fields.fail(
      `hidden_act ${
        JSON.stringify(fields.json.hidden_act)
      } is not supported; Denali runs "silu" (Llama, Qwen, Mistral)`,
    );
  }
  slidingWindow(fields, arch);
}

/**
 * Sliding-window attention, which Denali lacks: refused wherever the config turns it on, with
 * the key that does. Qwen configs carry `sliding_window` even when `use_sliding_window` is false,
 * so for them the switch decides; for Mistral a window is on unless null, and a window at least
 * max_position_embeddings long is full attention and runs.
 */
function slidingWindow(fields: Fields, arch: Architecture): void {
  const remedy = "Denali runs full (causal) attention only, sliding-window attention is " +
    "not implemented";
  const types = fields.json.layer_types;
  if (Array.isArray(types) && types.some((t) => t === "sliding_attention")) {
    fields.fail(
      `layer_types lists sliding_attention layers (sliding-window attention); ${remedy}`,
    );
  }
  if (arch === QWEN2_ARCHITECTURE || arch === QWEN3_ARCHITECTURE) {
    if (fields.boolean("use_sliding_window", false)) {
      fields.fail(
        `'use_sliding_window: true' (sliding-window attention) is not supported; ${remedy}: ` +
          "use a config with use_sliding_window false, as the released Qwen models ship",
      );
    }
    return;
  }
  if (fields.has("sliding_window")) {
    const window = fields.integer("sliding_window");
    const context = fields.integer("max_position_embeddings", 2048);
    if (window < context) {
      fields.fail(
        `'sliding_window: ${window}' (sliding-window attention, shorter than ` +
          `max_position_embeddings ${context}) is not supported; ${remedy}: use a checkpoint ` +
          `whose config sets sliding_window to null (Mistral 7B v0.2 and later)`,
      );
    }
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
  unsupportedFeatures(fields, arch);

  const hiddenSize = fields.integer("hidden_size");
  const numAttentionHeads = fields.integer("num_attention_heads");
  const numKeyValueHeads = fields.integer("num_key_value_heads", numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fields.fail(
      `num_attention_heads (${numAttentionHeads}) must be a multiple of ` +
        `num_key_value_heads (${numKeyValueHeads})`,
    );
  }
  // HF's Qwen3Config defaults head_dim to 128, whatever hidden_size / heads is.
  const defaultHeadDim = arch === QWEN3_ARCHITECTURE ? 128 : hiddenSize / numAttentionHeads;
  if (!fields.has("head_dim") && !Number.isInteger(defaultHeadDim)) {
    fields.fail(
      `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads ` +
        `(${numAttentionHeads}); set head_dim explicitly`,
    );
  }
  const headDim = fields.integer("head_dim", defaultHeadDim);
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

  const quantization = parseQuantizationConfig(
    fields.json.quantization_config,
    (message) => fields.fail(message),
  );
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
    // Only a quantized checkpoint carries the key, so bf16 configs compare as before.
    ...(quantization === null ? {} : { quantization }),
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

/**
 * Weights of a model with this config, counted in elements (tied tables once), with each
 * family's extra vectors: Qwen2's q/k/v biases, Qwen3's q/k norms.
 */
export function parameterCount(config: ModelConfig): number {
  const { hiddenSize: h, intermediateSize: i, numAttentionHeads: q, numKeyValueHeads: kv } = config;
  const d = config.headDim;
  const extra = config.architecture === QWEN2_ARCHITECTURE
    ? (q + 2 * kv) * d
    : config.architecture === QWEN3_ARCHITECTURE
    ? 2 * d
    : 0;
  const perLayer = (q + 2 * kv) * d * h + h * q * d + 3 * h * i + 2 * h + extra;
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
  "qwen2.5-7b": {
    architecture: QWEN2_ARCHITECTURE,
    hiddenSize: 3584,
    intermediateSize: 18944,
    numHiddenLayers: 28,
    numAttentionHeads: 28,
    numKeyValueHeads: 4,
    headDim: 128,
    rmsNormEps: 1e-6,
    ropeTheta: 1000000,
    ropeScaling: null,
    maxPositionEmbeddings: 32768,
    vocabSize: 152064,
    tieWordEmbeddings: false,
    dtype: "bfloat16",
    bosTokenId: 151643,
    eosTokenIds: [151645, 151643],
  },
  "qwen3-8b": {
    architecture: QWEN3_ARCHITECTURE,
    hiddenSize: 4096,
    intermediateSize: 12288,
    numHiddenLayers: 36,
    numAttentionHeads: 32,
    numKeyValueHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-6,
    ropeTheta: 1000000,
    ropeScaling: null,
    maxPositionEmbeddings: 40960,
    vocabSize: 151936,
    tieWordEmbeddings: false,
    dtype: "bfloat16",
    bosTokenId: 151643,
    eosTokenIds: [151645],
  },
  "mistral-7b": {
    architecture: MISTRAL_ARCHITECTURE,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numHiddenLayers: 32,
    numAttentionHeads: 32,
    numKeyValueHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-5,
    ropeTheta: 1000000,
    ropeScaling: null,
    maxPositionEmbeddings: 32768,
    vocabSize: 32768,
    tieWordEmbeddings: false,
    dtype: "bfloat16",
    bosTokenId: 1,
    eosTokenIds: [2],
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
