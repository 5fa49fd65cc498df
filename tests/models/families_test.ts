/**
 * The model families on the CPU backend, without HF fixtures: each family's forward pass (its
 * definition in models/, run directly over a hand-built prefill step) against a float64
 * reference written here from the published math of Llama, Qwen2 (q/k/v biases), Qwen3
 * (per-head q/k RMSNorm, head_dim != hidden / heads) and Mistral; each check also shows that the
 * reference without the family's feature misses by far, so the comparison can fail. Then each
 * family through the Engine: batched equals alone, a prefix-cached prompt equals a fresh one,
 * and a tight KV cache (preemption) changes no token.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { fromBf16Bits, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { Engine } from "../../engine/engine.ts";
import { type ModelConfig, parseModelConfig } from "../../models/config.ts";
import { modelDefinition } from "../../models/families.ts";
import type { LayerCaches, StepInputs, StepShape } from "../../models/model.ts";
import { randomWeights } from "../../models/weights.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { relativeError, rng } from "../support/numeric.ts";

const BASE = {
  hiddenSize: 64,
  intermediateSize: 96,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 256,
  vocabSize: 96,
  tieWordEmbeddings: false,
  dtype: "bfloat16",
  bosTokenId: 1,
  eosTokenIds: [2],
} as const;

/** One small config per family; Qwen3's head_dim (32) is not hidden / heads (16). */
const FAMILIES: Record<string, ModelConfig> = {
  llama: { ...BASE, architecture: "LlamaForCausalLM" },
  qwen2: { ...BASE, architecture: "Qwen2ForCausalLM", tieWordEmbeddings: true },
  qwen3: { ...BASE, architecture: "Qwen3ForCausalLM", headDim: 32 },
  mistral: { ...BASE, architecture: "MistralForCausalLM", ropeTheta: 1e6 },
};

/** Relative error allowed between the bf16 forward pass and the float64 reference. */
const TOLERANCE = 3e-2;

type Weights = Map<string, Float64Array>;

/**
 * Seeded weights at scales where every part matters (as tools/make_fixtures.py draws them):
 * embeddings N(0,1)-like, projections of unit output spread, norms in [0.5, 1.5], biases ±0.8.
 * Written to the device buffers as bf16 and returned as the float64 values of those bf16s.
 */
function fillWeights(config: ModelConfig, get: (key: string) => DeviceBuffer): Weights {
  const next = rng(20260612);
  const out: Weights = new Map();
  for (const slot of modelDefinition(config).weightLayout(config)) {
    const buffer = get(slot.key);
    const bits = new Uint16Array(buffer.host!.buffer, buffer.host!.byteOffset, slot.bytes / 2);
    const values = new Float64Array(slot.bytes / 2);
    const key = slot.key;
    const fanIn = slot.parts[0].shape.length === 2 ? slot.parts[0].shape[1] : 1;
    const scale = slot.isNorm
      ? 0
      : key === "embedTokens"
      ? 1.7
      : key.endsWith("Bias")
      ? 0.8
      : key === "lmHead"
      ? 3 / Math.sqrt(fanIn)
      : 1.7 / Math.sqrt(fanIn);
    for (let i = 0; i < values.length; i++) {
      const v = slot.isNorm ? next(0.5, 1.5) : next(-scale, scale);
      bits[i] = toBf16Bits(v);
      values[i] = fromBf16Bits(bits[i]);
    }
    out.set(key, values);
  }
  return out;
}

/** What the reference computes; each flag off drops one family feature (to show it matters). */
interface Features {
  bias: boolean;
  qkNorm: boolean;
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

/** y = W x for W [rows, cols] stored from `offset` (a row block of a fused slot). */
function matVec(w: Float64Array, offset: number, rows: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < x.length; c++) s += w[offset + r * x.length + c] * x[c];
    y[r] = s;
  }
  return y;
}

