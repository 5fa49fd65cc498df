/**
 * Loading the linear weights of 4-bit checkpoints (AWQ, GPTQ; models/quantization_int4.ts)
 * into Denali's {@link AwqWeight} layout (backends/awq.ts). Per Linear the checkpoint has
 * `qweight`, `qzeros` and `scales` (GPTQ also `g_idx`) in place of `weight`; the parts of a
 * fused slot (q, k and v; gate and up) are stacked by output rows, as bf16 slots are. The
 * conversion runs on the host, one part at a time, with every shape and dtype checked first.
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../backends/backend.ts";
import {
  AWQ_UNPACK_NIBBLE,
  awqCodesToRows,
  groupsToRows,
  plainWordToCodes,
} from "../backends/awq.ts";
import type { AwqWeight } from "../ops/linear_weight.ts";
import type { ModelOps } from "../ops/ops.ts";
import type { WeightPart, WeightSlot } from "./model.ts";
import type { Int4Checkpoint } from "./quantization_int4.ts";
import { readTensor, type SafetensorsHeader, type SafetensorsTensor } from "./safetensors.ts";

/** The checkpoint as the loader resolved it: where each tensor is, and the files' headers. */
export interface Int4Source {
  /** The file a tensor is in, or undefined when the checkpoint lacks it. */
  fileOf(name: string): string | undefined;
  /** Headers by path. */
  readonly headers: Map<string, SafetensorsHeader>;
}

/** A problem with one tensor; the loader turns it into its WeightsError. */
export type Int4Fail = (file: string, tensor: string, message: string) => never;

/** The tensor names a 4-bit checkpoint holds for `part` (a `<prefix>.weight`). */
export function int4TensorNames(part: WeightPart, scheme: Int4Checkpoint): string[] {
  const prefix = part.name.replace(/\.weight$/, "");
  const names = [`${prefix}.qweight`, `${prefix}.qzeros`, `${prefix}.scales`];
  return scheme.method === "gptq" ? [...names, `${prefix}.g_idx`] : names;
}

interface Found {
  readonly file: string;
  readonly tensor: SafetensorsTensor;
}

function find(source: Int4Source, name: string, fail: Int4Fail, required: boolean): Found | null {
  const file = source.fileOf(name);
  const tensor = file === undefined ? undefined : source.headers.get(file)?.tensors.get(name);
  if (file === undefined || tensor === undefined) {
    if (!required) return null;
    return fail(
      file ?? name,
      name,
      "missing: config.json's quantization_config says the decoder's linear weights are 4-bit, " +
        "so each needs qweight, qzeros and scales; the download is incomplete, or the checkpoint " +
        "keeps some linear layers unquantized (modules_to_not_convert), which Denali does not run",
    );
  }
  return { file, tensor };
}

function expect(found: Found, dtypes: readonly string[], shape: number[], fail: Int4Fail): void {
  const { file, tensor } = found;
  if (!dtypes.includes(tensor.dtype)) {
    fail(file, tensor.name, `dtype ${tensor.dtype}, expected ${dtypes.join(" or ")}`);
  }
  const same = tensor.shape.length === shape.length && tensor.shape.every((d, i) => d === shape[i]);
  if (!same) {
    fail(
      file,
      tensor.name,
      `shape [${tensor.shape.join(", ")}], expected [${shape.join(", ")}] for a 4-bit weight of ` +
        "the size config.json gives; the checkpoint does not match its config.json, or its " +
        "quantization_config (group_size, quant_method) is not the one it was made with",
    );
  }
}

/** The part's tensors, found and checked; throws through `fail` on the first problem. */
function partTensors(
  source: Int4Source,
  part: WeightPart,
  scheme: Int4Checkpoint,
  fail: Int4Fail,
): { qweight: Found; qzeros: Found; scales: Found; gIdx: Found | null } {
  const [n, k] = part.shape;
  const g = scheme.groupSize;
  if (k % g !== 0 || n % 8 !== 0) {
    fail(
      part.name,
      part.name,
      `a [${n}, ${k}] linear cannot be 4-bit with group size ${g}: its inputs must be a ` +
        `multiple of ${g} and its outputs of 8`,
    );
  }
  const [qwName, qzName, scName, gName] = int4TensorNames(part, scheme);
  const qweight = find(source, qwName, fail, true)!;
  const qzeros = find(source, qzName, fail, true)!;
  const scales = find(source, scName, fail, true)!;
  expect(qweight, ["I32"], scheme.method === "awq" ? [k, n / 8] : [k / 8, n], fail);
  expect(qzeros, ["I32"], [k / g, n / 8], fail);
  expect(scales, ["F16", "BF16", "F32"], [k / g, n], fail);
  const gIdx = gName === undefined ? null : find(source, gName, fail, false);
  if (gIdx) expect(gIdx, ["I32"], [k], fail);
  return { qweight, qzeros, scales, gIdx };
}

function int32s(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
}

function floats(dtype: string, bytes: Uint8Array): Float32Array {
  if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  if (dtype === "F16") {
    return Float32Array.from(new Float16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
  }
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
  const words = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) words[i] = halves[i] << 16;
  return new Float32Array(words.buffer);
}

async function read(source: Int4Source, found: Found): Promise<Uint8Array> {
  return await readTensor(source.headers.get(found.file)!, found.tensor.name);
}

