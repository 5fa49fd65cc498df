/**
 * loadWeights and randomWeights on the CPU backend. Checkpoints are written here byte by byte
 * (single-file and sharded; bf16, f16 and f32; tied and untied), loaded, read back from the
 * "device" and compared bit for bit with the expected bf16, which this file computes on its own
 * path: f16 decoded by formula, and bf16 rounding by picking the nearer of the two bf16
 * neighbours (ties to the even one), rather than the bit trick the loader uses.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { cpuElementwiseOps } from "../../ops/cpu/elementwise.ts";
import { loadOps } from "../../ops/load.ts";
import type { ModelOps } from "../../ops/ops.ts";
import { isAwqWeight, isFp8Weight, type LinearWeight } from "../../ops/linear_weight.ts";
import { loadModelConfig, type ModelConfig } from "../../models/config.ts";
import { SafetensorsError } from "../../models/safetensors.ts";
import { f16ToF32, loadWeights, randomWeights, WeightsError } from "../../models/weights.ts";
import { llamaWeights } from "../../models/llama.ts";
import type { ModelWeights } from "../../models/model.ts";
import { rng } from "../support/numeric.ts";
import { safetensorsBytes } from "../support/safetensors.ts";

/** Small but irregular: GQA 2:1, head_dim 6 ≠ hidden / heads, so o_proj is [8, 12]. */
const CONFIG: ModelConfig = {
  architecture: "LlamaForCausalLM",
  hiddenSize: 8,
  intermediateSize: 12,
  numHiddenLayers: 2,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 6,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  vocabSize: 10,
  tieWordEmbeddings: false,
  dtype: "bfloat16",
  bosTokenId: 1,
  eosTokenIds: [2],
};
const TIED: ModelConfig = { ...CONFIG, tieWordEmbeddings: true };

// ---------------------------------------------------------------------------------------------
// An independent bf16 path.

const view = new DataView(new ArrayBuffer(4));

function f32Bits(value: number): number {
  view.setFloat32(0, value, true);
  return view.getUint32(0, true);
}

function bitsF32(bits: number): number {
  view.setUint32(0, bits >>> 0, true);
  return view.getFloat32(0, true);
}

/** The bf16 nearest an f32 value: whichever truncation neighbour is closer, ties to even. */
function nearestBf16(value: number): number {
  const low = f32Bits(value) >>> 16;
  const high = low + 1;
  const dLow = Math.abs(value - bitsF32(low << 16));
  const dHigh = Math.abs(bitsF32(high << 16) - value);
  if (dLow !== dHigh) return dLow < dHigh ? low : high;
  return low % 2 === 0 ? low : high;
}

/** An IEEE half by its definition, in float64. */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints written by hand.

type Dtype = "BF16" | "F16" | "F32" | "I8";

interface Tensor {
  dtype: Dtype;
  shape: number[];
  data: Uint8Array;
  /** The bf16 patterns the loader must produce. */
  bf16: Uint16Array;
}

/** HF tensor names and shapes for a config, written out longhand. */
function hfShapes(config: ModelConfig, withLmHead = !config.tieWordEmbeddings) {
  const { hiddenSize: h, intermediateSize: i, headDim: d } = config;
  const q = config.numAttentionHeads * d, kv = config.numKeyValueHeads * d;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [config.vocabSize, h]]];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    out.push(
      [`model.layers.${l}.input_layernorm.weight`, [h]],
      [`model.layers.${l}.self_attn.q_proj.weight`, [q, h]],
      [`model.layers.${l}.self_attn.k_proj.weight`, [kv, h]],
      [`model.layers.${l}.self_attn.v_proj.weight`, [kv, h]],
      [`model.layers.${l}.self_attn.o_proj.weight`, [h, q]],
      [`model.layers.${l}.post_attention_layernorm.weight`, [h]],
      [`model.layers.${l}.mlp.gate_proj.weight`, [i, h]],
      [`model.layers.${l}.mlp.up_proj.weight`, [i, h]],
      [`model.layers.${l}.mlp.down_proj.weight`, [h, i]],
    );
  }
  out.push(["model.norm.weight", [h]]);
  if (withLmHead) out.push(["lm_head.weight", [config.vocabSize, h]]);
  return out;
}