/** The last position's logits of `ids`, in float64, from the published equations. */
function referenceLogits(config: ModelConfig, w: Weights, ids: number[], f: Features) {
  const h = config.hiddenSize, d = config.headDim, H = config.numAttentionHeads;
  const KV = config.numKeyValueHeads, inter = config.intermediateSize, eps = config.rmsNormEps;
  const qDim = H * d, kvDim = KV * d;
  const family = config.architecture;
  const embed = w.get("embedTokens")!;
  let xs = ids.map((id) => embed.slice(id * h, id * h + h));
  const invFreq = Array.from({ length: d / 2 }, (_, i) => config.ropeTheta ** (-2 * i / d));
  const rope = (v: Float64Array, pos: number) => {
    const out = v.slice();
    for (let i = 0; i < d / 2; i++) {
      const c = Math.cos(pos * invFreq[i]), s = Math.sin(pos * invFreq[i]);
      out[i] = v[i] * c - v[i + d / 2] * s;
      out[i + d / 2] = v[i + d / 2] * c + v[i] * s;
    }
    return out;
  };
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const qkv = w.get(`${l}.qkvProj`)!;
    const bias = w.get(`${l}.qkvBias`);
    const qs: Float64Array[][] = [], ks: Float64Array[][] = [], vs: Float64Array[][] = [];
    xs.forEach((x, t) => {
      const n = rmsNorm(x, w.get(`${l}.inputNorm`)!, eps);
      const q = matVec(qkv, 0, qDim, n), k = matVec(qkv, qDim * h, kvDim, n);
      const v = matVec(qkv, (qDim + kvDim) * h, kvDim, n);
      if (bias && f.bias) {
        q.forEach((_, i) => q[i] += bias[i]);
        k.forEach((_, i) => k[i] += bias[qDim + i]);
        v.forEach((_, i) => v[i] += bias[qDim + kvDim + i]);
      }
      const head = (a: Float64Array, j: number, norm: string) => {
        const x = a.slice(j * d, j * d + d);
        const normed = family === "Qwen3ForCausalLM" && f.qkNorm
          ? rmsNorm(x, w.get(`${l}.${norm}`)!, eps)
          : x;
        return rope(normed, t);
      };
      qs.push(Array.from({ length: H }, (_, j) => head(q, j, "qNorm")));
      ks.push(Array.from({ length: KV }, (_, j) => head(k, j, "kNorm")));
      vs.push(Array.from({ length: KV }, (_, j) => v.slice(j * d, j * d + d)));
    });
    xs = xs.map((x, t) => {
      const attn = new Float64Array(qDim);
      for (let j = 0; j < H; j++) {
        const g = Math.floor(j / (H / KV));
        const scores = Array.from({ length: t + 1 }, (_, s) => {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += qs[t][j][i] * ks[s][g][i];
          return dot / Math.sqrt(d);
        });
        const top = Math.max(...scores);
        const p = scores.map((z) => Math.exp(z - top));
        const sum = p.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) {
          for (let i = 0; i < d; i++) attn[j * d + i] += (p[s] / sum) * vs[s][g][i];
        }
      }
      const x1 = x.map((v, i) => v + matVec(w.get(`${l}.oProj`)!, 0, h, attn)[i]);
      const n = rmsNorm(x1, w.get(`${l}.postAttentionNorm`)!, eps);
      const gu = w.get(`${l}.gateUpProj`)!;
      const gate = matVec(gu, 0, inter, n), up = matVec(gu, inter * h, inter, n);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const down = matVec(w.get(`${l}.downProj`)!, 0, h, act);
      return x1.map((v, i) => v + down[i]);
    });
  }
  const last = rmsNorm(xs[xs.length - 1], w.get("norm")!, eps);
  const head = w.get(config.tieWordEmbeddings ? "embedTokens" : "lmHead")!;
  return matVec(head, 0, config.vocabSize, last);
}

/** Runs one prefill of `ids` through the family's forward pass; its last position's logits. */
function forwardLogits(config: ModelConfig, ids: number[]): { logits: Float32Array; w: Weights } {
  const backend = new CpuBackend();
  const ops = cpuOps();
  const weights = randomWeights(config, backend, ops, 1);
  const w = fillWeights(config, (key) => weights.get(key));
  const blockSize = 16, maxBlocks = 4, T = ids.length;
  const forward = modelDefinition(config).createForward(backend, ops, weights, {
    maxTokens: T,
    maxRows: 1,
    blockSize,
    maxBlocksPerSeq: maxBlocks,
  });
  const i32 = (values: number[]) => {
    const buffer = backend.alloc(Math.max(4, values.length * 4));
    backend.copyToDevice(buffer, Int32Array.from(values));
    return buffer;
  };
  const kvBytes = maxBlocks * config.numKeyValueHeads * blockSize * config.headDim * 2;
  const caches = Array.from({ length: 2 * config.numHiddenLayers }, () => backend.alloc(kvBytes));
  const kv: LayerCaches = { k: (l) => caches[2 * l], v: (l) => caches[2 * l + 1] };
  const positions = ids.map((_, t) => t);
  const inputs: StepInputs = {
    tokenIds: i32(ids),
    positions: i32(positions),
    slots: i32(positions),
    decodeBlockTables: i32([0]),
    decodeContextLens: i32([0]),
    queryStarts: i32([0, T]),
    prefillContextLens: i32([T]),
    prefillBlockTables: i32([0, 1, 2, 3]),
    logitRows: i32([T - 1]),
  };
  const shape: StepShape = {
    tokens: T,
    decodes: 0,
    decodeMaxBlocks: 0,
    decodeMaxContext: 0,
    prefills: 1,
    prefillTokens: T,
    prefillMaxBlocks: maxBlocks,
    logitRows: 1,
    gather: true,
  };
  const vocab = config.vocabSize;
  const out = { bf16: backend.alloc(vocab * 2), f32: backend.alloc(vocab * 4) };
  forward.run(shape, inputs, kv, out, backend.defaultStream);
  const logits = new Float32Array(vocab);
  backend.copyToHost(logits, out.f32);
  forward.free();
  weights.free();
  backend.close();
  return { logits, w };
}

