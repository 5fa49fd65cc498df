/**
 * The attention family's argument checks, shared by the CPU reference (ops/cpu/attention.ts) and the GPU launchers
 * (ops/gpu/attention.ts), so every implementation rejects the same calls with the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { checkPositive } from "./common.ts";
import {
  type AttentionShape,
  type DecodeAttentionArgs,
  kvElementBytes,
  type PrefillAttentionArgs,
} from "../ops.ts";

/** The most slots the kernels address (slots and block ids are i32). */
const MAX_SLOTS = 2 ** 31 - 1;

function holds(op: string, name: string, buffer: DeviceBuffer, bytes: number, what: string) {
  if (buffer.bytes < bytes) {
    throw new RangeError(
      `${op}: ${name} has ${buffer.bytes} bytes, needs ${bytes} (${what})`,
    );
  }
}

/** Checks an AttentionShape's fields; throws RangeError naming `op` and the field. */
export function checkAttentionShape(op: string, shape: AttentionShape): void {
  checkPositive(op, "shape.numHeads", shape.numHeads);
  checkPositive(op, "shape.numKvHeads", shape.numKvHeads);
  checkPositive(op, "shape.headDim", shape.headDim);
  checkPositive(op, "shape.blockSize", shape.blockSize);
  if (shape.numHeads % shape.numKvHeads !== 0) {
    throw new RangeError(
      `${op}: shape.numHeads (${shape.numHeads}) must be a multiple of shape.numKvHeads ` +
        `(${shape.numKvHeads})`,
    );
  }
  if (typeof shape.scale !== "number" || !Number.isFinite(shape.scale)) {
    throw new RangeError(`${op}: shape.scale must be a finite number, got ${shape.scale}`);
  }
  const dtype = shape.kvDtype;
  if (dtype !== undefined && dtype !== "bf16" && dtype !== "fp8") {
    throw new RangeError(`${op}: shape.kvDtype must be "bf16" or "fp8", got ${dtype}`);
  }
  kvScale(op, "shape.kScale", shape.kScale);
  kvScale(op, "shape.vScale", shape.vScale);
}

function kvScale(op: string, name: string, value: number | undefined): void {
  // A zero, negative or infinite scale would turn every cached value into NaN or ±0.
  if (value !== undefined && !(value > 0 && Number.isFinite(value))) {
    throw new RangeError(`${op}: ${name} must be a positive finite number, got ${value}`);
  }
}

/**
 * Checks a KV cache pair against the shape and returns its block count (the smaller of the two
 * buffers decides; trailing bytes short of a block are unused).
 */
export function cacheBlocks(
  op: string,
  kCache: DeviceBuffer,
  vCache: DeviceBuffer,
  shape: AttentionShape,
): number {
  const blockBytes = shape.numKvHeads * shape.blockSize * shape.headDim *
    kvElementBytes(shape.kvDtype);
  holds(op, "kCache", kCache, blockBytes, "one cache block");
  holds(op, "vCache", vCache, blockBytes, "one cache block");
  const blocks = Math.floor(Math.min(kCache.bytes, vCache.bytes) / blockBytes);
  return Math.min(blocks, Math.floor(MAX_SLOTS / shape.blockSize));
}

/** Checks kvWrite's arguments (`op` names the caller in errors); returns the cache's block count. */
export function checkKvWrite(
  kCache: DeviceBuffer,
  vCache: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  slots: DeviceBuffer,
  tokens: number,
  shape: AttentionShape,
  op = "kvWrite",
): number {
  checkAttentionShape(op, shape);
  checkPositive(op, "tokens", tokens);
  const rowBytes = tokens * shape.numKvHeads * shape.headDim * 2;
  holds(op, "k", k, rowBytes, "tokens × numKvHeads × headDim bf16");
  holds(op, "v", v, rowBytes, "tokens × numKvHeads × headDim bf16");
  holds(op, "slots", slots, tokens * 4, "tokens i32");
  return cacheBlocks(op, kCache, vCache, shape);
}

/** Checks the sizes decodeWorkspaceBytes takes (shape, batch and maxContext). */
export function checkDecodeWorkspaceSizes(
  batch: number,
  maxContext: number,
  shape: AttentionShape,
): void {
  const op = "decodeWorkspaceBytes";
  checkAttentionShape(op, shape);
  checkPositive(op, "batch", batch);
  checkPositive(op, "maxContext", maxContext);
}

/**
 * Checks that q and out each hold `rows` query rows ([rows, numHeads, headDim] bf16); `what`
 * names that size, a literal so the hot path builds no string.
 */
function holdsQueryRows(
  op: string,
  out: DeviceBuffer,
  q: DeviceBuffer,
  rows: number,
  shape: AttentionShape,
  what: string,
): void {
  const bytes = rows * shape.numHeads * shape.headDim * 2;
  holds(op, "q", q, bytes, what);
  holds(op, "out", out, bytes, what);
}

/** Checks decodeAttention's arguments (all but the workspace); returns the cache's block count. */
export function checkDecode(args: DecodeAttentionArgs): number {
  const op = "decodeAttention";
  const { batch, maxBlocks, maxContext, shape } = args;
  checkAttentionShape(op, shape);
  checkPositive(op, "batch", batch);
  checkPositive(op, "maxBlocks", maxBlocks);
  checkPositive(op, "maxContext", maxContext);
  if (maxContext > maxBlocks * shape.blockSize) {
    throw new RangeError(
      `${op}: maxContext ${maxContext} exceeds maxBlocks × blockSize = ` +
        `${maxBlocks} × ${shape.blockSize}`,
    );
  }
  holdsQueryRows(op, args.out, args.q, batch, shape, "batch × numHeads × headDim bf16");
  holds(op, "blockTables", args.blockTables, batch * maxBlocks * 4, "batch × maxBlocks i32");
  holds(op, "contextLens", args.contextLens, batch * 4, "batch i32");
  return cacheBlocks(op, args.kCache, args.vCache, shape);
}

/** Checks prefillAttention's arguments; returns the cache's block count. */
export function checkPrefill(args: PrefillAttentionArgs): number {
  const op = "prefillAttention";
  const { seqs, tokens, maxBlocks, shape } = args;
  checkAttentionShape(op, shape);
  checkPositive(op, "seqs", seqs);
  checkPositive(op, "tokens", tokens);
  checkPositive(op, "maxBlocks", maxBlocks);
  holdsQueryRows(op, args.out, args.q, tokens, shape, "tokens × numHeads × headDim bf16");
  holds(op, "queryStarts", args.queryStarts, (seqs + 1) * 4, "seqs + 1 i32");
  holds(op, "contextLens", args.contextLens, seqs * 4, "seqs i32");
  holds(op, "blockTables", args.blockTables, seqs * maxBlocks * 4, "seqs × maxBlocks i32");
  return cacheBlocks(op, args.kCache, args.vCache, shape);
}