/** Seeded values of `dtype`, including rounding ties (f32) and subnormals (f16). */
function makeTensor(dtype: Dtype, shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const next = rng(seed);
  const bits = () => Math.floor(next(0, 1) * 2 ** 32) >>> 0;
  const bf16 = new Uint16Array(n);
  if (dtype === "F32") {
    const values = new Float32Array(n);
    for (let k = 0; k < n; k++) {
      const exponent = 97 + Math.floor(next(0, 60)); // 2^-30 .. 2^29
      let pattern = (bits() & 0x807fffff) | (exponent << 23);
      if (k % 5 === 0) pattern = (pattern & 0xffff0000) | 0x8000; // an exact tie
      values[k] = bitsF32(pattern);
      bf16[k] = nearestBf16(values[k]);
    }
    return { dtype, shape, data: new Uint8Array(values.buffer), bf16 };
  }
  if (dtype === "I8") {
    const data = new Uint8Array(n).map(() => bits() & 0xff);
    return { dtype, shape, data, bf16 };
  }
  const halves = new Uint16Array(n);
  for (let k = 0; k < n; k++) {
    let pattern = bits() & 0xffff;
    if (dtype === "F16") {
      if ((pattern & 0x7c00) === 0x7c00) pattern &= 0xfc00; // NaN payloads → ±infinity
      if (k % 7 === 0) pattern &= 0x83ff; // a subnormal
      const value = halfValue(pattern);
      bf16[k] = Number.isFinite(value) ? nearestBf16(value) : value > 0 ? 0x7f80 : 0xff80;
    } else {
      if ((pattern & 0x7f80) === 0x7f80) pattern &= 0xff7f; // keep bf16 finite
      bf16[k] = pattern;
    }
    halves[k] = pattern;
  }
  return { dtype, shape, data: new Uint8Array(halves.buffer), bf16 };
}

/** Every tensor of a checkpoint, dtypes chosen per name. */
function makeCheckpoint(
  config: ModelConfig,
  dtypeOf: (name: string, index: number) => Dtype,
  seed = 1,
  withLmHead = !config.tieWordEmbeddings,
): Map<string, Tensor> {
  return new Map(
    hfShapes(config, withLmHead).map(([name, shape], index) => [
      name,
      makeTensor(dtypeOf(name, index), shape, seed * 1000 + index),
    ]),
  );
}

/** The metadata torch writes. */
const PT = { format: "pt" };

/** A single model.safetensors, tensors in reverse order so disk order ≠ layout order. */
async function writeSingle(dir: string, tensors: Map<string, Tensor>, name = "model.safetensors") {
  await Deno.writeFile(`${dir}/${name}`, safetensorsBytes([...tensors].reverse(), PT));
}

/** `shards` files plus model.safetensors.index.json, tensors dealt round-robin. */
async function writeSharded(dir: string, tensors: Map<string, Tensor>, shards = 3) {
  const files: [string, Tensor][][] = Array.from({ length: shards }, () => []);
  const weightMap: Record<string, string> = {};
  [...tensors].forEach(([name, t], k) => {
    files[k % shards].push([name, t]);
    weightMap[name] = shardName(k % shards, shards);
  });
  for (let s = 0; s < shards; s++) {
    await Deno.writeFile(`${dir}/${shardName(s, shards)}`, safetensorsBytes(files[s], PT));
  }
  const index = { metadata: { total_size: 0 }, weight_map: weightMap };
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
}

