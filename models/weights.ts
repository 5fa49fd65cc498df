/**
 * Model weights on the device: {@link loadWeights} streams a Hugging Face safetensors checkpoint
 * (one file, or shards listed in model.safetensors.index.json) into bf16 device buffers, and
 * {@link randomWeights} builds seeded random weights of any config for benchmarks and tests.
 *
 * The layout (which buffers, and which checkpoint tensors fill which rows of them) is the model
 * family's (`weightLayout` in models/<family>.ts), made for its forward pass. Every source tensor is checked against the config before anything is
 * allocated, so a mismatched or incomplete checkpoint fails in a second, naming the file and the
 * tensor, not after minutes of copying. Bytes then go through one reused host staging buffer,
 * converted to bf16 in place, so host memory stays at the staging size whatever the model.
 * Random weights never touch the host: a seeded fill kernel writes them where they live.
 *
 * @example Load a model directory onto a backend
 * ```ts ignore
 * import { CpuBackend } from "./backends/cpu.ts";
 * import { loadModelConfig } from "./models/config.ts";
 * import { loadWeights } from "./models/weights.ts";
 * const dir = "models/Llama-3.2-1B-Instruct";
 * const backend = new CpuBackend();
 * const weights = await loadWeights(dir, await loadModelConfig(dir), backend);
 * weights.free();
 * ```
 *
 * @module
 */

import { isAbsolute, join, normalize } from "node:path";
import type { Backend, DeviceBuffer, HostBuffer } from "../backends/backend.ts";
import { toBf16Bits } from "../backends/bf16.ts";
import type { AwqWeight, Fp8Weight, LinearWeight, ModelOps } from "../ops/ops.ts";
import {
  checkInt4Slots,
  int4TensorNames,
  loadInt4Slots,
  randomInt4Weight,
} from "./int4_weights.ts";
import type { Int4Checkpoint } from "./quantization_int4.ts";
import { philox4x32 } from "../backends/philox.ts";
import type { ModelConfig } from "./config.ts";
import { modelDefinition } from "./families.ts";
import type { ModelWeights, WeightPart, WeightSlot } from "./model.ts";
import {
  readSafetensorsHeader,
  readTensor,
  readTensorRange,
  type SafetensorsHeader,
  type SafetensorsTensor,
} from "./safetensors.ts";

/** Options of {@link loadWeights}. */
export interface LoadWeightsOptions {
  /** Draw a progress line on stderr; default: when stderr is a terminal. */
  readonly progress?: boolean;
  /** Called after every chunk with bytes done and total (source bytes when loading). */
  readonly onProgress?: (done: number, total: number) => void;
  /** Host staging buffer size in bytes (pinned where the backend can); default 64 MiB. */
  readonly stagingBytes?: number;
  /**
   * "fp8": hold the decoder layers' linear weights in FP8 E4M3, quantizing bf16 ones at load
   * with one scale per output row (amax / 448). An FP8 checkpoint is held in FP8 either way.
   */
  readonly quantization?: WeightQuantization;
  /**
   * The device's operators: needed for FP8 weights (quantizeFp8 and fp8ScratchBytes) and for
   * 4-bit ones (awqScratchBytes).
   */
  readonly ops?: Fp8LoadOps & Partial<Pick<ModelOps, "awqScratchBytes">>;
}

/**
 * How linear weights are held: as the checkpoint has them, or "fp8" (quantized at load). "awq"
 * (random 4-bit weights) applies to random weights only, for benchmarks: a checkpoint's 4-bit
 * weights come from its quantization_config.
 */
export type WeightQuantization = "fp8" | "awq" | null;

/** The operators FP8 weights need at load. */
export type Fp8LoadOps = Pick<ModelOps, "quantizeFp8" | "fp8ScratchBytes">;

/** A checkpoint that does not fit its config or cannot be read. */
export class WeightsError extends Error {
  /** The file concerned: a safetensors shard, the index, or the model directory. */
  readonly file: string;
  /** The tensor concerned, or null when the problem is the file as a whole. */
  readonly tensor: string | null;

  /**
   * An error about `file` (and `tensor`), its message prefixed with both.
   *
   * @param file the file concerned: a safetensors shard, the index, or the model directory
   * @param tensor the tensor concerned, or null
   * @param message what is wrong and, where there is one, the remedy
   */
  constructor(file: string, tensor: string | null, message: string) {
    super(tensor === null ? `${file}: ${message}` : `${file}: tensor '${tensor}': ${message}`);
    this.name = "WeightsError";
    this.file = file;
    this.tensor = tensor;
  }
}

const DEFAULT_STAGING_BYTES = 64 << 20;
const INDEX_FILE = "model.safetensors.index.json";
const SINGLE_FILE = "model.safetensors";
const SOURCE_DTYPES: Readonly<Record<string, number>> = { BF16: 2, F16: 2, F32: 4, F8_E4M3: 1 };
const FP8 = "F8_E4M3";
const BF16_ONE = 0x3f80;
const MISMATCH = "the checkpoint does not match its config.json (or is a different model)";

// ---------------------------------------------------------------------------------------------
// Layout: which device buffers a config needs and which HF tensors fill which byte ranges.

