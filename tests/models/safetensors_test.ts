/**
 * The safetensors reader against files written byte by byte here: header fields, absolute
 * offsets, chunked reads, and every malformed or truncated file it must refuse by name.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  parseSafetensorsHeader,
  readSafetensorsHeader,
  readTensor,
  readTensorRange,
  SafetensorsError,
} from "../../models/safetensors.ts";
import { safetensorsBytes } from "../support/safetensors.ts";

/** A file from a raw JSON header (for malformed entries) and `dataBytes` bytes of data. */
function buildRaw(json: string, dataBytes: number): Uint8Array {
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  return out;
}

function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice();
}

const F32 = bytesOf(new Float32Array([1, -2, 3.5, 0.25, 8, -16]));
const BF16 = bytesOf(new Uint16Array([0x3f80, 0xc000, 0x4060]));
const I8 = new Uint8Array([1, 2, 3, 4]);

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denali_st_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Asserts a SafetensorsError naming `file` (and `tensor`, if given) and every fragment. */
async function assertFails(
  promise: Promise<unknown>,
  file: string,
  tensor: string | null,
  ...fragments: string[]
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SafetensorsError, `expected a SafetensorsError, got ${error}`);
    assert.equal(error.file, file);
    assert.equal(error.tensor, tensor);
    assert.ok(error.message.startsWith(file), error.message);
    if (tensor) assert.ok(error.message.includes(`'${tensor}'`), error.message);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `'${fragment}' not in: ${error.message}`);
    }
    return true;
  });
}

Deno.test("safetensors: header fields, absolute offsets and metadata", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    const file = safetensorsBytes([
      ["a", { dtype: "F32", shape: [2, 3], data: F32 }],
      ["b.weight", { dtype: "BF16", shape: [3], data: BF16 }],
      ["scalar", { dtype: "I8", shape: [], data: I8.slice(0, 1) }],
      ["empty", { dtype: "F16", shape: [0, 4], data: new Uint8Array(0) }],
    ], { format: "pt" });
    await Deno.writeFile(path, file);
    const header = await readSafetensorsHeader(path);
    const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
    assert.equal(header.path, path);
    assert.equal(header.fileSize, file.length);
    assert.equal(header.dataOffset, 8 + headerLength);
    assert.deepEqual(header.metadata, { format: "pt" });
    assert.deepEqual([...header.tensors.keys()], ["a", "b.weight", "scalar", "empty"]);
    assert.deepEqual(header.tensors.get("a"), {
      name: "a",
      dtype: "F32",
      shape: [2, 3],
      offset: 8 + headerLength,
      bytes: 24,
    });
    assert.equal(header.tensors.get("b.weight")!.offset, 8 + headerLength + 24);
    assert.equal(header.tensors.get("scalar")!.bytes, 1);
    assert.equal(header.tensors.get("empty")!.bytes, 0);
    assert.deepEqual(await readTensor(header, "a"), F32);
    assert.deepEqual(await readTensor(header, "b.weight"), BF16);
    assert.deepEqual(await readTensor(header, "scalar"), I8.slice(0, 1));
    assert.deepEqual(await readTensor(header, "empty"), new Uint8Array(0));
    await assertFails(readTensor(header, "nope"), path, "nope", "no such tensor");
  });
});

