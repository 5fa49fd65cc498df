/**
 * Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): Llama's layers with a bias on the q, k and v
 * projections. The three biases are fused into one [(H + 2·KV)·D] vector per layer, as the
 * weights are, and added by the `qkvRope` launch that splits the fused projection. The small
 * sizes tie their embeddings (config.json's tie_word_embeddings); sliding-window attention is
 * refused when the config turns it on (models/config.ts).
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../backends/backend.ts";
import type { ModelOps, QkvRopeArgs } from "../ops/ops.ts";
import type { ModelConfig } from "./config.ts";
import { LlamaForward, llamaWeightLayout, vectorSlot } from "./llama.ts";
import type { ForwardSizes, ModelDefinition, ModelWeights, WeightSlot } from "./model.ts";

/** Llama's tensors plus each layer's q/k/v biases, fused into `<layer>.qkvBias`. */
export function qwen2WeightLayout(config: ModelConfig): WeightSlot[] {
  const slots = llamaWeightLayout(config);
  const qDim = config.numAttentionHeads * config.headDim;
  const kvDim = config.numKeyValueHeads * config.headDim;
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `model.layers.${i}.self_attn.`;
    vectorSlot(
      slots,
      `${i}.qkvBias`,
      [`${p}q_proj.bias`, qDim],
      [`${p}k_proj.bias`, kvDim],
      [`${p}v_proj.bias`, kvDim],
    );
  }
  return slots;
}

/** The Qwen2 forward pass: Llama's, plus the q/k/v bias before RoPE. */
export class Qwen2Forward extends LlamaForward {
  readonly #bias: DeviceBuffer[];

  /** Allocates Llama's activations; the biases are weights. */
  constructor(backend: Backend, ops: ModelOps, weights: ModelWeights, sizes: ForwardSizes) {
    super(backend, ops, weights, sizes);
    this.#bias = Array.from(
      { length: this.config.numHiddenLayers },
      (_, i) => weights.get(`${i}.qkvBias`),
    );
  }

  protected override layerQkvRope(layer: number, args: QkvRopeArgs): void {
    args.bias = this.#bias[layer];
  }
}

/** The Qwen2 family. */
export const qwen2: ModelDefinition = {
  architecture: "Qwen2ForCausalLM",
  weightLayout: qwen2WeightLayout,
  createForward: (backend, ops, weights, sizes) => new Qwen2Forward(backend, ops, weights, sizes),
};