function shardName(s: number, shards: number): string {
  const pad = (n: number) => String(n).padStart(5, "0");
  return `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`;
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denali_weights_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the device back.

function readBf16(backend: CpuBackend, buffer: DeviceBuffer): Uint16Array {
  const out = new Uint16Array(buffer.bytes / 2);
  backend.copyToHost(out, buffer);
  return out;
}

function concat(...parts: Uint16Array[]): Uint16Array {
  const out = new Uint16Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Every device buffer equals the expected fused bf16, bit for bit. */
function assertWeights(
  backend: CpuBackend,
  loaded: ModelWeights,
  tensors: Map<string, Tensor>,
  config: ModelConfig,
): void {
  const weights = llamaWeights(loaded);
  const want = (name: string) => tensors.get(name)!.bf16;
  const check = (weight: LinearWeight, expected: Uint16Array, what: string) => {
    assert.ok(!isFp8Weight(weight) && !isAwqWeight(weight), `${what}: loads as bf16`);
    const buffer = weight;
    assert.equal(buffer.bytes, expected.length * 2, `${what}: size`);
    assert.deepEqual(readBf16(backend, buffer), expected, what);
  };
  check(weights.embedTokens, want("model.embed_tokens.weight"), "embed_tokens");
  assert.equal(weights.layers.length, config.numHiddenLayers);
  weights.layers.forEach((layer, l) => {
    const p = `model.layers.${l}.`;
    check(layer.inputNorm, want(`${p}input_layernorm.weight`), `${p}input_layernorm`);
    check(
      layer.qkvProj,
      concat(
        want(`${p}self_attn.q_proj.weight`),
        want(`${p}self_attn.k_proj.weight`),
        want(`${p}self_attn.v_proj.weight`),
      ),
      `${p}qkv`,
    );
    check(layer.oProj, want(`${p}self_attn.o_proj.weight`), `${p}o_proj`);
    check(
      layer.postAttentionNorm,
      want(`${p}post_attention_layernorm.weight`),
      `${p}post_attention_layernorm`,
    );
    check(
      layer.gateUpProj,
      concat(want(`${p}mlp.gate_proj.weight`), want(`${p}mlp.up_proj.weight`)),
      `${p}gate_up`,
    );
    check(layer.downProj, want(`${p}mlp.down_proj.weight`), `${p}down_proj`);
  });
  check(weights.norm, want("model.norm.weight"), "norm");
  if (config.tieWordEmbeddings) {
    assert.equal(weights.lmHead, weights.embedTokens, "tied lm_head is the embedding buffer");
  } else {
    check(weights.lmHead, want("lm_head.weight"), "lm_head");
  }
}

/** A CPU backend that counts live allocations and can fail the Nth alloc or copy. */
class CountingBackend extends CpuBackend {
  readonly live = new Set<number>();
  allocs = 0;
  copies = 0;
  hostLive = 0;

  constructor(readonly failAlloc = Infinity, readonly failCopy = Infinity) {
    super();
  }

  override alloc(bytes: number): DeviceBuffer {
    if (++this.allocs === this.failAlloc) throw new RangeError(`alloc(${bytes}): out of memory`);
    const buffer = super.alloc(bytes);
    this.live.add(buffer.ptr);
    return buffer;
  }

  override free(buffer: DeviceBuffer): void {
    super.free(buffer);
    this.live.delete(buffer.ptr);
  }

  override allocHost(bytes: number) {
    const host = super.allocHost(bytes);
    this.hostLive++;
    return { bytes: host.bytes, free: () => this.hostLive-- };
  }

  override copyToDevice(dst: DeviceBuffer, src: ArrayBufferView): void {
    if (++this.copies === this.failCopy) throw new Error("copyToDevice: device lost");
    super.copyToDevice(dst, src);
  }
}

const quiet = { progress: false } as const;
const byIndex = (dtypes: Dtype[]) => (_: string, k: number) => dtypes[k % dtypes.length];

// ---------------------------------------------------------------------------------------------
// Loading.

Deno.test("weights: f16ToF32 matches the IEEE definition for all 65536 patterns", () => {
  for (let bits = 0; bits < 65536; bits++) {
    const expected = halfValue(bits);
    const got = f16ToF32(bits);
    if (Number.isNaN(expected)) assert.ok(Number.isNaN(got), `0x${bits.toString(16)}`);
    else assert.ok(Object.is(got, expected), `0x${bits.toString(16)}: ${got} ≠ ${expected}`);
  }
});

Deno.test("weights: single file, mixed bf16/f16/f32, untied, loads bit-exact", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, byIndex(["BF16", "F16", "F32"]));
    // Older exports carry RoPE buffers; they are not weights and must be ignored.
    tensors.set("model.layers.0.self_attn.rotary_emb.inv_freq", makeTensor("F32", [3], 9));
    await writeSingle(dir, tensors);
    for (const stagingBytes of [16, 36, 1 << 20]) {
      const backend = new CountingBackend();
      const seen: number[] = [];
      const weights = await loadWeights(dir, CONFIG, backend, {
        ...quiet,
        stagingBytes,
        onProgress: (done, total) => seen.push(done, total),
      });
      assertWeights(backend, weights, tensors, CONFIG);
      const sourceBytes = hfShapes(CONFIG).reduce(
        (n, [name]) => n + tensors.get(name)!.data.length,
        0,
      );
      assert.equal(seen.at(-2), sourceBytes, "progress ends at the source size");
      assert.equal(seen.at(-1), sourceBytes);
      const deviceBytes = hfShapes(CONFIG).reduce(
        (n, [name]) => n + tensors.get(name)!.bf16.length * 2,
        0,
      );
      assert.equal(weights.bytes, deviceBytes);
      assert.equal(backend.hostLive, 0, "the staging buffer is released");
      weights.free();
      weights.free();
      assert.equal(backend.live.size, 0, "free() releases every buffer");
    }
  });
});

