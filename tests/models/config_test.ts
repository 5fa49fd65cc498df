/**
 * config.json parsing against real Llama configs (2, 3, 3.1, 3.2, as published on the Hub),
 * the defaults HF applies, every refusal with its file, key and remedy, and the presets.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  CONFIG_PRESETS,
  ConfigError,
  configPreset,
  llama3_8b,
  loadModelConfig,
  type ModelConfig,
  parameterCount,
  parseModelConfig,
} from "../../models/config.ts";

/** meta-llama/Llama-3.1-8B-Instruct config.json, verbatim. */
const LLAMA31_8B_INSTRUCT = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.42.3",
  use_cache: true,
  vocab_size: 128256,
};

/** meta-llama/Llama-2-7b-hf config.json, verbatim: no head_dim, no rope_theta. */
const LLAMA2_7B = {
  _name_or_path: "meta-llama/Llama-2-7b-hf",
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  transformers_version: "4.31.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

/** meta-llama/Llama-3.2-1B config.json: tied embeddings, explicit head_dim, factor 32. */
const LLAMA32_1B = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_cache: true,
  vocab_size: 128256,
};

/** The config with `changes` applied; a value of undefined deletes the key. */
function edit(base: Record<string, unknown>, changes: Record<string, unknown>) {
  const out: Record<string, unknown> = { ...base, ...changes };
  for (const [key, value] of Object.entries(changes)) if (value === undefined) delete out[key];
  return out;
}

/** Asserts that parsing throws a ConfigError whose message contains every fragment. */
function assertRefused(json: unknown, ...fragments: string[]): void {
  assert.throws(
    () => parseModelConfig(json, "/models/x/config.json"),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
      assert.equal(error.file, "/models/x/config.json");
      assert.ok(error.message.startsWith("/models/x/config.json: "), error.message);
      for (const fragment of fragments) {
        assert.ok(error.message.includes(fragment), `'${fragment}' not in: ${error.message}`);
      }
      return true;
    },
  );
}

Deno.test("config: Llama 3.1 8B Instruct parses to the expected fields", () => {
  const config = parseModelConfig(LLAMA31_8B_INSTRUCT);
  assert.deepEqual(
    config,
    {
      architecture: "LlamaForCausalLM",
      hiddenSize: 4096,
      intermediateSize: 14336,
      numHiddenLayers: 32,
      numAttentionHeads: 32,
      numKeyValueHeads: 8,
      headDim: 128,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: {
        ropeType: "llama3",
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
      maxPositionEmbeddings: 131072,
      vocabSize: 128256,
      tieWordEmbeddings: false,
      dtype: "bfloat16",
      bosTokenId: 128000,
      eosTokenIds: [128001, 128008, 128009],
    } satisfies ModelConfig,
  );
});

Deno.test("config: Llama 2 takes HF's defaults for head_dim and rope_theta", () => {
  const config = parseModelConfig(LLAMA2_7B);
  assert.equal(config.headDim, 128);
  assert.equal(config.numKeyValueHeads, 32);
  assert.equal(config.ropeTheta, 10000);
  assert.equal(config.ropeScaling, null);
  assert.equal(config.dtype, "float16");
  assert.equal(config.bosTokenId, 1);
  assert.deepEqual(config.eosTokenIds, [2]);
  assert.deepEqual(config, CONFIG_PRESETS["llama2-7b"]);
});

Deno.test("config: Llama 3.2 1B is tied, with an explicit head_dim and one eos id", () => {
  const config = parseModelConfig(LLAMA32_1B);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.headDim, 64);
  assert.deepEqual(config.eosTokenIds, [128001]);
  assert.equal(config.ropeScaling?.factor, 32);
  // The preset lists the Instruct eos ids; everything else matches the published config.
  assert.deepEqual({ ...config, eosTokenIds: [] }, {
    ...configPreset("llama3.2-1b"),
    eosTokenIds: [],
  });
});

