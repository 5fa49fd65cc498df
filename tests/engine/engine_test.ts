/**
 * The engine end to end on the CPU backend, with a tiny Llama (llama3 RoPE scaling, GQA) whose
 * checkpoint the test writes as a Hugging Face model directory, and the test tokenizer.
 *
 * Greedy decoding on the CPU is deterministic and every token row is computed independently of
 * the others, so batching, chunking, preemption, prefix hits and graph replay must give exactly
 * the tokens of an undisturbed single run. An independent reference — a plain f64 Llama forward
 * written here with loops, no paging, no batching, reading the tensors as written — checks that
 * those tokens are the model's.
 *
 * The weights are larger than an initialiser's (std 0.02 makes attention almost uniform, so a
 * wrong RoPE or softmax scale would hardly move the logits): q and k are scaled for attention
 * logits of a few units, and the output layer for peaked next-token distributions.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { roundBf16, toBf16Bits } from "../../backends/bf16.ts";
import { CONFIG_PRESETS, ConfigError, type ModelConfig } from "../../models/config.ts";
import {
  decodeOrderWanted,
  Engine,
  type EngineOptions,
  type GenerationChunk,
} from "../../engine/engine.ts";
import { graphBatchSizes } from "../../engine/runner.ts";
import { DECODE_ORDERS, RequestRejectedError } from "../../engine/scheduler.ts";
import type { SamplingParams } from "../../engine/sequence.ts";
import { Tokenizer } from "../../engine/tokenizer.ts";
import { GraphCpuBackend } from "../support/graph_cpu_backend.ts";
import { logSoftmax, rng } from "../support/numeric.ts";
import { safetensorsBytes } from "../support/safetensors.ts";

const TOKENIZER_DIR = new URL("../fixtures/tokenizer", import.meta.url).pathname;
const TOKENIZER = await Tokenizer.load(TOKENIZER_DIR);

/**
 * hidden 64, 2 layers, 4 heads over 2 KV heads, head dim 16, llama3 scaling with an original
 * context of 64, so at the positions tested here some frequencies are kept, some blended and
 * some divided by the factor.
 */
const CONFIG: ModelConfig = {
  ...CONFIG_PRESETS.tiny,
  vocabSize: TOKENIZER.vocabSize,
  maxPositionEmbeddings: 1024,
  ropeTheta: 10000,
  ropeScaling: {
    ropeType: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 64,
  },
  bosTokenId: 277,
  eosTokenIds: [278, 281],
};

/** A weight matrix or vector as the reference reads it: [rows, cols] f32, bf16 values. */
interface Tensor {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

interface LayerTensors {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
}

interface HostWeights {
  embed: Tensor;
  layers: LayerTensors[];
  norm: Tensor;
  lmHead: Tensor;
}

/**
 * Writes config.json, model.safetensors (BF16, HF tensor names) and the tokenizer files into
 * `dir`, and returns the tensors. Matrices are uniform with the given std; norms 1 ± 0.2.
 */
async function writeCheckpoint(dir: string, c: ModelConfig): Promise<HostWeights> {
  const next = rng(2024);
  const tensors: [string, Tensor][] = [];
  const make = (name: string, rows: number, cols: number, std: number, center = 0): Tensor => {
    const half = std * Math.sqrt(3);
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i++) data[i] = roundBf16(center + next(-half, half));
    const tensor = { rows, cols, data };
    tensors.push([name, tensor]);
    return tensor;
  };
  const { hiddenSize: h, intermediateSize: inter, headDim: d } = c;
  const qDim = c.numAttentionHeads * d, kvDim = c.numKeyValueHeads * d;
  const norm = (name: string) => make(name, 1, h, 0.2 / Math.sqrt(3), 1);
  const weights: HostWeights = {
    embed: make("model.embed_tokens.weight", c.vocabSize, h, 1),
    layers: Array.from({ length: c.numHiddenLayers }, (_, l) => {
      const p = `model.layers.${l}.`;
      return {
        inputNorm: norm(`${p}input_layernorm.weight`),
        q: make(`${p}self_attn.q_proj.weight`, qDim, h, 0.3),
        k: make(`${p}self_attn.k_proj.weight`, kvDim, h, 0.3),
        v: make(`${p}self_attn.v_proj.weight`, kvDim, h, 0.15),
        o: make(`${p}self_attn.o_proj.weight`, h, qDim, 0.15),
        postNorm: norm(`${p}post_attention_layernorm.weight`),
        gate: make(`${p}mlp.gate_proj.weight`, inter, h, 0.15),
        up: make(`${p}mlp.up_proj.weight`, inter, h, 0.15),
        down: make(`${p}mlp.down_proj.weight`, h, inter, 0.1),
      };
    }),
    norm: norm("model.norm.weight"),
    lmHead: make("lm_head.weight", c.vocabSize, h, 0.1),
  };

  const file = safetensorsBytes(
    tensors.map(([name, t]) => [name, {
      dtype: "BF16",
      shape: t.rows === 1 && name.endsWith("norm.weight") ? [t.cols] : [t.rows, t.cols],
      data: new Uint8Array(Uint16Array.from(t.data, toBf16Bits).buffer),
    }]),
    { format: "pt" },
  );
  await Deno.writeFile(join(dir, "model.safetensors"), file);