/** Device buffers of a load in progress, all freed together if it fails. */
class Owned {
  readonly buffers: DeviceBuffer[] = [];
  constructor(readonly backend: Backend) {}
  alloc(bytes: number): DeviceBuffer {
    const buffer = this.backend.alloc(bytes);
    this.buffers.push(buffer);
    return buffer;
  }
  release(buffer: DeviceBuffer): void {
    this.buffers.splice(this.buffers.indexOf(buffer), 1);
    this.backend.free(buffer);
  }
  freeAll(): void {
    for (const buffer of this.buffers) this.backend.free(buffer);
    this.buffers.length = 0;
  }
}

function assemble(
  config: ModelConfig,
  owned: Owned,
  buffers: Map<string, DeviceBuffer>,
  fp8: Map<string, Fp8Weight | AwqWeight>,
  kvScales: ModelWeights["kvScales"] = null,
): ModelWeights {
  let freed = false;
  const all = [...owned.buffers];
  return {
    config,
    get(key) {
      const buffer = buffers.get(key);
      if (buffer !== undefined) return buffer;
      const quantized = fp8.get(key);
      if (quantized !== undefined) {
        const form = quantized.format === "awq-int4" ? "4 bits" : "FP8";
        throw new RangeError(`weights: slot '${key}' is held in ${form}; read it with linear()`);
      }
      throw new RangeError(`weights: no buffer '${key}' in the layout`);
    },
    linear(key): LinearWeight {
      const weight = fp8.get(key) ?? buffers.get(key);
      if (weight === undefined) throw new RangeError(`weights: no buffer '${key}' in the layout`);
      return weight;
    },
    has: (key) => buffers.has(key) || fp8.has(key),
    format: [...fp8.values()].some((w) => w.format === "awq-int4")
      ? "awq"
      : fp8.size > 0
      ? "fp8"
      : "bf16",
    bytes: all.reduce((sum, b) => sum + b.bytes, 0),
    kvScales,
    free() {
      if (freed) return;
      freed = true;
      for (const buffer of all) owned.backend.free(buffer);
    },
  };
}

/** Rows and columns of a linear slot (its parts stacked by rows). */
function slotMatrix(slot: WeightSlot): { n: number; k: number } {
  return { n: slot.parts.reduce((sum, p) => sum + p.shape[0], 0), k: slot.parts[0].shape[1] };
}

/** The FP8 ops, or a TypeError saying they are needed. */
function fp8Ops(options: { readonly ops?: Fp8LoadOps }): Fp8LoadOps {
  if (!options.ops) {
    throw new TypeError("loadWeights: FP8 weights need the device's operators (options.ops)");
  }
  return options.ops;
}

/** One bf16 scratch of the largest size `ops.fp8ScratchBytes` asks for over `slots`, or null. */
function fp8Scratch(owned: Owned, ops: Fp8LoadOps, slots: readonly WeightSlot[]) {
  const bytes = Math.max(
    0,
    ...slots.map((slot) => {
      const { n, k } = slotMatrix(slot);
      return ops.fp8ScratchBytes(n, k);
    }),
  );
  return bytes > 0 ? owned.alloc(bytes) : null;
}

/** Allocates the FP8 codes and scales of one linear slot. */
function fp8Weight(owned: Owned, slot: WeightSlot, scratch: DeviceBuffer | null): Fp8Weight {
  const { n, k } = slotMatrix(slot);
  return { format: "fp8-e4m3", data: owned.alloc(n * k), scales: owned.alloc(4 * n), scratch };
}

/**
 * Quantizes the bf16 `buffers` of `slots` into new FP8 weights in `fp8`, on the default stream,
 * freeing each bf16 buffer once its codes are written, so at most one slot is held twice.
 */
function quantizeSlots(
  owned: Owned,
  ops: Fp8LoadOps,
  slots: readonly WeightSlot[],
  buffers: Map<string, DeviceBuffer>,
  fp8: Map<string, Fp8Weight | AwqWeight>,
  scratch: DeviceBuffer | null,
): void {
  const stream = owned.backend.defaultStream;
  for (const slot of slots) {
    const { n, k } = slotMatrix(slot);
    const source = buffers.get(slot.key)!;
    const weight = fp8Weight(owned, slot, scratch);
    fp8.set(slot.key, weight);
    ops.quantizeFp8(weight, source, n, k, stream);
    stream.synchronize();
    buffers.delete(slot.key);
    owned.release(source);
  }
}

// ---------------------------------------------------------------------------------------------
// Source dtypes to bf16, in place in the staging buffer.

const f16Scratch = new Uint32Array(1);
const f16Float = new Float32Array(f16Scratch.buffer);

/**
 * The f32 value of an IEEE half-precision bit pattern (subnormals, infinities and NaN
 * included), by moving its fields into f32 position.
 */
export function f16ToF32(bits: number): number {
  const sign = (bits & 0x8000) << 16;
  const exponent = (bits >>> 10) & 0x1f;
  let mantissa = bits & 0x3ff;
  if (exponent === 0x1f) {
    f16Scratch[0] = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent !== 0) {
    f16Scratch[0] = sign | ((exponent + 112) << 23) | (mantissa << 13); // rebias 15 → 127
  } else if (mantissa === 0) {
    f16Scratch[0] = sign;
  } else {
    // A subnormal half is a normal f32: shift the leading 1 into the implicit bit.
    let e = 113;
    while ((mantissa & 0x400) === 0) {
      mantissa <<= 1;
      e--;
    }
    f16Scratch[0] = sign | (e << 23) | ((mantissa & 0x3ff) << 13);
  }
  return f16Float[0];
}