Deno.test("config: optional fields default as in HF ModelConfig", () => {
  const minimal = {
    architectures: ["LlamaForCausalLM"],
    hidden_size: 96,
    intermediate_size: 256,
    num_hidden_layers: 3,
    num_attention_heads: 6,
    vocab_size: 1000,
  };
  const config = parseModelConfig(minimal);
  assert.equal(config.numKeyValueHeads, 6);
  assert.equal(config.headDim, 16);
  assert.equal(config.rmsNormEps, 1e-6);
  assert.equal(config.ropeTheta, 10000);
  assert.equal(config.maxPositionEmbeddings, 2048);
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.dtype, "bfloat16");
  assert.equal(config.bosTokenId, null);
  assert.deepEqual(config.eosTokenIds, []);
  // head_dim: null (some exports write it) is the same as absent.
  assert.equal(parseModelConfig({ ...minimal, head_dim: null }).headDim, 16);
});

Deno.test("config: dtype, old rope keys and transformers 5 rope_parameters", () => {
  assert.equal(parseModelConfig(edit(LLAMA2_7B, { dtype: "float32" })).dtype, "float32");
  const oldKey = edit(LLAMA31_8B_INSTRUCT, {
    rope_scaling: { ...LLAMA31_8B_INSTRUCT.rope_scaling, rope_type: undefined, type: "llama3" },
  });
  assert.equal(parseModelConfig(oldKey).ropeScaling?.factor, 8);
  const plain = edit(LLAMA31_8B_INSTRUCT, { rope_scaling: { rope_type: "default" } });
  assert.equal(parseModelConfig(plain).ropeScaling, null);
  const v5 = edit(LLAMA31_8B_INSTRUCT, {
    rope_theta: undefined,
    rope_scaling: undefined,
    rope_parameters: { ...LLAMA31_8B_INSTRUCT.rope_scaling, rope_theta: 500000.0 },
  });
  const config = parseModelConfig(v5);
  assert.equal(config.ropeTheta, 500000);
  assert.deepEqual(config.ropeScaling, parseModelConfig(LLAMA31_8B_INSTRUCT).ropeScaling);
});

Deno.test("config: unsupported architectures are refused by name", () => {
  assertRefused(
    edit(LLAMA2_7B, { architectures: ["MixtralForCausalLM"] }),
    "unsupported architecture MixtralForCausalLM; Denali runs LlamaForCausalLM, " +
      "Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM",
  );
  assertRefused(
    edit(LLAMA2_7B, { architectures: undefined, model_type: "gemma" }),
    "unsupported architecture",
    '"gemma"',
    "LlamaForCausalLM",
  );
  // An old export without `architectures` is still a Llama by model_type.
  assert.equal(parseModelConfig(edit(LLAMA2_7B, { architectures: undefined })).hiddenSize, 4096);
});

Deno.test("config: bad or missing fields name the key", () => {
  assertRefused(edit(LLAMA2_7B, { hidden_size: undefined }), "'hidden_size' is missing");
  assertRefused(edit(LLAMA2_7B, { vocab_size: "32000" }), "'vocab_size' must be an integer");
  assertRefused(edit(LLAMA2_7B, { num_hidden_layers: 0 }), "'num_hidden_layers'", ">= 1");
  assertRefused(edit(LLAMA2_7B, { rms_norm_eps: -1 }), "'rms_norm_eps'", "> 0");
  assertRefused(
    edit(LLAMA2_7B, { num_key_value_heads: 5 }),
    "num_attention_heads (32) must be a multiple of num_key_value_heads (5)",
  );
  assertRefused(edit(LLAMA2_7B, { hidden_size: 4001 }), "set head_dim explicitly");
  assertRefused(edit(LLAMA2_7B, { head_dim: 63 }), "head_dim (63) must be even");
  assertRefused(edit(LLAMA2_7B, { eos_token_id: "</s>" }), "'eos_token_id'");
  assertRefused(edit(LLAMA2_7B, { tie_word_embeddings: "yes" }), "'tie_word_embeddings'");
  assertRefused([], "JSON object");
});