  const s = c.ropeScaling!;
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_size: h,
      intermediate_size: inter,
      num_hidden_layers: c.numHiddenLayers,
      num_attention_heads: c.numAttentionHeads,
      num_key_value_heads: c.numKeyValueHeads,
      head_dim: d,
      rms_norm_eps: c.rmsNormEps,
      rope_theta: c.ropeTheta,
      rope_scaling: {
        rope_type: "llama3",
        factor: s.factor,
        low_freq_factor: s.lowFreqFactor,
        high_freq_factor: s.highFreqFactor,
        original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      },
      max_position_embeddings: c.maxPositionEmbeddings,
      vocab_size: c.vocabSize,
      tie_word_embeddings: false,
      torch_dtype: "bfloat16",
      bos_token_id: c.bosTokenId,
      eos_token_id: c.eosTokenIds,
    }),
  );
  for (const name of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    await Deno.copyFile(join(TOKENIZER_DIR, name), join(dir, name));
  }
  return weights;
}

const MODEL_DIR = await Deno.makeTempDir({ prefix: "denali-engine-test-" });
const WEIGHTS = await writeCheckpoint(MODEL_DIR, CONFIG);
globalThis.addEventListener("unload", () => Deno.removeSync(MODEL_DIR, { recursive: true }));

const GREEDY: Partial<SamplingParams> = { temperature: 0, ignoreEos: true };
const quiet = { log: () => {} };
const SMALL: EngineOptions = {
  backend: "cpu",
  kvBlocks: 256,
  blockSize: 4,
  maxRunning: 8,
  maxBatchedTokens: 32,
  ...quiet,
};

function load(options: EngineOptions = {}): Promise<Engine> {
  return Engine.load(MODEL_DIR, { ...SMALL, ...options });
}

interface Run {
  ids: number[];
  text: string;
  finishReason: string | undefined;
  chunks: GenerationChunk[];
}

async function collect(stream: AsyncIterable<GenerationChunk>): Promise<Run> {
  const chunks: GenerationChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return {
    ids: chunks.map((c) => c.tokenId).filter((id) => id >= 0),
    text: chunks.map((c) => c.text).join(""),
    finishReason: chunks.at(-1)?.finishReason,
    chunks,
  };
}

/** `n` token ids from a seeded generator, avoiding the special tokens (277 and up). */
function promptIds(n: number, seed: number): number[] {
  const next = rng(seed * 7919 + 1);
  return Array.from({ length: n }, () => Math.floor(next(0, 270)));
}

// ---------------------------------------------------------------------------------------------
// The reference: HF LlamaForCausalLM's math in f64, one token at a time, no cache paging.

/** HF's `_compute_llama3_parameters`, written out from the transformers source. */
function referenceInvFreq(c: ModelConfig): number[] {
  const d = c.headDim;
  const base = Array.from({ length: d / 2 }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / d));
  const s = c.ropeScaling;
  if (!s) return base;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return base.map((f) => {
    const wavelen = 2 * Math.PI / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) /
      (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * f / s.factor + smooth * f;
  });
}

/** y[n] = Σ_k x[k] · W[n, k]. */
function matvec(w: Tensor, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(w.rows);
  for (let n = 0; n < w.rows; n++) {
    let sum = 0;
    const base = n * w.cols;
    for (let i = 0; i < w.cols; i++) sum += x[i] * w.data[base + i];
    y[n] = sum;
  }
  return y;
}

function rmsNorm(x: ArrayLike<number>, w: Tensor, eps: number): Float64Array {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i] * x[i];
  const inv = 1 / Math.sqrt(sum / x.length + eps);
  return Float64Array.from(x, (v, i) => v * inv * w.data[i]);
}