for (const dtype of ["BF16", "F16", "F32"] as const) {
  Deno.test(`weights: sharded ${dtype} checkpoint, tied embeddings`, async () => {
    await withDir(async (dir) => {
      const tensors = makeCheckpoint(TIED, () => dtype, 2);
      await writeSharded(dir, tensors);
      const backend = new CountingBackend();
      const weights = await loadWeights(dir, TIED, backend, { ...quiet, stagingBytes: 40 });
      assertWeights(backend, weights, tensors, TIED);
      weights.free();
      assert.equal(backend.live.size, 0);
    });
  });
}

Deno.test("weights: a tied model ignores an lm_head the checkpoint carries anyway", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(TIED, () => "BF16", 3, true);
    await writeSingle(dir, tensors);
    const backend = new CpuBackend();
    const weights = await loadWeights(dir, TIED, backend, quiet);
    assertWeights(backend, weights, tensors, TIED);
    weights.free();
  });
});

Deno.test("weights: a lone *.safetensors under another name, with config.json", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "F32", 4);
    await writeSingle(dir, tensors, "consolidated.safetensors");
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({
        architectures: ["LlamaForCausalLM"],
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 6,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        vocab_size: 10,
        bos_token_id: 1,
        eos_token_id: 2,
      }),
    );
    const config = await loadModelConfig(dir);
    assert.deepEqual(config, CONFIG);
    const backend = new CpuBackend();
    const weights = await loadWeights(dir, config, backend, quiet);
    assertWeights(backend, weights, tensors, CONFIG);
    weights.free();
  });
});

// ---------------------------------------------------------------------------------------------
// Errors.

/** Asserts loadWeights fails with `type`, naming `file` and `tensor` and every fragment. */
async function assertLoadFails(
  dir: string,
  config: ModelConfig,
  type: typeof WeightsError | typeof SafetensorsError,
  file: string,
  tensor: string | null,
  ...fragments: string[]
): Promise<CountingBackend> {
  const backend = new CountingBackend();
  await assert.rejects(loadWeights(dir, config, backend, quiet), (error: unknown) => {
    assert.ok(error instanceof type, `expected ${type.name}, got ${error}`);
    assert.equal(error.file, file, error.message);
    assert.equal(error.tensor, tensor, error.message);
    assert.ok(error.message.startsWith(`${file}: `), error.message);
    if (tensor) assert.ok(error.message.includes(`tensor '${tensor}'`), error.message);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `'${fragment}' not in: ${error.message}`);
    }
    return true;
  });
  assert.equal(backend.live.size, 0, "nothing stays allocated after a failed load");
  return backend;
}

Deno.test("weights: a missing tensor names the file, the tensor and the remedy", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "BF16");
    const name = "model.layers.1.self_attn.k_proj.weight";
    tensors.delete(name);
    await writeSingle(dir, tensors);
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors`,
      name,
      "missing",
      "does not match its config.json",
    );
  });
});

Deno.test("weights: an untied model without lm_head points at tie_word_embeddings", async () => {
  await withDir(async (dir) => {
    await writeSingle(dir, makeCheckpoint(TIED, () => "BF16"));
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors`,
      "lm_head.weight",
      '"tie_word_embeddings": true',
    );
  });
});

Deno.test("weights: wrong shape and unsupported dtype are refused before any copy", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "BF16");
    const name = "model.layers.0.self_attn.o_proj.weight";
    tensors.set(name, makeTensor("BF16", [8, 8], 5)); // [hidden, hidden] instead of [8, 12]
    await writeSingle(dir, tensors);
    const shape = await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors`,
      name,
      "shape [8, 8], expected [8, 12]",
      "head_dim 6",
    );
    assert.equal(shape.allocs + shape.copies, 0, "checked before allocating or copying");

    const int8 = makeCheckpoint(CONFIG, () => "BF16");
    int8.set("model.layers.1.mlp.up_proj.weight", makeTensor("I8", [12, 8], 6));
    await writeSingle(dir, int8);
    const dtype = await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors`,
      "model.layers.1.mlp.up_proj.weight",
      "dtype I8 is not supported",
      "BF16, F16 or F32",
    );
    assert.equal(dtype.allocs + dtype.copies, 0, "checked before allocating or copying");
  });
});