/** Checks every part of `slots` (names, dtypes, shapes) before anything is allocated. */
export function checkInt4Slots(
  source: Int4Source,
  slots: readonly WeightSlot[],
  scheme: Int4Checkpoint,
  fail: Int4Fail,
): void {
  for (const slot of slots) for (const part of slot.parts) partTensors(source, part, scheme, fail);
}

/**
 * Reads the 4-bit slots from the checkpoint, converts them to Denali's layout and copies them
 * to buffers from `alloc`; every weight shares `scratch`.
 */
export async function loadInt4Slots(
  backend: Backend,
  alloc: (bytes: number) => DeviceBuffer,
  source: Int4Source,
  slots: readonly WeightSlot[],
  scheme: Int4Checkpoint,
  scratch: DeviceBuffer | null,
  fail: Int4Fail,
): Promise<Map<string, AwqWeight>> {
  const out = new Map<string, AwqWeight>();
  const g = scheme.groupSize;
  for (const slot of slots) {
    const n = slot.parts.reduce((sum, p) => sum + p.shape[0], 0), k = slot.parts[0].shape[1];
    const groups = k / g;
    const codes = new Uint32Array(n * k / 8);
    const zeros = new Uint8Array(n * groups);
    const scales = new Float32Array(n * groups);
    let row = 0;
    for (const part of slot.parts) {
      const nPart = part.shape[0];
      const t = partTensors(source, part, scheme, fail);
      const qweight = int32s(await read(source, t.qweight));
      if (scheme.method === "awq") awqCodesToRows(qweight, k, nPart, codes, row);
      else {
        // GPTQ packs along k in plain nibble order: word [j, n] is Denali's word [n, j] once its
        // nibbles are interleaved.
        for (let j = 0; j < k / 8; j++) {
          for (let c = 0; c < nPart; c++) {
            codes[(row + c) * (k / 8) + j] = plainWordToCodes(qweight[j * nPart + c]);
          }
        }
      }
      const packedZeros = int32s(await read(source, t.qzeros));
      const zeroValues = new Uint8Array(groups * nPart);
      for (let i = 0; i < zeroValues.length; i++) {
        const word = packedZeros[i >>> 3], c = i & 7;
        // AWQ interleaves the 8 columns of a word; GPTQ packs them in order.
        const nibble = scheme.method === "awq" ? AWQ_UNPACK_NIBBLE[c] : c;
        zeroValues[i] = (((word >>> (4 * nibble)) & 15) + scheme.zeroOffset) & 15;
      }
      groupsToRows(zeroValues, groups, nPart, zeros, row);
      const scaleValues = floats(t.scales.tensor.dtype, await read(source, t.scales));
      const bad = scaleValues.findIndex((s) => !Number.isFinite(s));
      if (bad >= 0) {
        fail(
          t.scales.file,
          t.scales.tensor.name,
          `element ${bad} is ${scaleValues[bad]}; scales must be finite: the checkpoint is corrupt`,
        );
      }
      groupsToRows(scaleValues, groups, nPart, scales, row);
      if (t.gIdx) {
        const gIdx = int32s(await read(source, t.gIdx));
        const odd = gIdx.findIndex((value, i) => value !== Math.floor(i / g));
        if (odd >= 0) {
          fail(
            t.gIdx.file,
            t.gIdx.tensor.name,
            `g_idx[${odd}] = ${gIdx[odd]}, not ${Math.floor(odd / g)}: the weight is stored in ` +
              "act-order (desc_act), which Denali does not run; use a checkpoint made with " +
              "desc_act false",
          );
        }
      }
      row += nPart;
    }
    const weight: AwqWeight = {
      format: "awq-int4",
      codes: alloc(codes.byteLength),
      zeros: alloc(zeros.byteLength),
      scales: alloc(scales.byteLength),
      groupSize: g,
      scratch,
    };
    backend.copyToDevice(weight.codes, new Uint8Array(codes.buffer));
    backend.copyToDevice(weight.zeros, zeros);
    backend.copyToDevice(weight.scales, new Uint8Array(scales.buffer));
    out.set(slot.key, weight);
  }
  return out;
}

/**
 * A random 4-bit weight [n, k] (group 128) for benchmarks: codes of seeded random bits
 * (`fillRandom` over the codes' bytes), zero points 8, and one scale `halfWidth` / 8 for every
 * group, so the weights lie in [-halfWidth, halfWidth) as random bf16 ones do.
 */
export function randomInt4Weight(
  backend: Backend,
  alloc: (bytes: number) => DeviceBuffer,
  fillRandom: ModelOps["fillRandom"],
  n: number,
  k: number,
  seed: number,
  halfWidth: number,
  scratch: DeviceBuffer | null,
): AwqWeight {
  const groupSize = 128, groups = n * k / groupSize;
  const weight: AwqWeight = {
    format: "awq-int4",
    codes: alloc(n * k / 2),
    zeros: alloc(groups),
    scales: alloc(4 * groups),
    groupSize,
    scratch,
  };
  fillRandom(weight.codes, n * k / 4, seed, 1, backend.defaultStream);
  backend.copyToDevice(weight.zeros, new Uint8Array(groups).fill(8));
  backend.copyToDevice(
    weight.scales,
    new Uint8Array(new Float32Array(groups).fill(halfWidth / 8).buffer),
  );
  return weight;
}