/** Logits after each position of `ids`, computed causally; the last row is lastLogits'. */
function referenceLogits(c: ModelConfig, w: HostWeights, ids: number[]): Float64Array[] {
  const { hiddenSize: h, numAttentionHeads: H, numKeyValueHeads: KV, headDim: D } = c;
  const invFreq = referenceInvFreq(c);
  const rope = (x: Float64Array, heads: number, pos: number) => {
    for (let hh = 0; hh < heads; hh++) {
      for (let i = 0; i < D / 2; i++) {
        const a = pos * invFreq[i], cos = Math.cos(a), sin = Math.sin(a);
        const x1 = x[hh * D + i], x2 = x[hh * D + i + D / 2];
        x[hh * D + i] = x1 * cos - x2 * sin;
        x[hh * D + i + D / 2] = x2 * cos + x1 * sin;
      }
    }
  };
  const keys: Float64Array[][] = w.layers.map(() => []);
  const values: Float64Array[][] = w.layers.map(() => []);
  const out: Float64Array[] = [];
  for (let t = 0; t < ids.length; t++) {
    const x = Float64Array.from(w.embed.data.subarray(ids[t] * h, (ids[t] + 1) * h));
    w.layers.forEach((layer, l) => {
      const n1 = rmsNorm(x, layer.inputNorm, c.rmsNormEps);
      const q = matvec(layer.q, n1);
      const k = matvec(layer.k, n1);
      const v = matvec(layer.v, n1);
      rope(q, H, t);
      rope(k, KV, t);
      keys[l].push(k);
      values[l].push(v);
      const attn = new Float64Array(H * D);
      for (let hh = 0; hh < H; hh++) {
        const g = Math.floor(hh / (H / KV));
        const scores = keys[l].map((key) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[hh * D + d] * key[g * D + d];
          return dot / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const p = scores.map((s) => Math.exp(s - max));
        const sum = p.reduce((a, b) => a + b, 0);
        for (let s = 0; s < p.length; s++) {
          for (let d = 0; d < D; d++) attn[hh * D + d] += (p[s] / sum) * values[l][s][g * D + d];
        }
      }
      const o = matvec(layer.o, attn);
      for (let i = 0; i < h; i++) x[i] += o[i];
      const n2 = rmsNorm(x, layer.postNorm, c.rmsNormEps);
      const gate = matvec(layer.gate, n2);
      const up = matvec(layer.up, n2);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const down = matvec(layer.down, act);
      for (let i = 0; i < h; i++) x[i] += down[i];
    });
    out.push(matvec(w.lmHead, rmsNorm(x, w.norm, c.rmsNormEps)));
  }
  return out;
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

// ---------------------------------------------------------------------------------------------

Deno.test("engine: lastLogits and greedy tokens match an independent float reference", async () => {
  const w = WEIGHTS;
  // maxBatchedTokens 16 splits the 40-token prompt into chunks that attend to cached K/V.
  const engine = await load({ maxBatchedTokens: 16 });
  try {
    const prompt = promptIds(40, 1);
    const reference = referenceLogits(CONFIG, w, prompt).at(-1)!;
    const logits = await engine.lastLogits(prompt);
    let diff = 0, norm = 0, scale = 0;
    for (let i = 0; i < reference.length; i++) {
      diff += (logits[i] - reference[i]) ** 2;
      norm += reference[i] ** 2;
      scale = Math.max(scale, Math.abs(reference[i]));
    }
    const relative = Math.sqrt(diff / norm);
    // The engine stores every activation in bf16 (8 significant bits: relative error up to
    // 2^-9 per rounding), about a dozen tensors per layer plus the logits, and attention
    // logits of a few units amplify that; this model measures about 1.4e-2. 5e-2 leaves room
    // for that, while a wrong RoPE scaling or softmax scale measures about 1 here.
    assert.ok(relative < 5e-2, `relative logit error ${relative}`);

    // Greedy tokens: the engine's choice must be the reference's best, or within the bf16
    // noise of it (then the reference follows the engine's token, so both stay on one path).
    const run = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 8 }));
    assert.equal(run.ids.length, 8);
    const tokens = [...prompt];
    let exact = 0;
    for (const id of run.ids) {
      const row = referenceLogits(CONFIG, w, tokens).at(-1)!;
      const best = argmax(row);
      if (id === best) exact++;
      else assert.ok(row[best] - row[id] < 0.03 * scale, `token ${id} is far below ${best}`);
      tokens.push(id);
    }
    assert.ok(exact >= 6, `only ${exact} of 8 greedy tokens are the reference's argmax`);
  } finally {
    await engine.close();
  }
});

Deno.test("engine: a mixed batch gives each prompt the tokens it gets alone", async () => {
  const prompts = [3, 17, 9, 30, 1, 22].map((n, i) => promptIds(n, 10 + i));
  const params = (i: number): Partial<SamplingParams> =>
    i === 2
      ? { temperature: 0.9, topK: 40, topP: 0.9, seed: 1234, ignoreEos: true, maxTokens: 12 }
      : { ...GREEDY, maxTokens: 6 + 2 * i };
  const alone: Run[] = [];
  for (const [i, prompt] of prompts.entries()) {
    const engine = await load({ prefixCaching: false });
    try {
      alone.push(await collect(engine.generate(prompt, params(i))));
    } finally {
      await engine.close();
    }
  }
  // maxBatchedTokens 16 < the prompts' total: chunked prefills share steps with decodes. Either
  // decode order (rows reordered longest context first every step) gives the same tokens.
  for (const decodeOrder of DECODE_ORDERS) {
    const engine = await load({
      maxBatchedTokens: 16,
      maxRunning: 4,
      prefixCaching: false,
      decodeOrder,
    });
    try {
      const together = await Promise.all(
        prompts.map((prompt, i) => collect(engine.generate(prompt, params(i)))),
      );
      for (let i = 0; i < prompts.length; i++) {
        assert.deepEqual(together[i].ids, alone[i].ids, `${decodeOrder}: prompt ${i}`);
        assert.equal(together[i].finishReason, "length");
      }
      const stats = engine.stats();
      assert.equal(stats.running + stats.waiting, 0);
      assert.equal(stats.kvUsage, 0);
    } finally {
      await engine.close();
    }
  }
});