Deno.test("weights: a truncated file or a header past its end is reported by name", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "F32");
    await writeSingle(dir, tensors);
    const path = `${dir}/model.safetensors`;
    const whole = await Deno.readFile(path);
    // writeSingle reverses the order, so the embedding table is the last tensor on disk.
    await Deno.writeFile(path, whole.subarray(0, whole.length - 5));
    await assertLoadFails(
      dir,
      CONFIG,
      SafetensorsError,
      path,
      "model.embed_tokens.weight",
      "truncated",
      "re-download",
    );
    const lying = whole.slice();
    new DataView(lying.buffer).setBigUint64(0, BigInt(whole.length), true);
    await Deno.writeFile(path, lying);
    await assertLoadFails(dir, CONFIG, SafetensorsError, path, null, "runs past the end");
  });
});

Deno.test("weights: a shard named in the index but absent is reported with its tensor", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "BF16");
    await writeSharded(dir, tensors, 3);
    const missing = `${dir}/${shardName(1, 3)}`;
    await Deno.remove(missing);
    // Round-robin dealing puts tensor 1 (input_layernorm of layer 0) first in shard 2.
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      missing,
      "model.layers.0.input_layernorm.weight",
      "listed in model.safetensors.index.json but missing",
      "download the missing shard",
    );
  });
});

Deno.test("weights: a tensor absent from the index names the index", async () => {
  await withDir(async (dir) => {
    const tensors = makeCheckpoint(CONFIG, () => "BF16");
    tensors.delete("model.norm.weight");
    await writeSharded(dir, tensors, 2);
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors.index.json`,
      "model.norm.weight",
      "missing",
    );
  });
});

Deno.test("weights: more layers on disk than in config.json is a mismatch", async () => {
  await withDir(async (dir) => {
    const three = { ...CONFIG, numHiddenLayers: 3 };
    await writeSingle(dir, makeCheckpoint(three, () => "BF16"));
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors`,
      "model.layers.2.mlp.down_proj.weight",
      "layer 2 exists",
      "num_hidden_layers = 2",
    );
  });
});

