/**
 * The safetensors format, read without loading the file: an 8-byte little-endian header length,
 * a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then
 * the data section, where each tensor's bytes sit at `8 + headerLength + begin`.
 *
 * The header is checked against the file's size when it is read, so a truncated download is
 * reported up front, naming the file and the first tensor it cuts into, rather than as a short
 * read minutes into a load. Tensor bytes are read through a file handle into a caller's buffer,
 * a range at a time, so no more than that buffer is ever held in memory.
 *
 * @module
 */

/** Bytes per element of each safetensors dtype. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** The safetensors specification caps the header at 100 MB; more means a corrupt length. */
const MAX_HEADER_BYTES = 100_000_000;

/** One tensor as its header entry describes it. */
export interface SafetensorsTensor {
  /** The tensor's name, e.g. "model.layers.0.self_attn.q_proj.weight". */
  readonly name: string;
  /** Its safetensors dtype, e.g. "BF16"; see {@link DTYPE_BYTES}. */
  readonly dtype: string;
  /** Its dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Absolute byte offset of its first byte in the file. */
  readonly offset: number;
  /** Its length in bytes. */
  readonly bytes: number;
}

/** A parsed, size-checked safetensors header. */
export interface SafetensorsHeader {
  /** The file it was read from. */
  readonly path: string;
  /** The file's size in bytes. */
  readonly fileSize: number;
  /** Absolute offset of the data section (8 + header length). */
  readonly dataOffset: number;
  /** The tensors by name, in header order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** The free-form `__metadata__` strings (e.g. `{"format": "pt"}`), or an empty object. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** A malformed or truncated safetensors file. `file` and, where known, `tensor` say where. */
export class SafetensorsError extends Error {
  /** The safetensors file concerned. */
  readonly file: string;
  /** The tensor concerned, or null when the problem is the file as a whole. */
  readonly tensor: string | null;

  /**
   * An error about `file` (and `tensor`), its message prefixed with both.
   *
   * @param file the safetensors file concerned
   * @param tensor the tensor concerned, or null
   * @param message what is wrong and, where there is one, the remedy
   */
  constructor(file: string, tensor: string | null, message: string) {
    super(tensor === null ? `${file}: ${message}` : `${file}: tensor '${tensor}': ${message}`);
    this.name = "SafetensorsError";
    this.file = file;
    this.tensor = tensor;
  }
}

const TRUNCATED = "the file is truncated; re-download it";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Parses the JSON header of a safetensors file. `headerBytes` are the bytes after the length
 * prefix; `fileSize` the whole file's size, which every tensor's range must fit in.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  path: string,
  fileSize: number,
): SafetensorsHeader {
  const dataOffset = 8 + headerBytes.length;
  let json: string;
  try {
    json = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(path, null, "the header is not UTF-8: the file is corrupt");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw new SafetensorsError(
      path,
      null,
      `the header is not valid JSON (${(error as Error).message}); ` +
        "the file is corrupt or not safetensors",
    );
  }
  if (!isObject(parsed)) {
    throw new SafetensorsError(path, null, "the header is not a JSON object");
  }
  const dataBytes = fileSize - dataOffset;
  const tensors = new Map<string, SafetensorsTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === "string")) {
        throw new SafetensorsError(path, null, "__metadata__ must map names to strings");
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    tensors.set(name, tensorEntry(path, name, entry, dataOffset, dataBytes));
  }
  return { path, fileSize, dataOffset, tensors, metadata };
}