Deno.test("engine: preempted and recomputed sequences keep their tokens", async () => {
  const prompts = [10, 12, 9].map((n, i) => promptIds(n, 40 + i));
  const wanted = { ...GREEDY, maxTokens: 20 };
  const roomy = await load();
  const undisturbed: Run[] = [];
  try {
    for (const prompt of prompts) undisturbed.push(await collect(roomy.generate(prompt, wanted)));
  } finally {
    await roomy.close();
  }
  // 12 blocks of 4 tokens hold 48 tokens; the three need about 30 each.
  const tight = await load({ kvBlocks: 12, prefixCaching: false });
  try {
    const runs = await Promise.all(prompts.map((p) => collect(tight.generate(p, wanted))));
    assert.ok(tight.stats().preemptions > 0, "the cache was meant to force preemption");
    runs.forEach((run, i) => assert.deepEqual(run.ids, undisturbed[i].ids, `prompt ${i}`));
    assert.equal(tight.stats().kvUsage, 0);
  } finally {
    await tight.close();
  }
});

Deno.test("engine: prefix-cache hits give the tokens of an uncached run", async () => {
  const prompt = promptIds(45, 77);
  const wanted = { ...GREEDY, maxTokens: 10 };
  const plain = await load({ prefixCaching: false });
  let expected: Run;
  try {
    expected = await collect(plain.generate(prompt, wanted));
  } finally {
    await plain.close();
  }
  const cached = await load({ prefixCaching: true });
  try {
    const first = await collect(cached.generate(prompt, wanted));
    const second = await collect(cached.generate(prompt, wanted));
    // A different continuation of the same prefix shares its blocks too.
    const longer = [...prompt, ...expected.ids.slice(0, 5)];
    const third = await collect(cached.generate(longer, { ...wanted, maxTokens: 5 }));
    assert.ok(cached.stats().prefixCacheHitRate > 0, "the second request should hit the cache");
    assert.deepEqual(first.ids, expected.ids);
    assert.deepEqual(second.ids, expected.ids);
    assert.deepEqual(third.ids, expected.ids.slice(5, 10));
  } finally {
    await cached.close();
  }
});

Deno.test("graph batch sizes: 1, 2, 4, multiples of 8, 16 past 256, 32 past 512, and maxRunning", () => {
  const sizes = graphBatchSizes(256);
  assert.deepEqual(sizes.slice(0, 6), [1, 2, 4, 8, 16, 24]);
  assert.equal(sizes.length, 3 + 31 + 1);
  assert.equal(sizes.at(-1), 256);
  // Every count pads by fewer than 8 rows.
  for (let count = 1; count <= 256; count++) {
    assert.ok(sizes.find((b) => b >= count)! - count < 8, `count ${count}`);
  }
  // Beyond 256: multiples of 16 up to 512, of 32 beyond, padding under 7% of the batch.
  const large = graphBatchSizes(1024);
  assert.equal(large.length, 3 + 32 + 16 + 16);
  assert.deepEqual(large.slice(34, 38), [256, 272, 288, 304]);
  assert.deepEqual(large.slice(50, 53), [512, 544, 576]);
  for (let count = 1; count <= 1024; count++) {
    const padded = large.find((b) => b >= count)!;
    assert.ok(padded - count < Math.max(8, count * 0.07), `count ${count} pads to ${padded}`);
  }
  assert.equal(large.at(-1), 1024);
  assert.deepEqual(graphBatchSizes(300), [...sizes.slice(0, 35), 272, 288, 300]);
  assert.deepEqual(graphBatchSizes(12), [1, 2, 4, 8, 12]);
  assert.deepEqual(graphBatchSizes(3), [1, 2, 3]);
  assert.deepEqual(graphBatchSizes(1), [1]);
});

Deno.test("engine: decode graphs (padded batches, context buckets) match the eager path", async () => {
  // The 250-token prompt's decodes cross 256 tokens, the first context bucket; its prefill
  // steps carry the other two's decodes (eager), then three decode together (padded to 4).
  const prompts = [5, 11, 250].map((n, i) => promptIds(n, 90 + i));
  const params = (i: number) => ({ ...GREEDY, maxTokens: [60, 40, 20][i] });
  const eager = await load({ graphs: false });
  let expected: Run[];
  try {
    expected = await Promise.all(prompts.map((p, i) => collect(eager.generate(p, params(i)))));
    assert.equal(eager.stats().graphsCaptured, 0);
  } finally {
    await eager.close();
  }
  const backend = new GraphCpuBackend();
  const lines: string[] = [];
  const graphed = await load({ backend, ops: backend.ops(), log: (line) => lines.push(line) });
  try {
    const runs = await Promise.all(prompts.map((p, i) => collect(graphed.generate(p, params(i)))));
    runs.forEach((run, i) => assert.deepEqual(run.ids, expected[i].ids, `prompt ${i}`));
    // Every graph was captured at load, before any request: batch sizes 1, 2, 4 and 8 (the
    // maxRunning) at context buckets 256, 512 and 1024 (the model's context); none later.
    assert.ok(lines.some((line) => /^graphs: 12 decode graphs captured/.test(line)), `${lines}`);
    assert.deepEqual(lines.filter((line) => line.startsWith("graph captured")), []);
    const stats = graphed.stats();
    assert.equal(stats.graphsCaptured, 12);
    assert.ok(stats.graphReplays > 20, `replayed ${stats.graphReplays}`);
  } finally {
    await graphed.close();
    backend.close();
  }
});

