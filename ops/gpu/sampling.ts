/**
 * The sampling family on a GPU: launchers over kernels/src/sampling.cu. Arguments are checked by
 * the same functions the CPU reference uses (ops/checks/sampling.ts); launch shapes are pure
 * arithmetic, so a call allocates nothing.
 *
 * Launch configurations: every row kernel runs one block of 1024 threads per row (grid = batch).
 * argmax and logSoftmax take their float4 variants on their own when vocab % 16 == 0 and the
 * pointers are 16-byte aligned. sample uses about 25 KiB of static shared memory per block and
 * a workspace of batch × vocab f32 (it keeps p there between its passes over the row). logprobs
 * reads its row 2 + n times (max, sum, then one pass per top entry). applyPenalties runs one
 * thread per entry (grid = ceil(count / 256), block 256) and launches nothing for count 0;
 * applyLogitEdits likewise; applyTokenBitmask one thread per (masked row, token): grid
 * (ceil(vocab / 256), count), block 256.
 *
 * @module
 */

import type { Backend } from "../../backends/backend.ts";
import {
  checkApplyLogitEdits,
  checkApplyPenalties,
  checkApplyTokenBitmask,
  checkArgmax,
  checkLogprobs,
  checkLogSoftmax,
  checkSample,
  checkSampleSizes,
} from "../checks/sampling.ts";
import type { SamplingOps } from "../ops.ts";
import { loadKernels } from "../../kernels/modules.ts";

/** Threads per block of every row kernel (the kernels assume exactly this many). */
const THREADS = 1024;
/** Threads per block of apply_penalties_f32 (its PENALTY_THREADS). */
const PENALTY_THREADS = 256;

/** Bytes of workspace the GPU `sample` needs: p for every token of every row. */
export function gpuSampleWorkspaceBytes(batch: number, vocab: number): number {
  checkSampleSizes(batch, vocab);
  return 4 * batch * vocab;
}

/** Loads the sampling kernels onto the backend's device and returns its ops. */
export async function loadSamplingOps(backend: Backend): Promise<SamplingOps> {
  const { launchers } = await loadKernels(backend, "sampling");
  const argmax = launchers.argmax_f32.launch;
  const logSoftmax = launchers.log_softmax_f32.launch;
  const sample = launchers.sample_f32.launch;
  const applyPenalties = launchers.apply_penalties_f32.launch;
  const logprobs = launchers.logprobs_bf16.launch;
  const applyLogitEdits = launchers.apply_logit_edits_f32.launch;
  const applyTokenBitmask = launchers.apply_token_bitmask_f32.launch;

  return {
    argmax(ids, logits, batch, vocab, stream) {
      checkArgmax(ids, logits, batch, vocab);
      argmax(batch, 1, 1, THREADS, 1, 1, 0, stream, ids, logits, vocab);
    },

    sample(ids, logits, params, batch, vocab, workspace, stream) {
      checkSample(
        ids,
        logits,
        params,
        batch,
        vocab,
        workspace,
        gpuSampleWorkspaceBytes(batch, vocab),
      );
      sample(
        batch,
        1,
        1,
        THREADS,
        1,
        1,
        0,
        stream,
        ids,
        logits,
        params.temperature,
        params.topK,
        params.topP,
        params.minP,
        params.seed,
        params.step,
        workspace,
        vocab,
      );
    },

    sampleWorkspaceBytes: gpuSampleWorkspaceBytes,

    logSoftmax(out, logits, batch, vocab, stream) {
      checkLogSoftmax(out, logits, batch, vocab);
      logSoftmax(batch, 1, 1, THREADS, 1, 1, 0, stream, out, logits, vocab);
    },

    applyPenalties(logits, entries, count, penalties, batch, vocab, stream) {
      checkApplyPenalties(logits, entries, count, penalties, batch, vocab);
      if (count === 0) return;
      const grid = Math.ceil(count / PENALTY_THREADS);
      applyPenalties(
        grid,
        1,
        1,
        PENALTY_THREADS,
        1,
        1,
        0,
        stream,
        logits,
        entries,
        penalties,
        count,
        batch,
        vocab,
      );
    },

    applyLogitEdits(logits, entries, count, batch, vocab, stream) {
      checkApplyLogitEdits(logits, entries, count, batch, vocab);
      if (count === 0) return;
      const grid = Math.ceil(count / PENALTY_THREADS);
      applyLogitEdits(
        grid,
        1,
        1,
        PENALTY_THREADS,
        1,
        1,
        0,
        stream,
        logits,
        entries,
        count,
        batch,
        vocab,
      );
    },

    applyTokenBitmask(logits, masks, rows, count, batch, vocab, stream) {
      checkApplyTokenBitmask(logits, masks, rows, count, batch, vocab);
      if (count === 0) return;
      const grid = Math.ceil(vocab / PENALTY_THREADS);
      applyTokenBitmask(
        grid,
        count,
        1,
        PENALTY_THREADS,
        1,
        1,
        0,
        stream,
        logits,
        masks,
        rows,
        batch,
        vocab,
      );
    },

    logprobs(chosen, topIds, topValues, logits, ids, batch, vocab, n, stream) {
      checkLogprobs(chosen, topIds, topValues, logits, ids, batch, vocab, n);
      logprobs(
        batch,
        1,
        1,
        THREADS,
        1,
        1,
        0,
        stream,
        chosen,
        topIds,
        topValues,
        logits,
        ids,
        vocab,
        n,
      );
    },
  };
}