Deno.test("safetensors: readTensorRange reads a tensor in chunks into one buffer", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/x.safetensors`;
    const big = new Uint8Array(1000).map((_, i) => (i * 37 + 11) & 0xff);
    await Deno.writeFile(
      path,
      safetensorsBytes([
        ["pad", { dtype: "U8", shape: [3], data: new Uint8Array([9, 9, 9]) }],
        ["big", { dtype: "U8", shape: [10, 100], data: big }],
      ]),
    );
    const header = await readSafetensorsHeader(path);
    const tensor = header.tensors.get("big")!;
    const file = await Deno.open(path);
    try {
      const chunk = new Uint8Array(64);
      const seen = new Uint8Array(1000);
      for (let start = 0; start < 1000; start += 64) {
        const part = chunk.subarray(0, Math.min(64, 1000 - start));
        await readTensorRange(file, header, tensor, start, part);
        seen.set(part, start);
      }
      assert.deepEqual(seen, big);
      await assert.rejects(
        readTensorRange(file, header, tensor, 990, chunk.subarray(0, 11)),
        RangeError,
      );
    } finally {
      file.close();
    }
  });
});

Deno.test("safetensors: unknown dtypes are kept for the loader to refuse by name", () => {
  const json = JSON.stringify({ q: { dtype: "Q4_K", shape: [32], data_offsets: [0, 18] } });
  const bytes = new TextEncoder().encode(json);
  const header = parseSafetensorsHeader(bytes, "q.safetensors", 8 + bytes.length + 18);
  assert.equal(header.tensors.get("q")!.dtype, "Q4_K");
  assert.equal(header.tensors.get("q")!.bytes, 18);
});

Deno.test("safetensors: a truncated file names the file and the tensor it cuts into", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/model-00001-of-00002.safetensors`;
    const file = safetensorsBytes([
      ["a", { dtype: "F32", shape: [2, 3], data: F32 }],
      ["b.weight", { dtype: "BF16", shape: [3], data: BF16 }],
    ]);
    await Deno.writeFile(path, file.subarray(0, file.length - 3));
    await assertFails(readSafetensorsHeader(path), path, "b.weight", "truncated", "re-download");

    // Cut after the header was read: the short read names the tensor too.
    await Deno.writeFile(path, file);
    const header = await readSafetensorsHeader(path);
    await Deno.truncate(path, file.length - 2);
    await assertFails(readTensor(header, "b.weight"), path, "b.weight", "2 bytes short");
  });
});

Deno.test("safetensors: broken headers are refused with the file's name", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    const write = (bytes: Uint8Array) => Deno.writeFile(path, bytes);

    await write(new Uint8Array(5));
    await assertFails(readSafetensorsHeader(path), path, null, "too short", "truncated");

    const huge = safetensorsBytes([["a", { dtype: "F32", shape: [2, 3], data: F32 }]]);
    new DataView(huge.buffer).setBigUint64(0, BigInt(huge.length), true);
    await write(huge);
    await assertFails(readSafetensorsHeader(path), path, null, "header length", "past the end");

    const overLimit = new Uint8Array(8);
    new DataView(overLimit.buffer).setBigUint64(0, 2n ** 63n, true);
    await write(overLimit);
    await assertFails(readSafetensorsHeader(path), path, null, "header length");

    await write(buildRaw("{not json", 0));
    await assertFails(readSafetensorsHeader(path), path, null, "not valid JSON");

    await write(buildRaw("[1, 2]", 0));
    await assertFails(readSafetensorsHeader(path), path, null, "not a JSON object");

    const wrongSize = { w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 20] } };
    await write(buildRaw(JSON.stringify(wrongSize), 24));
    await assertFails(readSafetensorsHeader(path), path, "w", "hold 20 bytes", "needs 24");

    const backwards = { w: { dtype: "U8", shape: [0], data_offsets: [4, 0] } };
    await write(buildRaw(JSON.stringify(backwards), 4));
    await assertFails(readSafetensorsHeader(path), path, "w", "end before they begin");

    const badShape = { w: { dtype: "U8", shape: [-1], data_offsets: [0, 0] } };
    await write(buildRaw(JSON.stringify(badShape), 0));
    await assertFails(readSafetensorsHeader(path), path, "w", "shape");

    const badMeta = { __metadata__: { n: 1 } };
    await write(buildRaw(JSON.stringify(badMeta), 0));
    await assertFails(readSafetensorsHeader(path), path, null, "__metadata__");

    await assertFails(
      readSafetensorsHeader(`${dir}/absent.safetensors`),
      `${dir}/absent.safetensors`,
      null,
      "not found",
    );
  });
});