Deno.test("engine: a failed step fails its requests with the error and the engine goes on", async () => {
  const backend = new GraphCpuBackend();
  const engine = await load({ backend, ops: backend.ops(), graphs: false });
  try {
    backend.fail = "prefillAttention";
    await assert.rejects(
      collect(engine.generate(promptIds(6, 3), { ...GREEDY, maxTokens: 4 })),
      /injected prefillAttention failure/,
    );
    backend.fail = null;
    const run = await collect(engine.generate(promptIds(6, 3), { ...GREEDY, maxTokens: 4 }));
    assert.equal(run.ids.length, 4);
    const stats = engine.stats();
    assert.equal(stats.failedSteps, 1);
    assert.equal(stats.finished.error, 1);
    assert.equal(stats.kvUsage, 0);
  } finally {
    await engine.close();
    backend.close();
  }
});

Deno.test("engine: abort and early return cancel at once and free every block", async () => {
  const engine = await load();
  try {
    const other = collect(engine.generate(promptIds(8, 5), { ...GREEDY, maxTokens: 30 }));
    const controller = new AbortController();
    const chunks: GenerationChunk[] = [];
    for await (
      const chunk of engine.generate(
        promptIds(20, 6),
        { ...GREEDY, maxTokens: 200 },
        controller.signal,
      )
    ) {
      chunks.push(chunk);
      if (chunks.length === 3) {
        const before = engine.stats().kvBlocksUsed;
        controller.abort();
        // The 20-token prompt's blocks (and its output's) are free the moment abort returns.
        assert.ok(engine.stats().kvBlocksUsed <= before - 5, "abort frees the blocks at once");
      }
    }
    assert.equal(chunks.length, 3, "no chunk arrives after the abort");

    const iterator = engine.generate(promptIds(12, 7), { ...GREEDY, maxTokens: 200 });
    for await (const _ of iterator) break; // calls iterator.return()

    // A pending next() is answered by return() too, without waiting for another token.
    const pending = engine.generate(promptIds(12, 8), { ...GREEDY, maxTokens: 200 });
    const next = pending.next();
    await pending.return!();
    assert.equal((await next).done, true);

    assert.equal((await other).ids.length, 30, "the uncancelled request completes");
    const stats = engine.stats();
    assert.equal(stats.kvUsage, 0);
    assert.equal(stats.kvBlocksUsed, 0);
    assert.equal(stats.running + stats.waiting, 0);
    assert.equal(stats.finished.abort, 3);

    // A signal aborted before the call starts nothing.
    const aborted = await collect(engine.generate([1, 2], GREEDY, AbortSignal.abort()));
    assert.equal(aborted.chunks.length, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("engine: streamed text, stop strings and stop tokens", async () => {
  const engine = await load();
  try {
    const prompt = "Hello world, this is";
    const full = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 24 }));
    assert.equal(full.text, TOKENIZER.decode(full.ids, { skipSpecialTokens: true }));
    assert.equal(full.chunks.filter((c) => c.finishReason).length, 1);

    // Stop at a token: the first occurrence of the 6th token ends generation there.
    const stopId = full.ids[5];
    const byToken = await collect(
      engine.generate(prompt, { ...GREEDY, maxTokens: 24, stopTokenIds: [stopId] }),
    );
    assert.equal(byToken.finishReason, "stop");
    assert.deepEqual(byToken.ids, full.ids.slice(0, full.ids.indexOf(stopId) + 1));
    // As in vLLM, the stop token's own text is left out.
    assert.equal(
      byToken.text,
      TOKENIZER.decode(byToken.ids.slice(0, -1), { skipSpecialTokens: true }),
    );
    assert.equal(byToken.chunks.at(-1)!.stopReason, stopId);

    // Stop at a string taken from the middle of the text: the output ends just before it.
    const chars = [...full.text];
    const stop = chars.slice(8, 11).join("");
    const at = full.text.indexOf(stop);
    assert.ok(at > 0 && stop.length > 1, `usable stop string ${JSON.stringify(stop)}`);
    const byString = await collect(
      engine.generate(prompt, { ...GREEDY, maxTokens: 24, stop: [stop] }),
    );
    assert.equal(byString.finishReason, "stop");
    assert.equal(byString.text, full.text.slice(0, at));
    assert.equal(byString.chunks.at(-1)!.stopReason, stop);
    // Every token up to the one completing the string was generated, and is reported: the one
    // whose chunk of the uncut run (whole characters only) completes it.
    const ends = full.chunks.findIndex((_, i) =>
      full.chunks.slice(0, i + 1).map((c) => c.text).join("").includes(stop)
    );
    assert.deepEqual(byString.ids, full.ids.slice(0, ends + 1));

    // Chat messages go through the template; the template's output is what gets encoded.
    const messages = [{ role: "user", content: "Hi there" }];
    const chat = await collect(engine.generate(messages, { ...GREEDY, maxTokens: 3 }));
    const ids = TOKENIZER.encodeChat(messages, { addGenerationPrompt: true });
    const direct = await collect(engine.generate(ids, { ...GREEDY, maxTokens: 3 }));
    assert.deepEqual(chat.ids, direct.ids);
  } finally {
    await engine.close();
  }
});

/** vLLM's penalties, written from its docs: repetition over prompt and output, the others output. */
function penalise(
  row: Float32Array,
  prompt: readonly number[],
  output: readonly number[],
  p: { repetition: number; presence: number; frequency: number },
): Float64Array {
  const out = Float64Array.from(row);
  const counts = new Map<number, number>();
  for (const t of output) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const t of new Set([...prompt, ...output])) {
    out[t] = out[t] > 0 ? out[t] / p.repetition : out[t] * p.repetition;
    const n = counts.get(t) ?? 0;
    out[t] -= p.frequency * n + (n > 0 ? p.presence : 0);
  }
  return out;
}