Deno.test("config: features Denali lacks are refused with a remedy", () => {
  assertRefused(
    edit(LLAMA31_8B_INSTRUCT, { rope_scaling: { type: "linear", factor: 2 } }),
    'type "linear" is not supported',
    "remove rope_scaling",
  );
  assertRefused(
    edit(LLAMA31_8B_INSTRUCT, {
      rope_scaling: { ...LLAMA31_8B_INSTRUCT.rope_scaling, high_freq_factor: 1 },
    }),
    "rope_scaling.high_freq_factor (1) must exceed rope_scaling.low_freq_factor (1)",
  );
  assertRefused(
    edit(LLAMA31_8B_INSTRUCT, {
      rope_scaling: { ...LLAMA31_8B_INSTRUCT.rope_scaling, factor: undefined },
    }),
    "'rope_scaling.factor' is missing",
  );
  assertRefused(edit(LLAMA2_7B, { attention_bias: true }), "attention_bias: true");
  assertRefused(edit(LLAMA2_7B, { hidden_act: "gelu" }), '"gelu" is not supported');
  assertRefused(
    edit(LLAMA2_7B, { quantization_config: { quant_method: "awq" } }),
    "quantized",
    "unquantized",
  );
  assertRefused(edit(LLAMA2_7B, { torch_dtype: "int8" }), '"int8" is not supported');
});

Deno.test("config: loadModelConfig reads a directory and names a missing or broken file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadModelConfig(dir), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.message.includes(`${dir}/config.json: not found`), error.message);
      assert.ok(error.message.includes("Hugging Face model directory"), error.message);
      return true;
    });
    await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
    await assert.rejects(loadModelConfig(`${dir}/`), /config\.json: is not valid JSON/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(LLAMA32_1B));
    assert.deepEqual(await loadModelConfig(dir), parseModelConfig(LLAMA32_1B));
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify(edit(LLAMA32_1B, { architectures: ["GPT2LMHeadModel"] })),
    );
    await assert.rejects(
      loadModelConfig(dir),
      new RegExp(`${dir}/config\\.json: unsupported architecture GPT2LMHeadModel`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: presets match their published configs and parameter counts", () => {
  assert.equal(configPreset("llama3-8b"), llama3_8b);
  const published = { ...parseModelConfig(LLAMA31_8B_INSTRUCT) };
  assert.deepEqual(configPreset("llama3.1-8b"), published);
  assert.deepEqual({ ...llama3_8b, ropeScaling: null }, {
    ...published,
    ropeScaling: null,
    maxPositionEmbeddings: 8192,
    eosTokenIds: [128001],
  });
  // Published totals: Llama 3 8B 8,030,261,248; Llama 2 7B 6,738,415,616; Llama 3.2 1B
  // 1,235,814,400 (tied); Llama 3.2 3B 3,212,749,824 (tied); Llama 3 70B 70,553,706,496.
  assert.equal(parameterCount(llama3_8b), 8_030_261_248);
  assert.equal(parameterCount(configPreset("llama2-7b")), 6_738_415_616);
  assert.equal(parameterCount(configPreset("llama3.2-1b")), 1_235_814_400);
  assert.equal(parameterCount(configPreset("llama3.2-3b")), 3_212_749_824);
  assert.equal(parameterCount(configPreset("llama3-70b")), 70_553_706_496);
  // The published counts of the other families' presets (biases and q/k norms included).
  assert.equal(parameterCount(configPreset("qwen2.5-7b")), 7_615_616_512);
  assert.equal(parameterCount(configPreset("qwen3-8b")), 8_190_735_360);
  assert.equal(parameterCount(configPreset("mistral-7b")), 7_248_023_552);
  for (const [name, config] of Object.entries(CONFIG_PRESETS)) {
    assert.equal(config.numAttentionHeads % config.numKeyValueHeads, 0, name);
  }
  assert.throws(
    () => configPreset("llama4"),
    (error: unknown) =>
      error instanceof ConfigError && error.message.includes("preset 'llama4'") &&
      error.message.includes("llama3-8b") && error.message.includes("tiny"),
  );
});