for (const [name, config] of Object.entries(FAMILIES)) {
  Deno.test(`families: ${name}'s forward pass matches the float64 reference`, () => {
    const ids = [1, 17, 42, 5, 93, 60, 8, 33, 71, 12, 50, 3];
    const { logits, w } = forwardLogits(config, ids);
    const exact = referenceLogits(config, w, ids, { bias: true, qkNorm: true });
    const error = relativeError(logits, exact);
    console.log(`${name}: relative error to the float64 reference ${error.toExponential(2)}`);
    assert.ok(error < TOLERANCE, `${name}: relative error ${error.toExponential(2)}`);
    // The comparison can fail: without the family's own feature the reference is far off.
    const feature = name === "qwen2" ? "bias" : name === "qwen3" ? "qkNorm" : null;
    if (feature !== null) {
      const without = referenceLogits(config, w, ids, {
        bias: feature !== "bias",
        qkNorm: feature !== "qkNorm",
      });
      const miss = relativeError(logits, without);
      console.log(`${name}: without ${feature}, ${miss.toExponential(2)}`);
      assert.ok(miss > 5 * TOLERANCE, `${name} without ${feature}: only ${miss.toExponential(2)}`);
    }
  });
}

/** Drains a greedy generation of `n` tokens. */
async function greedy(engine: Engine, ids: number[], n: number): Promise<number[]> {
  const tokens: number[] = [];
  for await (const c of engine.generate(ids, { maxTokens: n, temperature: 0, ignoreEos: true })) {
    if (c.tokenId >= 0) tokens.push(c.tokenId);
  }
  return tokens;
}

for (const [name, config] of Object.entries(FAMILIES)) {
  Deno.test({
    name: `families: ${name} batched, prefix-cached and preempted give the tokens alone`,
    sanitizeResources: false,
    sanitizeOps: false,
  }, async () => {
    const prompts = [40, 7, 23].map((n, p) =>
      Array.from({ length: n }, (_, i) => 3 + (i * 7 + p * 13) % 90)
    );
    const load = (extra: object) =>
      Engine.load({ config, randomWeights: true, seed: 5 }, {
        backend: "cpu",
        log: () => {},
        graphs: false,
        ...extra,
      });
    const plain = await load({ prefixCaching: false });
    let alone: number[][];
    try {
      alone = [];
      for (const p of prompts) alone.push(await greedy(plain, p, 12));
      const together = await Promise.all(prompts.map((p) => greedy(plain, p, 12)));
      assert.deepEqual(together, alone, `${name}: batched differs from alone`);
    } finally {
      await plain.close();
    }
    const cached = await load({ prefixCaching: true });
    try {
      await greedy(cached, prompts[0], 12);
      assert.deepEqual(await greedy(cached, prompts[0], 12), alone[0], `${name}: prefix cache`);
      assert.ok(cached.stats().prefixCacheHitRate > 0, `${name}: no prefix-cache hit`);
    } finally {
      await cached.close();
    }
    // 8 blocks of 16 hold the longest sequence (52 tokens) but not all three at once.
    const tight = await load({ prefixCaching: false, kvBlocks: 8, maxRunning: 3 });
    try {
      const runs = await Promise.all(prompts.map((p) => greedy(tight, p, 12)));
      assert.deepEqual(runs, alone, `${name}: under KV pressure`);
      assert.ok(tight.stats().preemptions > 0, `${name}: nothing was preempted`);
    } finally {
      await tight.close();
    }
  });
}

/** A config.json of `architecture` with the given edits (undefined deletes a key). */
function hfConfig(architecture: string, edits: Record<string, unknown> = {}) {
  const json: Record<string, unknown> = {
    architectures: [architecture],
    hidden_size: 1024,
    intermediate_size: 3072,
    num_hidden_layers: 28,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    max_position_embeddings: 40960,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    vocab_size: 151936,
    hidden_act: "silu",
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
    ...edits,
  };
  for (const [k, v] of Object.entries(edits)) if (v === undefined) delete json[k];
  return json;
}