Deno.test("weights: directories without a usable checkpoint say what is missing", async () => {
  await withDir(async (dir) => {
    await assertLoadFails(dir, CONFIG, WeightsError, dir, null, "no model.safetensors");
    await Deno.writeFile(`${dir}/pytorch_model.bin`, new Uint8Array(4));
    await assertLoadFails(dir, CONFIG, WeightsError, dir, null, "convert the .bin/.pth");
    const tensors = makeCheckpoint(CONFIG, () => "BF16");
    await writeSingle(dir, tensors, "a.safetensors");
    await writeSingle(dir, tensors, "b.safetensors");
    await assertLoadFails(dir, CONFIG, WeightsError, dir, null, "2 .safetensors files");
    await assertLoadFails(
      `${dir}/nope`,
      CONFIG,
      WeightsError,
      `${dir}/nope`,
      null,
      "does not exist",
    );
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, '{"weight_map": 3}');
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors.index.json`,
      null,
      "no weight_map",
    );
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { "model.embed_tokens.weight": "../elsewhere.safetensors" } }),
    );
    await assertLoadFails(
      dir,
      CONFIG,
      WeightsError,
      `${dir}/model.safetensors.index.json`,
      "model.embed_tokens.weight",
      "not a file in the model directory",
    );
  });
});

Deno.test("weights: a failure midway frees everything already allocated", async () => {
  await withDir(async (dir) => {
    await writeSingle(dir, makeCheckpoint(CONFIG, () => "F16"));
    const outOfMemory = new CountingBackend(7);
    await assert.rejects(loadWeights(dir, CONFIG, outOfMemory, quiet), /out of memory/);
    assert.equal(outOfMemory.allocs, 7);
    assert.equal(outOfMemory.live.size, 0);

    const deviceLost = new CountingBackend(Infinity, 5);
    await assert.rejects(
      loadWeights(dir, CONFIG, deviceLost, { ...quiet, stagingBytes: 16 }),
      /device lost/,
    );
    assert.equal(deviceLost.live.size, 0);
    assert.equal(deviceLost.hostLive, 0, "the staging buffer is released too");
  });
});

// ---------------------------------------------------------------------------------------------
// Random weights.

/** One recorded fillRandom call. */
interface Fill {
  readonly out: DeviceBuffer;
  readonly count: number;
  readonly seed: number;
  readonly scale: number;
}

/** The CPU fillRandom, recording each call; the `failAt`-th call throws instead. */
function recordingOps(failAt = Infinity) {
  const cpu = cpuElementwiseOps();
  const fills: Fill[] = [];
  const ops: Pick<ModelOps, "fillRandom"> = {
    fillRandom(out, count, seed, scale, stream) {
      if (fills.length + 1 === failAt) throw new Error("fillRandom: launch failed");
      fills.push({ out, count, seed, scale });
      cpu.fillRandom(out, count, seed, scale, stream);
    },
  };
  return { ops, fills };
}

/** Every matrix buffer of `w`, embedTokens first, lmHead last (once when tied). */
function matrices(loaded: ModelWeights): DeviceBuffer[] {
  const w = llamaWeights(loaded);
  const layers = w.layers.flatMap((l) =>
    [l.qkvProj, l.oProj, l.gateUpProj, l.downProj] as DeviceBuffer[]
  );
  return [w.embedTokens, ...layers, ...(w.lmHead === w.embedTokens ? [] : [w.lmHead])];
}

const RANDOM_CONFIG = {
  ...CONFIG,
  hiddenSize: 64,
  intermediateSize: 96,
  headDim: 32,
  vocabSize: 300,
};

Deno.test("weights: randomWeights fills every matrix on the device, seeded, std 0.02", () => {
  const backend = new CountingBackend();
  const { ops, fills } = recordingOps();
  const a = randomWeights(RANDOM_CONFIG, backend, ops, 42);
  const aFills = fills.splice(0);
  const b = randomWeights(RANDOM_CONFIG, backend, ops, 42);
  const bFills = fills.splice(0);
  const c = randomWeights(RANDOM_CONFIG, backend, ops, 43);
  const cFills = fills.splice(0);

  // One whole-buffer fill per matrix, nothing staged through the host.
  assert.deepEqual(aFills.map((f) => f.out), matrices(a));
  for (const f of aFills) {
    assert.equal(f.count * 2, f.out.bytes);
    assert.equal(f.scale, 0.02 * Math.sqrt(3), "uniform with std 0.02");
  }
  assert.equal(backend.hostLive, 0);
  assert.equal(backend.copies, 3 * (2 * RANDOM_CONFIG.numHiddenLayers + 1), "norms only");

  // Seeds: per buffer, all distinct, the same for the same model seed, new for another.
  const seeds = aFills.map((f) => f.seed);
  assert.equal(new Set(seeds).size, seeds.length, "each buffer draws its own stream");
  assert.deepEqual(bFills.map((f) => f.seed), seeds);
  assert.ok(cFills.every((f) => !seeds.includes(f.seed)), "another seed, other streams");
  for (const seed of seeds) assert.ok(Number.isSafeInteger(seed) && seed >= 0);

  const [wa, wb, wc] = [a, b, c].map((w) => matrices(w).map((m) => readBf16(backend, m)));
  assert.deepEqual(wb, wa, "same seed, same weights");
  for (let i = 0; i < wa.length; i++) assert.notDeepEqual(wc[i], wa[i], `matrix ${i} reseeded`);
  assert.notDeepEqual(
    wa[1].subarray(0, 64),
    wa[5].subarray(0, 64),
    "layer 0 and layer 1 qkv differ",
  );

  // The bytes are exactly the op's output for the recorded seed: nothing else writes them.
  const probe = backend.alloc(llamaWeights(a).embedTokens.bytes);
  cpuElementwiseOps().fillRandom(
    probe,
    aFills[0].count,
    aFills[0].seed,
    aFills[0].scale,
    backend.defaultStream,
  );
  assert.deepEqual(readBf16(backend, probe), wa[0]);
  backend.free(probe);

  // ±a, plus bf16 rounding's half ulp (2^-9) with margin. ~1e5 draws: the mean's standard error
  // is 6e-5 and the std's 3e-5, so 1e-3 and 5e-4 are over 15 sigma (the draws are fixed by the
  // seed, so a failure means a broken generator, not bad luck).
  const limit = 0.02 * Math.sqrt(3) * (1 + 2 ** -8);
  let sum = 0, squares = 0, count = 0;
  for (const bits of wa.flatMap((m) => [...m])) {
    const value = bitsF32(bits << 16);
    assert.ok(Math.abs(value) <= limit, `${value} outside ±${limit}`);
    sum += value;
    squares += value * value;
    count++;
  }
  const mean = sum / count, std = Math.sqrt(squares / count - mean * mean);
  assert.ok(Math.abs(mean) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(std - 0.02) < 5e-4, `std ${std}`);
  for (
    const norm of [
      llamaWeights(a).norm,
      llamaWeights(a).layers[0].inputNorm,
      llamaWeights(a).layers[1].postAttentionNorm,
    ]
  ) {
    assert.ok(readBf16(backend, norm).every((bits) => bits === 0x3f80), "norm weights are 1");
  }
  assert.equal(
    (llamaWeights(a).layers[0].qkvProj as DeviceBuffer).bytes,
    (2 + 2 * 1) * 32 * 64 * 2,
  );
  assert.equal((llamaWeights(a).layers[0].gateUpProj as DeviceBuffer).bytes, 2 * 96 * 64 * 2);
  for (const weights of [a, b, c]) weights.free();
  assert.equal(backend.live.size, 0);
});

Deno.test("weights: randomWeights seeds use all 53 bits", () => {
  const backend = new CpuBackend();
  const { ops, fills } = recordingOps();
  const low = randomWeights(CONFIG, backend, ops, 5);
  const high = randomWeights(CONFIG, backend, ops, 2 ** 32 + 5);
  const top = randomWeights(CONFIG, backend, ops, Number.MAX_SAFE_INTEGER);
  const perModel = fills.length / 3;
  const seedsOf = (k: number) => fills.slice(k * perModel, (k + 1) * perModel).map((f) => f.seed);
  assert.equal(new Set([...seedsOf(0), ...seedsOf(1), ...seedsOf(2)]).size, fills.length);
  assert.notDeepEqual(
    readBf16(backend, llamaWeights(high).embedTokens),
    readBf16(backend, llamaWeights(low).embedTokens),
  );
  for (const w of [low, high, top]) w.free();
});

Deno.test("weights: randomWeights ties lm_head and frees on failure", async () => {
  const backend = new CountingBackend();
  const { ops, fills } = recordingOps();
  const tied = randomWeights(TIED, backend, ops, 1);
  assert.equal(llamaWeights(tied).lmHead, llamaWeights(tied).embedTokens);
  assert.deepEqual(fills.map((f) => f.out), matrices(tied), "the tied table is filled once");
  tied.free();

  // The backend's own ops work as well as a recording wrapper.
  const real = randomWeights(CONFIG, backend, await loadOps(backend), 1);
  const recorded = randomWeights(CONFIG, backend, ops, 1);
  assert.deepEqual(
    readBf16(backend, llamaWeights(real).lmHead),
    readBf16(backend, llamaWeights(recorded).lmHead),
  );
  real.free();
  recorded.free();

  const outOfMemory = new CountingBackend(5);
  assert.throws(() => randomWeights(CONFIG, outOfMemory, ops, 1), /out of memory/);
  assert.equal(outOfMemory.live.size, 0);

  const failingFill = new CountingBackend();
  assert.throws(
    () => randomWeights(CONFIG, failingFill, recordingOps(3).ops, 1),
    /launch failed/,
  );
  assert.equal(failingFill.live.size, 0);

  const deviceLost = new CountingBackend(Infinity, 2);
  assert.throws(() => randomWeights(CONFIG, deviceLost, ops, 1), /device lost/);
  assert.equal(deviceLost.live.size, 0);

  for (const seed of [-1, 1.5, NaN, 2 ** 53]) {
    assert.throws(
      () => randomWeights(CONFIG, backend, ops, seed),
      (e: Error) => e instanceof RangeError && /^randomWeights: seed/.test(e.message),
    );
  }
  assert.equal(backend.live.size, 0);
});