function tensorEntry(
  path: string,
  name: string,
  entry: unknown,
  dataOffset: number,
  dataBytes: number,
): SafetensorsTensor {
  const fail = (message: string): never => {
    throw new SafetensorsError(path, name, message);
  };
  if (!isObject(entry)) fail("the header entry is not an object");
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== "string") fail(`dtype must be a string, found ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    fail(`shape must be a list of sizes, found ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    fail(`data_offsets must be [begin, end], found ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as number[];
  if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`);
  const dims = shape as number[];
  const elementBytes = DTYPE_BYTES[dtype as string];
  // Unknown dtypes are kept (the loader refuses them by name); only known ones can be sized.
  if (elementBytes !== undefined) {
    const expected = dims.reduce((a, b) => a * b, 1) * elementBytes;
    if (end - begin !== expected) {
      fail(
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but ${dtype} ` +
          `[${dims.join(", ")}] needs ${expected}; the file is corrupt`,
      );
    }
  }
  if (end > dataBytes) {
    fail(
      `its data ends at byte ${dataOffset + end} but the file has only ` +
        `${dataOffset + Math.max(dataBytes, 0)}: ${TRUNCATED}`,
    );
  }
  return {
    name,
    dtype: dtype as string,
    shape: dims,
    offset: dataOffset + begin,
    bytes: end - begin,
  };
}

/** Fills `dst` from `file` at absolute `position`; EOF first is a truncation error. */
async function readExactly(
  file: Deno.FsFile,
  position: number,
  dst: Uint8Array,
  path: string,
  tensor: string | null,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let done = 0;
  while (done < dst.length) {
    const n = await file.read(dst.subarray(done));
    if (n === null) {
      throw new SafetensorsError(
        path,
        tensor,
        `the file ended at byte ${position + done}, ${dst.length - done} bytes short: ${TRUNCATED}`,
      );
    }
    done += n;
  }
}

/** Reads and checks the header of the safetensors file at `path`, without reading any tensor. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound ? "not found" : (error as Error).message;
    throw new SafetensorsError(path, null, `cannot be opened: ${why}`);
  }
  try {
    const fileSize = (await file.stat()).size;
    if (fileSize < 8) {
      throw new SafetensorsError(
        path,
        null,
        `only ${fileSize} bytes, too short for a safetensors header: ${TRUNCATED}`,
      );
    }
    const prefix = new Uint8Array(8);
    await readExactly(file, 0, prefix, path, null);
    const length = new DataView(prefix.buffer).getBigUint64(0, true);
    if (length > BigInt(fileSize - 8)) {
      throw new SafetensorsError(
        path,
        null,
        `the header length (${length} bytes) runs past the end of the ${fileSize}-byte file: ` +
          "the file is truncated or not safetensors; re-download it",
      );
    }
    if (length > BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(
        path,
        null,
        `the header length (${length} bytes) exceeds the format's 100 MB limit: ` +
          "the file is corrupt or not safetensors",
      );
    }
    const headerBytes = new Uint8Array(Number(length));
    await readExactly(file, 8, headerBytes, path, null);
    return parseSafetensorsHeader(headerBytes, path, fileSize);
  } finally {
    file.close();
  }
}

/**
 * Reads `dst.length` bytes of `tensor`, starting `start` bytes into it, from `file` (an open
 * handle on `header.path`). Loaders call it with one reused buffer, chunk after chunk.
 */
export async function readTensorRange(
  file: Deno.FsFile,
  header: SafetensorsHeader,
  tensor: SafetensorsTensor,
  start: number,
  dst: Uint8Array,
): Promise<void> {
  if (!isCount(start) || start + dst.length > tensor.bytes) {
    throw new RangeError(
      `readTensorRange: bytes [${start}, ${start + dst.length}) lie outside tensor ` +
        `'${tensor.name}' (${tensor.bytes} bytes)`,
    );
  }
  await readExactly(file, tensor.offset + start, dst, header.path, tensor.name);
}

/**
 * Reads one whole tensor into a new buffer, for tools and tests; loaders stream with
 * {@link readTensorRange} instead.
 */
export async function readTensor(header: SafetensorsHeader, name: string): Promise<Uint8Array> {
  const tensor = header.tensors.get(name);
  if (!tensor) throw new SafetensorsError(header.path, name, "no such tensor in this file");
  const file = await Deno.open(header.path, { read: true });
  try {
    const out = new Uint8Array(tensor.bytes);
    await readTensorRange(file, header, tensor, 0, out);
    return out;
  } finally {
    file.close();
  }
}
