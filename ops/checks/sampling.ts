/**
 * The sampling family's argument checks, shared by the CPU reference (ops/cpu/sampling.ts) and
 * the GPU launchers (ops/gpu/sampling.ts), so every implementation rejects the same calls with
 * the same messages.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { checkBuffer } from "./common.ts";
import { bitmaskWords, type SamplingBuffers } from "../ops.ts";

/** Largest vocabulary: indices and per-block loops stay well inside 32-bit integers. */
export const MAX_VOCAB = 2 ** 30;
/** Largest batch: the grid's x dimension. */
const MAX_BATCH = 0x7fffffff;
/** Most top log-probabilities `logprobs` returns per row (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;
/** Most penalty entries: the kernel's i32 count. */
const MAX_PENALTY_ENTRIES = 0x7fffffff;

/** Throws unless `value` is an integer in 1..max. */
function checkCount(op: string, name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`${op}: ${name} must be an integer in 1..${max}, got ${value}`);
  }
}

/** batch and vocab of a [batch, vocab] logits op. */
function checkRows(op: string, batch: number, vocab: number): void {
  checkCount(op, "batch", batch, MAX_BATCH);
  checkCount(op, "vocab", vocab, MAX_VOCAB);
}

/** The checks of `argmax`. */
export function checkArgmax(
  ids: DeviceBuffer,
  logits: DeviceBuffer,
  batch: number,
  vocab: number,
): void {
  checkRows("argmax", batch, vocab);
  checkBuffer("argmax", "ids", ids, 4 * batch, 4, "batch i32");
  checkBuffer("argmax", "logits", logits, 4 * batch * vocab, 4, "batch × vocab f32");
}

/** The checks of `logSoftmax`. */
export function checkLogSoftmax(
  out: DeviceBuffer,
  logits: DeviceBuffer,
  batch: number,
  vocab: number,
): void {
  checkRows("logSoftmax", batch, vocab);
  checkBuffer("logSoftmax", "out", out, 4 * batch * vocab, 4, "batch × vocab f32");
  checkBuffer("logSoftmax", "logits", logits, 4 * batch * vocab, 4, "batch × vocab f32");
}

/** Throws unless `count` is a valid i32 entry count (0 included). */
function checkEntryCount(op: string, count: number): void {
  if (!Number.isInteger(count) || count < 0 || count > MAX_PENALTY_ENTRIES) {
    throw new RangeError(
      `${op}: count must be an integer in 0..${MAX_PENALTY_ENTRIES}, got ${count}`,
    );
  }
}

/** The checks of `applyPenalties` (the entries' contents are checked by the CPU op alone). */
export function checkApplyPenalties(
  logits: DeviceBuffer,
  entries: DeviceBuffer,
  count: number,
  penalties: DeviceBuffer,
  batch: number,
  vocab: number,
): void {
  checkApplyLogitEdits(logits, entries, count, batch, vocab, "applyPenalties");
  checkBuffer("applyPenalties", "penalties", penalties, 12 * batch, 4, "batch × 3 f32");
}

/**
 * The checks of `applyLogitEdits`: [batch, vocab] f32 logits edited in place by `count`
 * (row, token, value) i32 triples. `applyPenalties` runs them too, under its own `op` name (the
 * entries' contents are checked by the CPU op alone).
 */
export function checkApplyLogitEdits(
  logits: DeviceBuffer,
  entries: DeviceBuffer,
  count: number,
  batch: number,
  vocab: number,
  op = "applyLogitEdits",
): void {
  checkRows(op, batch, vocab);
  checkEntryCount(op, count);
  checkBuffer(op, "logits", logits, 4 * batch * vocab, 4, "batch × vocab f32");
  checkBuffer(op, "entries", entries, 12 * count, 4, "count × 3 i32");
}

/** The checks of `applyTokenBitmask` (the rows' values are checked by the CPU op alone). */
export function checkApplyTokenBitmask(
  logits: DeviceBuffer,
  masks: DeviceBuffer,
  rows: DeviceBuffer,
  count: number,
  batch: number,
  vocab: number,
): void {
  checkRows("applyTokenBitmask", batch, vocab);
  if (!Number.isInteger(count) || count < 0 || count > batch) {
    throw new RangeError(
      `applyTokenBitmask: count must be an integer in 0..${batch}, got ${count}`,
    );
  }
  const words = bitmaskWords(vocab);
  checkBuffer("applyTokenBitmask", "logits", logits, 4 * batch * vocab, 4, "batch × vocab f32");
  checkBuffer("applyTokenBitmask", "masks", masks, 4 * count * words, 4, "count × ⌈vocab/32⌉ i32");
  checkBuffer("applyTokenBitmask", "rows", rows, 4 * count, 4, "count i32");
}

/**
 * The checks of `logprobs`. n may not exceed vocab, as a row has no more than vocab entries to
 * rank (the ids' values are checked by the CPU op alone).
 */
export function checkLogprobs(
  chosen: DeviceBuffer,
  topIds: DeviceBuffer,
  topValues: DeviceBuffer,
  logits: DeviceBuffer,
  ids: DeviceBuffer,
  batch: number,
  vocab: number,
  n: number,
): void {
  checkRows("logprobs", batch, vocab);
  const maxN = Math.min(MAX_TOP_LOGPROBS, vocab);
  if (!Number.isInteger(n) || n < 0 || n > maxN) {
    throw new RangeError(`logprobs: n must be an integer in 0..${maxN}, got ${n}`);
  }
  checkBuffer("logprobs", "chosen", chosen, 4 * batch, 4, "batch f32");
  checkBuffer("logprobs", "topIds", topIds, 4 * batch * n, 4, "batch × n i32");
  checkBuffer("logprobs", "topValues", topValues, 4 * batch * n, 4, "batch × n f32");
  checkBuffer("logprobs", "logits", logits, 2 * batch * vocab, 2, "batch × vocab bf16");
  checkBuffer("logprobs", "ids", ids, 4 * batch, 4, "batch i32");
}

/** The checks of the sizes `sampleWorkspaceBytes` takes. */
export function checkSampleSizes(batch: number, vocab: number): void {
  checkRows("sample", batch, vocab);
}

/** The checks of `sample`; `workspaceBytes` is what the backend's sampleWorkspaceBytes asks. */
export function checkSample(
  ids: DeviceBuffer,
  logits: DeviceBuffer,
  params: SamplingBuffers,
  batch: number,
  vocab: number,
  workspace: DeviceBuffer,
  workspaceBytes: number,
): void {
  checkSampleSizes(batch, vocab);
  checkBuffer("sample", "ids", ids, 4 * batch, 4, "batch i32");
  checkBuffer("sample", "logits", logits, 4 * batch * vocab, 4, "batch × vocab f32");
  checkBuffer("sample", "params.temperature", params.temperature, 4 * batch, 4, "batch f32");
  checkBuffer("sample", "params.topK", params.topK, 4 * batch, 4, "batch i32");
  checkBuffer("sample", "params.topP", params.topP, 4 * batch, 4, "batch f32");
  checkBuffer("sample", "params.minP", params.minP, 4 * batch, 4, "batch f32");
  checkBuffer("sample", "params.seed", params.seed, 8 * batch, 8, "batch u64");
  checkBuffer("sample", "params.step", params.step, 4 * batch, 4, "batch i32");
  checkBuffer("sample", "workspace", workspace, workspaceBytes, 4, "sampleWorkspaceBytes");
}
