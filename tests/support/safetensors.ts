/**
 * A safetensors writer for tests, written from the format's description rather than from
 * models/safetensors.ts, so the reader's tests and the loaders' tests read files it did not make.
 *
 * @module
 */

/** One tensor as a safetensors file stores it: the dtype's name, the shape, raw LE bytes. */
export interface SafetensorsTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/**
 * The bytes of a safetensors file: u64 LE header length, the JSON header (with `__metadata__`
 * when given) padded with spaces to a multiple of `pad`, then each tensor's data in order.
 */
export function safetensorsBytes(
  tensors: Iterable<readonly [string, SafetensorsTensor]>,
  metadata?: Record<string, string>,
  pad = 8,
): Uint8Array {
  const list = [...tensors];
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const [name, { dtype, shape, data }] of list) {
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.length] };
    offset += data.length;
  }
  let json = JSON.stringify(header);
  while (json.length % pad !== 0) json += " ";
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  let at = 8 + text.length;
  for (const [, { data }] of list) {
    out.set(data, at);
    at += data.length;
  }
  return out;
}