Deno.test("engine: penalties steer greedy decoding by vLLM's formula", async () => {
  const engine = await load();
  try {
    const prompt = promptIds(12, 5);
    const penalties = { repetition: 1.5, presence: 0.8, frequency: 0.6 };
    const params = {
      ...GREEDY,
      maxTokens: 10,
      repetitionPenalty: penalties.repetition,
      presencePenalty: penalties.presence,
      frequencyPenalty: penalties.frequency,
    };
    // Run beside an unpenalised request: penalties are per sequence.
    const [run, plain] = await Promise.all([
      collect(engine.generate(prompt, params)),
      collect(engine.generate(prompt, { ...GREEDY, maxTokens: 10 })),
    ]);
    const alone = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 10 }));
    assert.deepEqual(plain.ids, alone.ids);
    // Each penalised token must be the argmax of the raw logits after the formula, with the
    // counts of the tokens before it. The engine works in f32, this reference in f64: a token
    // within 1e-4 of the best counts as a tie.
    let changed = 0;
    for (let i = 0; i < run.ids.length; i++) {
      const output = run.ids.slice(0, i);
      const raw = await engine.lastLogits([...prompt, ...output]);
      const row = penalise(raw, prompt, output, penalties);
      const best = argmax(row);
      assert.ok(
        run.ids[i] === best || row[best] - row[run.ids[i]] < 1e-4,
        `step ${i}: token ${run.ids[i]} (${row[run.ids[i]]}) but ${best} scores ${row[best]}`,
      );
      if (argmax(raw) !== best) changed++;
    }
    // The penalties must have mattered, or this test could not tell them from no penalties.
    assert.ok(changed > 0, "the penalties never changed the greedy choice");
    assert.notDeepEqual(run.ids, plain.ids);
  } finally {
    await engine.close();
  }
});

Deno.test("engine: logprobs are the raw model's, with the top alternatives in order", async () => {
  const engine = await load();
  try {
    const prompt = promptIds(9, 6);
    const cases: Partial<SamplingParams>[] = [
      { ...GREEDY, maxTokens: 5, logprobs: 5 },
      { temperature: 1, seed: 11, ignoreEos: true, maxTokens: 5, logprobs: 0 },
      // Penalties change the choice, not the reported (raw) log-probabilities.
      { ...GREEDY, maxTokens: 5, logprobs: 20, repetitionPenalty: 2, frequencyPenalty: 1 },
    ];
    for (const params of cases) {
      const run = await collect(engine.generate(prompt, params));
      // Each entry comes with its token's chunk or a later one, in order: one per token.
      const entries = run.chunks.flatMap((c) => c.logprobs ?? []);
      assert.deepEqual(entries.map((e) => e.tokenId), run.ids);
      for (let i = 0; i < run.ids.length; i++) {
        const lp = entries[i];
        const reference = logSoftmax(await engine.lastLogits([...prompt, ...run.ids.slice(0, i)]));
        // Both sides read the same bf16 logits; f32 against f64 log-softmax differ by ~1e-6.
        assert.ok(Math.abs(lp.logprob - reference[run.ids[i]]) < 1e-4, `token ${i} logprob`);
        const order = [...reference.keys()].sort((a, b) => reference[b] - reference[a] || a - b);
        assert.equal(lp.top.length, params.logprobs);
        lp.top.forEach((alt, j) => {
          assert.ok(Math.abs(alt.logprob - reference[alt.tokenId]) < 1e-4, `alternative ${j}`);
          // Ids must follow the reference order except where values tie within rounding.
          assert.ok(
            alt.tokenId === order[j] || Math.abs(reference[order[j]] - alt.logprob) < 1e-4,
            `alternative ${j} is ${alt.tokenId}, expected ${order[j]}`,
          );
        });
        if (params.temperature === 0 && params.repetitionPenalty === undefined) {
          assert.equal(lp.top[0].tokenId, run.ids[i]);
        }
      }
    }
    const plain = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 2 }));
    assert.ok(plain.chunks.every((c) => c.logprobs === undefined));
  } finally {
    await engine.close();
  }
});