Deno.test("families: config.json of each family parses, with HF's defaults", () => {
  // Qwen3-0.6B: head_dim 128 is not 1024 / 16; a config without it takes HF's default 128.
  const qwen3 = parseModelConfig(hfConfig("Qwen3ForCausalLM", { head_dim: 128 }));
  assert.equal(qwen3.architecture, "Qwen3ForCausalLM");
  assert.equal(qwen3.headDim, 128);
  assert.equal(parseModelConfig(hfConfig("Qwen3ForCausalLM")).headDim, 128);
  // Qwen2.5: sliding_window is set but use_sliding_window is false, so it runs.
  const qwen2 = parseModelConfig(
    hfConfig("Qwen2ForCausalLM", { sliding_window: 32768, use_sliding_window: false }),
  );
  assert.equal(qwen2.headDim, 64);
  assert.equal(qwen2.tieWordEmbeddings, true);
  const mistral = parseModelConfig(hfConfig("MistralForCausalLM", { sliding_window: null }));
  assert.equal(mistral.architecture, "MistralForCausalLM");
  // A window as long as the context is full attention.
  parseModelConfig(hfConfig("MistralForCausalLM", { sliding_window: 40960 }));
  // Old files name the family by model_type alone.
  const byType = parseModelConfig(hfConfig("x", { architectures: undefined, model_type: "qwen2" }));
  assert.equal(byType.architecture, "Qwen2ForCausalLM");
});

Deno.test("families: unsupported features fail at load, naming the feature", () => {
  const refused = (json: unknown, ...parts: string[]) =>
    assert.throws(() => parseModelConfig(json), (e: Error) => {
      for (const part of parts) assert.ok(e.message.includes(part), `${e.message} lacks ${part}`);
      return true;
    });
  refused(
    hfConfig("MistralForCausalLM", { sliding_window: 4096, max_position_embeddings: 32768 }),
    "sliding_window: 4096",
    "sliding-window attention",
    "not supported",
    "null",
  );
  refused(
    hfConfig("Qwen2ForCausalLM", { use_sliding_window: true, sliding_window: 4096 }),
    "use_sliding_window: true",
    "not supported",
  );
  refused(
    hfConfig("Qwen3ForCausalLM", { layer_types: ["full_attention", "sliding_attention"] }),
    "sliding_attention",
  );
  refused(hfConfig("Qwen3ForCausalLM", { attention_bias: true }), "attention_bias: true");
  refused(
    hfConfig("GemmaForCausalLM"),
    "unsupported architecture GemmaForCausalLM",
    "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM",
  );
});

Deno.test("families: the weight layouts name each family's tensors", () => {
  const names = (config: ModelConfig) =>
    modelDefinition(config).weightLayout(config).flatMap((s) => s.parts.map((p) => p.name));
  const qwen2 = modelDefinition(FAMILIES.qwen2).weightLayout(FAMILIES.qwen2);
  const bias = qwen2.find((s) => s.key === "0.qkvBias")!;
  assert.deepEqual(bias.parts.map((p) => [p.name, p.shape]), [
    ["model.layers.0.self_attn.q_proj.bias", [64]],
    ["model.layers.0.self_attn.k_proj.bias", [32]],
    ["model.layers.0.self_attn.v_proj.bias", [32]],
  ]);
  assert.ok(!names(FAMILIES.qwen2).includes("lm_head.weight"), "tied: no lm_head");
  const qwen3 = modelDefinition(FAMILIES.qwen3).weightLayout(FAMILIES.qwen3);
  assert.deepEqual(qwen3.find((s) => s.key === "1.kNorm")!.parts[0].shape, [32]);
  assert.deepEqual(names(FAMILIES.mistral), names(FAMILIES.llama));
});

Deno.test("families: the attention shape is checked before the weights load", async () => {
  // A checkpoint directory without weights, whose head_dim the (stand-in) device ops refuse:
  // the head_dim error must come first, not the missing weights after minutes of loading.
  const dir = await Deno.makeTempDir();
  try {
    const tiny = new URL("../../checkpoints/tiny-llama/", import.meta.url);
    for (const file of ["tokenizer.json", "tokenizer_config.json", "config.json"]) {
      await Deno.copyFile(new URL(file, tiny), `${dir}/${file}`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, head_dim: 96 }));
    const ops = {
      ...cpuOps(),
      decodeWorkspaceBytes(_batch: number, _context: number, shape: { headDim: number }) {
        if (shape.headDim !== 64 && shape.headDim !== 128) {
          throw new RangeError(
            `the GPU attention kernels take head_dim 64 and 128, not ${shape.headDim}`,
          );
        }
        return 16;
      },
    };
    await assert.rejects(
      Engine.load(dir, { backend: "cpu", ops, log: () => {} }),
      /head_dim 64 and 128, not 96/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
