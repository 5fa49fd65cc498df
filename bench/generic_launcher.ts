/**
 * A deliberately generic launcher, the Triton 2.2/2.3 shape the seed issue complains about: on
 * every call it walks the signature, builds a string specialisation key, looks the variant up in
 * a Map, and packs fresh argument arrays. It exists only so bench/launch_bench.ts can show what
 * the generated closures save; nothing in Denali uses it.
 *
 * @module
 */

import type { LaunchAbi, Stream } from "../backends/backend.ts";
import { type KernelSignature, packLayout } from "../kernels/signature.ts";

/** Builds a launcher that does all of its work per call. */
export function createGenericLauncher(
  abi: LaunchAbi,
  signature: KernelSignature,
  variants: Map<string, Deno.PointerValue>,
): (grid: number[], block: number[], stream: Stream, args: Record<string, unknown>) => void {
  return (grid, block, stream, args) => {
    const { offsets, size } = packLayout(signature.params);
    const buffer = new ArrayBuffer(size);
    const view = new DataView(buffer);
    const keyParts: string[] = [];
    signature.params.forEach((param, i) => {
      const value = args[param.name];
      if (value === undefined) throw new TypeError(`missing argument ${param.name}`);
      switch (param.type) {
        case "ptr":
        case "u64":
          view.setBigUint64(offsets[i], BigInt(value as number), true);
          keyParts.push(Number(value) % 16 === 0 ? "D" : "");
          break;
        case "i64":
          view.setBigInt64(offsets[i], BigInt(value as number), true);
          keyParts.push("");
          break;
        case "i32":
          view.setInt32(offsets[i], value as number, true);
          keyParts.push(value === 1 ? "1" : (value as number) % 16 === 0 ? "D" : "");
          break;
        case "u32":
          view.setUint32(offsets[i], value as number, true);
          keyParts.push(value === 1 ? "1" : (value as number) % 16 === 0 ? "D" : "");
          break;
        case "f32":
          view.setFloat32(offsets[i], value as number, true);
          keyParts.push("f");
          break;
        default:
          view.setUint16(offsets[i], value as number, true);
          keyParts.push("h");
      }
    });
    const fn = variants.get(keyParts.join(",")) ?? variants.get("");
    const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
    const pointers = new BigUint64Array(offsets.map((offset) => base + BigInt(offset)));
    const rc = abi.launchKernel(
      fn ?? null,
      grid[0],
      grid[1],
      grid[2],
      block[0],
      block[1],
      block[2],
      0,
      stream.native,
      Deno.UnsafePointer.of(pointers),
      null,
    );
    if (rc !== 0) abi.fail(rc, abi.launchCallName);
  };
}