Deno.test("engine: bad requests and options fail with errors naming the problem", async () => {
  const engine = await load({ maxModelLen: 64, kvBlocks: 8 });
  try {
    assert.throws(() => engine.generate(""), /prompt is empty/);
    assert.throws(() => engine.generate([]), /prompt is empty/);
    assert.throws(() => engine.generate([1, 99999]), /token 1 is 99999, outside the vocabulary/);
    assert.throws(() => engine.generate([1, -1]), /outside the vocabulary/);
    assert.throws(
      () => engine.generate(promptIds(64, 1)),
      /prompt is 64 tokens but maxModelLen is 64/,
    );
    // 8 blocks of 4 hold 32 tokens; a 40-token prompt never fits the cache.
    assert.throws(() => engine.generate(promptIds(40, 1)), RequestRejectedError);
    assert.throws(() => engine.generate([1], { temperature: -1 }), /temperature must be >= 0/);
    assert.throws(() => engine.generate([1], { topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => engine.generate([1], { maxTokens: 0 }), /maxTokens must be an integer/);
    assert.throws(
      () => engine.generate([1], { repetitionPenalty: 0 }),
      /repetitionPenalty must be a number > 0/,
    );
    assert.throws(
      () => engine.generate([1], { presencePenalty: 2.5 }),
      /presencePenalty must be in \[-2, 2\]/,
    );
    assert.throws(() => engine.generate([1], { frequencyPenalty: NaN }), /frequencyPenalty/);
    assert.throws(() => engine.generate([1], { logprobs: 21 }), /logprobs must be null or/);
    assert.throws(() => engine.generate([{ role: 1 } as never]), /string "role"/);
    assert.equal(engine.stats().kvUsage, 0);
  } finally {
    await engine.close();
  }
  assert.throws(() => engine.generate([1]), /engine is closed/);

  // Random weights without a tokenizer: token ids in, ids out, no text.
  const bare = await Engine.load({ config: CONFIG, randomWeights: true, seed: 3 }, SMALL);
  try {
    assert.throws(() => bare.generate("text"), /needs a tokenizer/);
    assert.throws(() => bare.generate([1], { stop: ["x"] }), /stop strings need a tokenizer/);
    assert.equal((await collect(bare.generate([1, 2], { ...GREEDY, maxTokens: 2 }))).text, "");
  } finally {
    await bare.close();
  }

  await assert.rejects(load({ maxRunning: 64, maxBatchedTokens: 32 }), /maxBatchedTokens/);
  await assert.rejects(load({ kvFraction: 0, kvBlocks: undefined }), /kvFraction must be in/);
  await assert.rejects(load({ blockSize: 12 }), /blockSize must be a power of two/);
  await assert.rejects(
    load({ decodeOrder: "shortest" as never }),
    /EngineOptions.decodeOrder must be arrival or longest-first, got shortest/,
  );
  await assert.rejects(load({ maxModelLen: 4096 }), /exceeds the model's context of 1024/);
  await assert.rejects(
    Engine.load("/nonexistent/model", { backend: "cpu", ...quiet }),
    ConfigError,
  );
  await assert.rejects(
    Engine.load({ config: CONFIG } as never, { backend: "cpu", ...quiet }),
    /randomWeights: true/,
  );
});

/** OpenAI's logit_bias, banned ids, allowed ids and a bitmask applied to a raw row, in f64. */
function processed(
  row: Float32Array,
  bias: readonly (readonly [number, number])[],
  banned: readonly number[],
  allowed: ReadonlySet<number>,
): Float64Array {
  const out = Float64Array.from(row);
  for (const [id, b] of bias) out[id] += b;
  for (const id of banned) out[id] = -Infinity;
  for (let t = 0; t < out.length; t++) if (!allowed.has(t)) out[t] = -Infinity;
  return out;
}

Deno.test("engine: logitBias, banned and allowed ids and a token bitmask steer greedy decoding", async () => {
  const engine = await load();
  try {
    const prompt = promptIds(10, 8);
    const plain = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 8 }));
    const allowedIds = Array.from({ length: 120 }, (_, i) => 2 * i + 1); // odd ids below 240
    const bias: [number, number][] = [[plain.ids[2] | 1, 2.5], [plain.ids[3] | 1, -1.5]];
    const banned = [plain.ids[0] | 1, plain.ids[1] | 1];
    // The bitmask allows ids below 200 only, and never the previous token: it changes per step.
    const fills: number[] = [];
    const tokenBitmask = {
      fill(mask: Int32Array, seq: { numOutputTokens: number; lastTokenId: number }) {
        fills.push(seq.numOutputTokens);
        for (let t = 0; t < 200; t++) mask[t >> 5] |= 1 << (t & 31);
        if (seq.numOutputTokens > 0) mask[seq.lastTokenId >> 5] &= ~(1 << (seq.lastTokenId & 31));
        return true;
      },
    };
    const params = {
      ...GREEDY,
      maxTokens: 8,
      logitBias: bias,
      bannedTokenIds: banned,
      allowedTokenIds: allowedIds,
      tokenBitmask,
    };
    // Beside an unconstrained request: processors are per sequence.
    const [run, beside] = await Promise.all([
      collect(engine.generate(prompt, params)),
      collect(engine.generate(prompt, { ...GREEDY, maxTokens: 8 })),
    ]);
    assert.deepEqual(beside.ids, plain.ids);
    assert.deepEqual(fills, [0, 1, 2, 3, 4, 5, 6, 7]);
    for (let i = 0; i < run.ids.length; i++) {
      const output = run.ids.slice(0, i);
      const allowed = new Set(
        allowedIds.filter((t) => t < 200 && (i === 0 || t !== output[i - 1])),
      );
      const row = processed(await engine.lastLogits([...prompt, ...output]), bias, banned, allowed);
      const best = argmax(row);
      assert.ok(
        run.ids[i] === best || row[best] - row[run.ids[i]] < 1e-4,
        `step ${i}: token ${run.ids[i]} (${row[run.ids[i]]}) but ${best} scores ${row[best]}`,
      );
      assert.ok(allowed.has(run.ids[i]) && !banned.includes(run.ids[i]), `step ${i}`);
    }
    assert.notDeepEqual(run.ids, plain.ids);
  } finally {
    await engine.close();
  }
});