let f16ToBf16Table: Uint16Array | null = null;

/** f16 → bf16 for all 65536 patterns: one lookup per element instead of two conversions. */
function f16Table(): Uint16Array {
  if (!f16ToBf16Table) {
    f16ToBf16Table = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) f16ToBf16Table[i] = toBf16Bits(f16ToF32(i));
  }
  return f16ToBf16Table;
}

/**
 * Converts `elements` values of `dtype` at the start of `staging` to bf16 in place and returns
 * the bf16 byte count. f32 shrinks: element i is written at bytes 2i..2i+1, which lie at or
 * before its own bytes 4i..4i+3, so a forward pass never overwrites what it has yet to read.
 */
function toBf16InPlace(dtype: string, staging: Uint8Array, elements: number): number {
  if (dtype === "F16") {
    const table = f16Table();
    const halves = new Uint16Array(staging.buffer, staging.byteOffset, elements);
    for (let i = 0; i < elements; i++) halves[i] = table[halves[i]];
  } else if (dtype === "F32") {
    const floats = new Float32Array(staging.buffer, staging.byteOffset, elements);
    const out = new Uint16Array(staging.buffer, staging.byteOffset, elements);
    for (let i = 0; i < elements; i++) out[i] = toBf16Bits(floats[i]);
  }
  return elements * 2;
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr: one line, rewritten in place at most ten times a second.

class Progress {
  readonly #start = performance.now();
  #done = 0;
  #drawn = 0;

  constructor(
    readonly label: string,
    readonly total: number,
    readonly draw: boolean,
    readonly onProgress?: (done: number, total: number) => void,
  ) {}

  advance(bytes: number): void {
    this.#done += bytes;
    this.onProgress?.(this.#done, this.total);
    const now = performance.now();
    if (this.draw && (now - this.#drawn >= 100 || this.#done === this.total)) {
      this.#drawn = now;
      this.#write("\r");
    }
  }

  /** Ends the line, so whatever prints next (a log, an error) starts on a fresh one. */
  finish(): void {
    if (this.draw) this.#write("\r", "\n");
  }

  #write(prefix: string, suffix = ""): void {
    const gb = (n: number) => (n / 1e9).toFixed(2);
    const seconds = Math.max((performance.now() - this.#start) / 1000, 1e-3);
    const percent = this.total ? Math.floor((100 * this.#done) / this.total) : 100;
    const line = `${this.label} ${gb(this.#done)}/${gb(this.total)} GB ${percent}% ` +
      `${(this.#done / 1e6 / seconds).toFixed(0)} MB/s`;
    Deno.stderr.writeSync(new TextEncoder().encode(`${prefix}${line.padEnd(60)}${suffix}`));
  }
}

function stagingSize(options: LoadWeightsOptions, largest: number): number {
  const requested = options.stagingBytes ?? DEFAULT_STAGING_BYTES;
  if (!Number.isSafeInteger(requested) || requested < 16) {
    throw new RangeError(`stagingBytes must be an integer >= 16, got ${requested}`);
  }
  // A multiple of 4, so chunks never split an f32; no larger than the largest tensor needs.
  return Math.max(4, Math.floor(Math.min(requested, largest + 3) / 4) * 4);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint resolution: which file holds each tensor.

/** Where each needed tensor lives, with the headers of the files involved. */
interface Checkpoint {
  /** The file that names tensors: the index for a sharded checkpoint, else the one file. */
  readonly listing: string;
  /** Every tensor name the checkpoint declares (for spotting extra layers). */
  readonly names: Iterable<string>;
  /** The file a tensor is said to be in, or undefined when the checkpoint lacks it. */
  fileOf(name: string): string | undefined;
  /** Headers by path, for the files that hold needed tensors. */
  readonly headers: Map<string, SafetensorsHeader>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function resolveCheckpoint(dir: string, needed: readonly string[]): Promise<Checkpoint> {
  const indexPath = join(dir, INDEX_FILE);
  if (await exists(indexPath)) return await shardedCheckpoint(dir, indexPath, needed);

  let single = join(dir, SINGLE_FILE);
  if (!(await exists(single))) {
    let entries: string[];
    try {
      entries = [];
      for await (const entry of Deno.readDir(dir)) entries.push(entry.name);
    } catch (error) {
      const why = error instanceof Deno.errors.NotFound
        ? "does not exist"
        : (error as Error).message;
      throw new WeightsError(dir, null, `the model directory ${why}`);
    }
    const found = entries.filter((name) => name.endsWith(".safetensors")).sort();
    if (found.length !== 1) {
      const bin = entries.some((name) => name.endsWith(".bin") || name.endsWith(".pth"));
      throw new WeightsError(
        dir,
        null,
        found.length === 0
          ? `no ${SINGLE_FILE} or ${INDEX_FILE} here; Denali loads Hugging Face safetensors ` +
            "checkpoints" + (bin ? " (convert the .bin/.pth weights to safetensors first)" : "")
          : `${found.length} .safetensors files (${found.join(", ")}) but no ${INDEX_FILE} ` +
            "to say which tensor is where; restore the index file",
      );
    }
    single = join(dir, found[0]);
  }
  const header = await readSafetensorsHeader(single);
  return {
    listing: single,
    names: [...header.tensors.keys()],
    fileOf: (name) => header.tensors.has(name) ? single : undefined,
    headers: new Map([[single, header]]),
  };
}

async function shardedCheckpoint(
  dir: string,
  indexPath: string,
  needed: readonly string[],
): Promise<Checkpoint> {
  let weightMap: Record<string, unknown>;
  try {
    const index = JSON.parse(await Deno.readTextFile(indexPath));
    weightMap = index?.weight_map;
    if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
      throw new Error("it has no weight_map object");
    }
  } catch (error) {
    throw new WeightsError(
      indexPath,
      null,
      `unreadable index (${(error as Error).message}); re-download it`,
    );
  }
  const fileOf = (name: string): string | undefined => {
    const shard = weightMap[name];
    if (shard === undefined) return undefined;
    // Shard names are bare file names; anything else could read outside the model directory.
    if (
      typeof shard !== "string" || shard === "" || isAbsolute(shard) ||
      normalize(shard).startsWith("..")
    ) {
      throw new WeightsError(
        indexPath,
        name,
        `weight_map names ${JSON.stringify(shard)}, not a file in the model directory`,
      );
    }
    return join(dir, shard);
  };
  const headers = new Map<string, SafetensorsHeader>();
  for (const name of needed) {
    const path = fileOf(name);
    if (path === undefined || headers.has(path)) continue;
    if (!(await exists(path))) {
      throw new WeightsError(
        path,
        name,
        `the shard is listed in ${INDEX_FILE} but missing: the download is incomplete; ` +
          "download the missing shard",
      );
    }
    headers.set(path, await readSafetensorsHeader(path));
  }
  return { listing: indexPath, names: Object.keys(weightMap), fileOf, headers };
}

/** The source tensor of a part, checked for presence, dtype and shape. */
function sourceTensor(
  checkpoint: Checkpoint,
  config: ModelConfig,
  slot: WeightSlot,
  part: WeightPart,
): {
  file: string;
  tensor: SafetensorsTensor;
} {
  const remedy = part.name === "lm_head.weight"
    ? "if the model shares its embedding table with the output layer, config.json should " +
      'say "tie_word_embeddings": true'
    : `${MISMATCH}, or the download is incomplete`;
  const { file, tensor } = requireTensor(checkpoint, part.name, `missing; ${remedy}`);
  if (SOURCE_DTYPES[tensor.dtype] === undefined) {
    throw new WeightsError(
      file,
      part.name,
      `dtype ${tensor.dtype} is not supported; Denali loads BF16, F16 or F32 weights, and ` +
        "F8_E4M3 linear weights of FP8 checkpoints (use the unquantized release otherwise)",
    );
  }
  if (tensor.dtype === FP8 && (!slot.linear || !config.quantization)) {
    throw new WeightsError(
      file,
      part.name,
      !config.quantization
        ? "dtype F8_E4M3, but config.json has no quantization_config to say how it is scaled; " +
          "restore the checkpoint's config.json"
        : "dtype F8_E4M3 is supported only for the decoder layers' linear weights (embeddings, " +
          "norms and the lm head must be BF16, F16 or F32)",
    );
  }
  const same = tensor.shape.length === part.shape.length &&
    tensor.shape.every((n, i) => n === part.shape[i]);
  if (!same) {
    throw new WeightsError(
      file,
      part.name,
      `shape [${tensor.shape.join(", ")}], expected [${part.shape.join(", ")}] from config.json ` +
        `(hidden ${config.hiddenSize}, heads ${config.numAttentionHeads}/` +
        `${config.numKeyValueHeads}, head_dim ${config.headDim}, intermediate ` +
        `${config.intermediateSize}, vocab ${config.vocabSize}); ${MISMATCH}`,
    );
  }
  return { file, tensor };
}

/** A checkpoint with layers past num_hidden_layers would run as a silently truncated model. */
function checkLayerCount(checkpoint: Checkpoint, config: ModelConfig): void {
  for (const name of checkpoint.names) {
    const match = /^model\.layers\.(\d+)\./.exec(name);
    if (match && Number(match[1]) >= config.numHiddenLayers) {
      throw new WeightsError(
        checkpoint.fileOf(name) ?? checkpoint.listing,
        name,
        `layer ${match[1]} exists but config.json says num_hidden_layers = ` +
          `${config.numHiddenLayers}; ${MISMATCH}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/** One copy job: a source tensor into a byte range of a device buffer. */
interface Job {
  readonly file: string;
  readonly tensor: SafetensorsTensor;
  readonly dst: DeviceBuffer;
  readonly offset: number;
}

/** The checkpoint's 4-bit scheme, or null when it is not an AWQ/GPTQ one. */
function int4Scheme(config: ModelConfig): Int4Checkpoint | null {
  const q = config.quantization;
  return q && (q.method === "awq" || q.method === "gptq") ? q : null;
}

/**
 * Tensor `name`'s file and header entry; a WeightsError with `missing` (naming the shard the index
 * points to, else the listing) where the checkpoint lacks it.
 */
function requireTensor(
  checkpoint: Checkpoint,
  name: string,
  missing: string,
): { file: string; tensor: SafetensorsTensor } {
  const file = checkpoint.fileOf(name);
  const tensor = file === undefined ? undefined : checkpoint.headers.get(file)?.tensors.get(name);
  if (file === undefined || tensor === undefined) {
    throw new WeightsError(file ?? checkpoint.listing, name, missing);
  }
  return { file, tensor };
}

/** The dtypes a scale tensor (FP8 weight or KV cache) may have. */
const SCALE_DTYPES: readonly string[] = ["F32", "BF16", "F16"];

/** Whether a tensor shape holds one value: [] or [1]. */
function isScalar(shape: readonly number[]): boolean {
  return shape.length === 0 || (shape.length === 1 && shape[0] === 1);
}

/** Where a linear part's FP8 scale lives: `<prefix>.weight` → `<prefix>.weight_scale`. */
function scaleName(part: WeightPart): string {
  return part.name.replace(/\.weight$/, ".weight_scale");
}

/** How one slot is held: bf16 as loaded, FP8 as the checkpoint has it, or FP8 quantized here. */
type SlotForm = "bf16" | "fp8" | "quantize";

/** A slot's form, from its tensors' dtypes (all F8_E4M3, or none) and the quantization asked. */
function slotForm(
  slot: WeightSlot,
  sources: readonly { file: string; tensor: SafetensorsTensor }[],
  quantization: WeightQuantization | undefined,
): SlotForm {
  const fp8 = sources.filter((s) => s.tensor.dtype === FP8).length;
  if (fp8 === sources.length) return "fp8";
  if (fp8 > 0) {
    const odd = sources.find((s) => s.tensor.dtype !== FP8)!;
    throw new WeightsError(
      odd.file,
      odd.tensor.name,
      `dtype ${odd.tensor.dtype}, but the other parts of '${slot.key}' are F8_E4M3; Denali ` +
        "fuses them into one weight, so they must share a format: requantize the checkpoint " +
        "with the same scheme for all of them",
    );
  }
  return slot.linear && quantization === "fp8" ? "quantize" : "bf16";
}

/**
 * The scale tensor of an F8_E4M3 part, checked: F32, BF16 or F16; [rows, 1] or [rows] per
 * channel, [] or [1] per tensor.
 */
function scaleTensor(checkpoint: Checkpoint, part: WeightPart): {
  file: string;
  tensor: SafetensorsTensor;
} {
  const name = scaleName(part);
  const { file, tensor } = requireTensor(
    checkpoint,
    name,
    `missing: the F8_E4M3 weight ${part.name} needs its scale (a per-channel [out, 1] or ` +
      "per-tensor scalar weight_scale); the download is incomplete, or the checkpoint uses a " +
      "layout Denali does not read (block-wise weight_scale_inv)",
  );
  if (!SCALE_DTYPES.includes(tensor.dtype)) {
    throw new WeightsError(
      file,
      name,
      `dtype ${tensor.dtype} is not supported for a scale; expected F32, BF16 or F16`,
    );
  }
  const rows = part.shape[0], shape = tensor.shape;
  const perTensor = isScalar(shape);
  const perChannel = (shape.length === 2 && shape[0] === rows && shape[1] === 1) ||
    (shape.length === 1 && shape[0] === rows);
  if (!perTensor && !perChannel) {
    throw new WeightsError(
      file,
      name,
      `shape [${shape.join(", ")}] is not a scale Denali supports for the [${
        part.shape.join(", ")
      }] weight: expected [${rows}, 1] (per output channel) or [] (per tensor); block-wise ` +
        "or group scales need a checkpoint quantized per channel instead",
    );
  }
  return { file, tensor };
}

/** f32 values of a small F32, BF16 or F16 tensor read whole. */
function floatsOf(dtype: string, bytes: Uint8Array): Float32Array {
  if (dtype === "F32") return new Float32Array(bytes.slice().buffer);
  const halves = new Uint16Array(bytes.slice().buffer);
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) {
    out[i] = dtype === "BF16" ? fromBf16(halves[i]) : f16ToF32(halves[i]);
  }
  return out;
}

const bf16Word = new Uint32Array(1);
const bf16Value = new Float32Array(bf16Word.buffer);
function fromBf16(bits: number): number {
  bf16Word[0] = bits << 16;
  return bf16Value[0];
}

/** Reads the scales of an FP8 slot's parts into one f32 per row, and copies them over. */
async function copyScales(
  backend: Backend,
  checkpoint: Checkpoint,
  slot: WeightSlot,
  weight: Fp8Weight,
): Promise<void> {
  const { n } = slotMatrix(slot);
  const scales = new Float32Array(n);
  let row = 0;
  for (const part of slot.parts) {
    const { file, tensor } = scaleTensor(checkpoint, part);
    const values = floatsOf(
      tensor.dtype,
      await readTensor(checkpoint.headers.get(file)!, tensor.name),
    );
    const rows = part.shape[0];
    for (let r = 0; r < rows; r++) {
      const value = values.length === 1 ? values[0] : values[r];
      if (!(value >= 0) || !Number.isFinite(value)) {
        throw new WeightsError(
          file,
          tensor.name,
          `row ${r} has scale ${value}; a scale must be finite and >= 0: the checkpoint is corrupt`,
        );
      }
      scales[row + r] = value;
    }
    row += rows;
  }
  backend.copyToDevice(weight.scales, new Uint8Array(scales.buffer));
}

/**
 * Loads the safetensors checkpoint in `dir` (model.safetensors, a lone *.safetensors, or the
 * shards of model.safetensors.index.json) onto `backend` as {@link ModelWeights}: bf16, with
 * the linear weights of an FP8 checkpoint (config.json's quantization_config) kept in FP8, and
 * with `options.quantization` "fp8", a bf16 checkpoint's linear weights quantized to FP8.
 * Problems are WeightsError or SafetensorsError naming the file and tensor; whatever was
 * allocated before a failure is freed.
 */
export async function loadWeights(
  dir: string,
  config: ModelConfig,
  backend: Backend,
  options: LoadWeightsOptions = {},
): Promise<ModelWeights> {
  const layout = modelDefinition(config).weightLayout(config);
  // A 4-bit checkpoint's linear slots load through models/int4_weights.ts; the rest as below.
  const int4 = int4Scheme(config);
  if (int4 && options.quantization === "fp8") {
    throw new WeightsError(
      dir,
      null,
      `quantization "fp8" cannot apply to a 4-bit (${int4.method}) checkpoint, whose weights ` +
        "are already quantized; drop --quantization fp8",
    );
  }
  if (!int4 && options.quantization === "awq") {
    throw new WeightsError(
      dir,
      null,
      'quantization "awq" applies to random weights only; a checkpoint runs 4-bit when its ' +
        "config.json has an AWQ or GPTQ quantization_config",
    );
  }
  const int4Slots = int4 ? layout.filter((slot) => slot.linear) : [];
  const slots = int4 ? layout.filter((slot) => !slot.linear) : layout;
  const parts = slots.flatMap((slot) => slot.parts);
  const kvNames = kvScaleNames(config);
  const needed = [
    ...parts.flatMap((p) => [p.name, ...(config.quantization && !int4 ? [scaleName(p)] : [])]),
    ...int4Slots.flatMap((slot) => slot.parts.flatMap((p) => int4TensorNames(p, int4!))),
    ...(kvNames?.names.flat() ?? []),
  ];
  const checkpoint = await resolveCheckpoint(dir, needed);
  checkLayerCount(checkpoint, config);
  const int4Fail = (file: string, tensor: string, message: string): never => {
    throw new WeightsError(file, tensor, message);
  };
  if (int4) checkInt4Slots(checkpoint, int4Slots, int4, int4Fail);
  const sources = slots.map((slot) =>
    slot.parts.map((part) => sourceTensor(checkpoint, config, slot, part))
  );
  const forms = slots.map((slot, i) => slotForm(slot, sources[i], options.quantization));
  slots.forEach((slot, i) => {
    if (forms[i] === "fp8") { for (const part of slot.parts) scaleTensor(checkpoint, part); }
  });
  const fp8Slots = slots.filter((_, i) => forms[i] !== "bf16");
  const ops = fp8Slots.length > 0 ? fp8Ops(options) : null;

  const owned = new Owned(backend);
  const buffers = new Map<string, DeviceBuffer>();
  const fp8 = new Map<string, Fp8Weight | AwqWeight>();
  let staging: HostBuffer | null = null;
  let kvScales: ModelWeights["kvScales"] = null;
  const total = sources.flat().reduce((sum, s) => sum + s.tensor.bytes, 0);
  const progress = new Progress(
    "loading weights",
    total,
    options.progress ?? Deno.stderr.isTerminal(),
    options.onProgress,
  );
  try {
    const scratch = ops ? fp8Scratch(owned, ops, fp8Slots) : null;
    const jobs: Job[] = [];
    slots.forEach((slot, i) => {
      if (forms[i] === "fp8") {
        const weight = fp8Weight(owned, slot, scratch);
        fp8.set(slot.key, weight);
        // Codes are one byte: a part's byte offset is half its bf16 one.
        slot.parts.forEach((part, j) =>
          jobs.push({ ...sources[i][j], dst: weight.data, offset: part.offset / 2 })
        );
      } else {
        const dst = owned.alloc(slot.bytes);
        buffers.set(slot.key, dst);
        slot.parts.forEach((part, j) => jobs.push({ ...sources[i][j], dst, offset: part.offset }));
      }
    });
    staging = backend.allocHost(
      stagingSize(options, Math.max(...jobs.map((job) => job.tensor.bytes))),
    );
    // File by file in on-disk order, so the disk sees sequential reads.
    jobs.sort((a, b) =>
      a.file < b.file ? -1 : a.file > b.file ? 1 : a.tensor.offset - b.tensor.offset
    );
    for (let i = 0; i < jobs.length;) {
      const file = await Deno.open(jobs[i].file, { read: true });
      try {
        for (const name = jobs[i].file; i < jobs.length && jobs[i].file === name; i++) {
          await copyTensor(
            backend,
            file,
            checkpoint.headers.get(name)!,
            jobs[i],
            staging.bytes,
            progress,
          );
        }
      } finally {
        file.close();
      }
    }
    for (const slot of slots) {
      const weight = fp8.get(slot.key);
      if (weight?.format === "fp8-e4m3") await copyScales(backend, checkpoint, slot, weight);
    }
    if (ops) {
      const quantized = slots.filter((_, i) => forms[i] === "quantize");
      quantizeSlots(owned, ops, quantized, buffers, fp8, scratch);
    }
    if (int4) {
      const scratchBytes = options.ops?.awqScratchBytes;
      if (!scratchBytes) {
        throw new TypeError("loadWeights: 4-bit weights need the device's operators (options.ops)");
      }
      const bytes = Math.max(
        0,
        ...int4Slots.map((slot) => {
          const { n, k } = slotMatrix(slot);
          return scratchBytes(n, k);
        }),
      );
      const int4Scratch = bytes > 0 ? owned.alloc(bytes) : null;
      const alloc = (size: number) => owned.alloc(size);
      const loaded = await loadInt4Slots(
        backend,
        alloc,
        checkpoint,
        int4Slots,
        int4,
        int4Scratch,
        int4Fail,
      );
      for (const [key, weight] of loaded) fp8.set(key, weight);
    }
    // Declared by kv_cache_scheme, or simply present (vLLM reads them either way).
    if (
      kvNames !== null &&
      (kvNames.declared || checkpoint.fileOf(kvNames.names[0][0]) !== undefined)
    ) {
      kvScales = await readKvScales(checkpoint, kvNames.names);
    }
  } catch (error) {
    owned.freeAll();
    throw error;
  } finally {
    staging?.free();
    progress.finish();
  }
  return assemble(config, owned, buffers, fp8, kvScales);
}

/**
 * Per layer, the names of the K and V cache scales an FP8 checkpoint may provide, and whether
 * config.json declares them (a compressed-tensors `kv_cache_scheme`; AutoFP8-style `fp8`
 * checkpoints just carry them); null for other checkpoints.
 */
function kvScaleNames(
  config: ModelConfig,
): { names: [string, string][]; declared: boolean } | null {
  const q = config.quantization;
  if (!q || (q.method !== "compressed-tensors" && q.method !== "fp8")) return null;
  const names = Array.from({ length: config.numHiddenLayers }, (_, l): [string, string] => {
    const prefix = `model.layers.${l}.self_attn.`;
    return [`${prefix}k_scale`, `${prefix}v_scale`];
  });
  return { names, declared: q.kvCacheScales };
}

/** Reads each layer's K and V scale (a scalar, F32, BF16 or F16, finite and > 0). */
async function readKvScales(
  checkpoint: Checkpoint,
  names: readonly [string, string][],
): Promise<{ k: Float32Array; v: Float32Array }> {
  const k = new Float32Array(names.length), v = new Float32Array(names.length);
  for (const [l, pair] of names.entries()) {
    for (const [i, name] of pair.entries()) {
      const { file, tensor } = requireTensor(
        checkpoint,
        name,
        "missing: the checkpoint has FP8 KV-cache scales (kv_cache_scheme, or layer 0's " +
          "k_scale), and needs one k_scale and v_scale per layer; the download is incomplete, " +
          "or remove kv_cache_scheme (and the scale tensors) to run with scales of 1",
      );
      if (!isScalar(tensor.shape) || !SCALE_DTYPES.includes(tensor.dtype)) {
        throw new WeightsError(
          file,
          name,
          `${tensor.dtype} [${tensor.shape}] is not a KV-cache scale; expected a per-tensor ` +
            "scalar (F32, BF16 or F16)",
        );
      }
      const value =
        floatsOf(tensor.dtype, await readTensor(checkpoint.headers.get(file)!, name))[0];
      if (!(value > 0) || !Number.isFinite(value)) {
        throw new WeightsError(
          file,
          name,
          `scale ${value}: a KV-cache scale must be finite and > 0; the checkpoint is corrupt`,
        );
      }
      (i === 0 ? k : v)[l] = value;
    }
  }
  return { k, v };
}

async function copyTensor(
  backend: Backend,
  file: Deno.FsFile,
  header: SafetensorsHeader,
  job: Job,
  staging: Uint8Array,
  progress: Progress,
): Promise<void> {
  const { tensor, dst, offset } = job;
  const elementBytes = SOURCE_DTYPES[tensor.dtype];
  const chunk = Math.floor(staging.length / elementBytes) * elementBytes;
  for (let start = 0; start < tensor.bytes; start += chunk) {
    const bytes = Math.min(chunk, tensor.bytes - start);
    await readTensorRange(file, header, tensor, start, staging.subarray(0, bytes));
    if (tensor.dtype === FP8) {
      // E4M3 codes go over as they are; a NaN code means a corrupt file, and the GEMV would
      // read it as a number.
      checkNoNaNCodes(header.path, tensor.name, staging.subarray(0, bytes), start);
      backend.copyToDevice(dst.slice(offset + start, bytes), staging.subarray(0, bytes));
    } else {
      const out = toBf16InPlace(tensor.dtype, staging, bytes / elementBytes);
      const at = offset + (start / elementBytes) * 2;
      backend.copyToDevice(dst.slice(at, out), staging.subarray(0, out));
    }
    progress.advance(bytes);
  }
}

function checkNoNaNCodes(file: string, tensor: string, codes: Uint8Array, start: number): void {
  for (let i = 0; i < codes.length; i++) {
    if ((codes[i] & 0x7f) === 0x7f) {
      throw new WeightsError(
        file,
        tensor,
        `element ${start + i} is NaN (E4M3 code 0x${codes[i].toString(16)}): the checkpoint ` +
          "is corrupt; re-download it",
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Random weights.

/** Half-width of the uniform distribution: uniform on [−a, a) has std a/√3 = 0.02. */
const RANDOM_HALF_WIDTH = 0.02 * Math.sqrt(3);

const seedWords = new Uint32Array(4);

/**
 * The fill seed of buffer `index`: a Philox block keyed by the model seed (counter (index, 0,
 * 1, 0), the 1 keeping it apart from the fills' own counters), cut to 53 bits. Nearby seeds and
 * indices give unrelated streams, and the bytes depend on (seed, index) alone.
 */
function bufferSeed(seed: number, index: number): number {
  const [lo, hi] = philox4x32(index, 0, 1, 0, seed >>> 0, Math.floor(seed / 2 ** 32), seedWords);
  return (hi & 0x1fffff) * 2 ** 32 + lo;
}

/**
 * Seeded random weights for `config`, generated on the device by `ops.fillRandom`: matrices
 * uniform on [−0.02·√3, 0.02·√3) (std 0.02, HF's initializer_range), each buffer with its own
 * seed derived from (seed, buffer index), so the bytes depend on the seed alone and are the same
 * on every backend; norms 1 (one small host vector, copied per norm). The fills run on the
 * default stream, which is synchronised before returning, so the weights are ready for any
 * stream. Whatever was allocated before a failure is freed.
 *
 * With `options.quantization` "fp8" the linear slots are then quantized to FP8 (per-row scales),
 * as `loadWeights` quantizes a bf16 checkpoint.
 *
 * @param ops the device's operators (`await loadOps(backend)`); `fillRandom`, and for FP8
 * `quantizeFp8` and `fp8ScratchBytes`
 * @param seed an integer in 0..2^53-1
 * @param options `quantization`: "fp8" to hold the linear weights in FP8
 * @throws RangeError for a bad seed; the backend's error when an allocation fails
 */
export function randomWeights(
  config: ModelConfig,
  backend: Backend,
  ops: Pick<ModelOps, "fillRandom"> & Partial<Fp8LoadOps & Pick<ModelOps, "awqScratchBytes">>,
  seed: number,
  options: { readonly quantization?: WeightQuantization } = {},
): ModelWeights {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`randomWeights: seed must be an integer in 0..2^53-1, got ${seed}`);
  }
  const slots = modelDefinition(config).weightLayout(config);
  const quantized = options.quantization === "fp8" ? slots.filter((slot) => slot.linear) : [];
  const fp8 = quantized.length === 0
    ? null
    : fp8Ops({ ops: ops.quantizeFp8 && ops.fp8ScratchBytes ? ops as Fp8LoadOps : undefined });
  const owned = new Owned(backend);
  const buffers = new Map<string, DeviceBuffer>();
  const weights = new Map<string, Fp8Weight | AwqWeight>();
  const stream = backend.defaultStream;
  try {
    for (const slot of slots) buffers.set(slot.key, owned.alloc(slot.bytes));
    const widest = Math.max(0, ...slots.filter((s) => s.isNorm).map((s) => s.bytes / 2));
    const ones = new Uint16Array(widest).fill(BF16_ONE);
    slots.forEach((slot, index) => {
      const dst = buffers.get(slot.key)!;
      if (slot.isNorm) {
        backend.copyToDevice(dst, ones.subarray(0, slot.bytes / 2));
      } else {
        ops.fillRandom(dst, slot.bytes / 2, bufferSeed(seed, index), RANDOM_HALF_WIDTH, stream);
      }
    });
    stream.synchronize();
    if (fp8) {
      const scratch = fp8Scratch(owned, fp8, quantized);
      quantizeSlots(owned, fp8, quantized, buffers, weights, scratch);
    }
    if (options.quantization === "awq") {
      const linear = slots.filter((slot) => slot.linear);
      const scratchBytes = ops.awqScratchBytes;
      if (!scratchBytes) throw new TypeError("randomWeights: 4-bit weights need awqScratchBytes");
      const bytes = Math.max(
        0,
        ...linear.map((slot) => {
          const { n, k } = slotMatrix(slot);
          return scratchBytes(n, k);
        }),
      );
      const scratch = bytes > 0 ? owned.alloc(bytes) : null;
      for (const slot of linear) {
        const { n, k } = slotMatrix(slot);
        const seedOf = bufferSeed(seed, slots.indexOf(slot));
        weights.set(
          slot.key,
          randomInt4Weight(
            backend,
            (size) => owned.alloc(size),
            ops.fillRandom,
            n,
            k,
            seedOf,
            RANDOM_HALF_WIDTH,
            scratch,
          ),
        );
        owned.release(buffers.get(slot.key)!);
        buffers.delete(slot.key);
      }
      stream.synchronize();
    }
  } catch (error) {
    // Let queued fills finish before their buffers go back to the allocator.
    try {
      stream.synchronize();
    } catch { /* the original error is the one to report */ }
    owned.freeAll();
    throw error;
  }
  return assemble(config, owned, buffers, weights);
}
