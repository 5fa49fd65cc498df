/**
 * One prefill step of a model family's forward pass on the CPU backend, driven directly (no
 * Engine): seeded random weights of `config`, one sequence of `ids` in a small paged cache, the
 * last position's logits back. For tests of what a forward pass computes or calls.
 *
 * @module
 */

import type { DeviceBuffer } from "../../backends/backend.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import type { ModelConfig } from "../../models/config.ts";
import { modelDefinition } from "../../models/families.ts";
import type { LayerCaches, StepInputs, StepShape } from "../../models/model.ts";
import { randomWeights } from "../../models/weights.ts";
import type { ModelOps } from "../../ops/ops.ts";

/**
 * Runs the prefill of `ids` (at most 64 tokens) through `config`'s family on `ops` (the CPU's, or
 * a wrapper of them); `inspect` sees the weights by key before the step runs. Returns the last
 * position's logits and what `inspect` returned.
 */
export function cpuPrefill<T>(
  config: ModelConfig,
  ids: number[],
  ops: ModelOps,
  inspect: (get: (key: string) => DeviceBuffer) => T,
): { logits: Float32Array; inspected: T } {
  const backend = new CpuBackend();
  const weights = randomWeights(config, backend, ops, 1);
  const inspected = inspect((key) => weights.get(key));
  const blockSize = 16, maxBlocks = 4, T = ids.length;
  const forward = modelDefinition(config).createForward(backend, ops, weights, {
    maxTokens: T,
    maxRows: 1,
    blockSize,
    maxBlocksPerSeq: maxBlocks,
  });
  const i32 = (values: number[]) => {
    const buffer = backend.alloc(Math.max(4, values.length * 4));
    backend.copyToDevice(buffer, Int32Array.from(values));
    return buffer;
  };
  const kvBytes = maxBlocks * config.numKeyValueHeads * blockSize * config.headDim * 2;
  const caches = Array.from({ length: 2 * config.numHiddenLayers }, () => backend.alloc(kvBytes));
  const kv: LayerCaches = { k: (l) => caches[2 * l], v: (l) => caches[2 * l + 1] };
  const positions = ids.map((_, t) => t);
  const inputs: StepInputs = {
    tokenIds: i32(ids),
    positions: i32(positions),
    slots: i32(positions),
    decodeBlockTables: i32([0]),
    decodeContextLens: i32([0]),
    queryStarts: i32([0, T]),
    prefillContextLens: i32([T]),
    prefillBlockTables: i32([0, 1, 2, 3]),
    logitRows: i32([T - 1]),
  };
  const shape: StepShape = {
    tokens: T,
    decodes: 0,
    decodeMaxBlocks: 0,
    decodeMaxContext: 0,
    prefills: 1,
    prefillTokens: T,
    prefillMaxBlocks: maxBlocks,
    logitRows: 1,
    gather: true,
  };
  const vocab = config.vocabSize;
  const out = { bf16: backend.alloc(vocab * 2), f32: backend.alloc(vocab * 4) };
  forward.run(shape, inputs, kv, out, backend.defaultStream);
  const logits = new Float32Array(vocab);
  backend.copyToHost(logits, out.f32);
  forward.free();
  weights.free();
  backend.close();
  return { logits, inspected };
}