Deno.test("engine: a +100 logit bias wins and -100 loses, as OpenAI documents", async () => {
  const engine = await load();
  try {
    const prompt = promptIds(7, 9);
    const plain = await collect(engine.generate(prompt, { ...GREEDY, maxTokens: 4 }));
    const favourite = (plain.ids[0] + 1) % 270;
    const forced = await collect(
      engine.generate(prompt, { ...GREEDY, maxTokens: 4, logitBias: [[favourite, 100]] }),
    );
    assert.deepEqual(forced.ids, [favourite, favourite, favourite, favourite]);
    const avoided = await collect(
      engine.generate(prompt, { ...GREEDY, maxTokens: 4, logitBias: [[plain.ids[0], -100]] }),
    );
    assert.notEqual(avoided.ids[0], plain.ids[0]);
    // Sampled rows honour the bias too.
    const sampled = await collect(
      engine.generate(prompt, { temperature: 1, seed: 3, maxTokens: 4, logitBias: [[5, 100]] }),
    );
    assert.deepEqual(sampled.ids, [5, 5, 5, 5]);
    // More edits than the sampler first makes room for (16 a row): it grows its buffers.
    const banned = Array.from({ length: 270 }, (_, t) => t).filter((t) => t !== 42 && t !== 7);
    const few = await collect(
      engine.generate(prompt, { ...GREEDY, maxTokens: 3, bannedTokenIds: banned }),
    );
    const everything = new Set(Array.from({ length: engine.config.vocabSize }, (_, t) => t));
    for (let i = 0; i < few.ids.length; i++) {
      const raw = await engine.lastLogits([...prompt, ...few.ids.slice(0, i)]);
      assert.equal(few.ids[i], argmax(processed(raw, [], banned, everything)), `step ${i}`);
    }
  } finally {
    await engine.close();
  }
});

Deno.test("engine: minTokens holds EOS and stop ids back, then lets them end the request", async () => {
  const engine = await load();
  try {
    const prompt = promptIds(6, 10);
    // EOS (278) pushed to the top: without minTokens it ends the request at once.
    const eager = await collect(
      engine.generate(prompt, { temperature: 0, maxTokens: 10, logitBias: [[278, 100]] }),
    );
    assert.deepEqual(eager.ids, [278]);
    const held = await collect(
      engine.generate(prompt, {
        temperature: 0,
        maxTokens: 10,
        minTokens: 4,
        logitBias: [[278, 100], [281, 90], [17, 80]],
        stopTokenIds: [17],
      }),
    );
    assert.equal(held.ids.length, 5);
    assert.ok(held.ids.slice(0, 4).every((t) => t !== 278 && t !== 281 && t !== 17));
    assert.equal(held.ids[4], 278);
    assert.equal(held.finishReason, "stop");
  } finally {
    await engine.close();
  }
});

Deno.test("engine: bad logits-processor parameters fail naming the field", async () => {
  const engine = await load();
  try {
    const vocab = engine.config.vocabSize;
    assert.throws(() => engine.generate([1], { logitBias: [[vocab, 1]] }), /logitBias names token/);
    assert.throws(() => engine.generate([1], { logitBias: [[3, 101]] }), /\[-100, 100\]/);
    assert.throws(() => engine.generate([1], { logitBias: [[3, 1], [3, 2]] }), /distinct/);
    assert.throws(
      () => engine.generate([1], { logitBias: { 3: 1 } as never }),
      /array of \[tokenId, bias\] pairs/,
    );
    assert.throws(() => engine.generate([1], { bannedTokenIds: [vocab] }), /bannedTokenIds names/);
    assert.throws(() => engine.generate([1], { allowedTokenIds: [] }), /allowedTokenIds/);
    assert.throws(() => engine.generate([1], { allowedTokenIds: [-1] }), /allowedTokenIds/);
    assert.throws(() => engine.generate([1], { maxTokens: 2, minTokens: 3 }), /minTokens/);
    assert.throws(() => engine.generate([1], { tokenBitmask: {} as never }), /tokenBitmask/);
    assert.equal(engine.stats().kvUsage, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("decode order: the option, else DENALI_DECODE_ORDER, else longest-first; a bad one names the variable", () => {
  const before = Deno.env.get("DENALI_DECODE_ORDER");
  try {
    Deno.env.delete("DENALI_DECODE_ORDER");
    assert.equal(decodeOrderWanted(), "longest-first");
    Deno.env.set("DENALI_DECODE_ORDER", "arrival");
    assert.equal(decodeOrderWanted(), "arrival");
    assert.equal(decodeOrderWanted("longest-first"), "longest-first");
    Deno.env.set("DENALI_DECODE_ORDER", "random");
    assert.throws(
      () => decodeOrderWanted(),
      new RangeError("DENALI_DECODE_ORDER must be arrival or longest-first, got random"),
    );
  } finally {
    if (before === undefined) Deno.env.delete("DENALI_DECODE_ORDER");
    else Deno.env.set("DENALI_DECODE_ORDER", before);
  }
});
