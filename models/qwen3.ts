/**
 * Qwen3 (`Qwen3ForCausalLM`): Llama's layers with an RMSNorm over each head of q and of k
 * (q_norm and k_norm, weights [headDim]) between the projections and RoPE, in the `qkvRope`
 * launch that splits the fused projection. head_dim is its own config key, independent of
 * hidden_size / heads (Qwen3-8B: 4096 / 32 = 128, Qwen3-0.6B: 1024 / 16 = 64 but head_dim 128).
 *
 * @module
 */

import type { Backend, DeviceBuffer } from "../backends/backend.ts";
import type { ModelOps, QkvRopeArgs } from "../ops/ops.ts";
import type { ModelConfig } from "./config.ts";
import { LlamaForward, llamaWeightLayout, normSlot } from "./llama.ts";
import type { ForwardSizes, ModelDefinition, ModelWeights, WeightSlot } from "./model.ts";

/** Llama's tensors plus each layer's q_norm and k_norm. */
export function qwen3WeightLayout(config: ModelConfig): WeightSlot[] {
  const slots = llamaWeightLayout(config);
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `model.layers.${i}.self_attn.`;
    normSlot(slots, `${i}.qNorm`, `${p}q_norm.weight`, config.headDim);
    normSlot(slots, `${i}.kNorm`, `${p}k_norm.weight`, config.headDim);
  }
  return slots;
}

/** The Qwen3 forward pass: Llama's, plus the per-head q/k norm before RoPE. */
export class Qwen3Forward extends LlamaForward {
  readonly #qNorm: DeviceBuffer[];
  readonly #kNorm: DeviceBuffer[];

  /** Allocates Llama's activations; the norms are weights. */
  constructor(backend: Backend, ops: ModelOps, weights: ModelWeights, sizes: ForwardSizes) {
    super(backend, ops, weights, sizes);
    const layers = this.config.numHiddenLayers;
    this.#qNorm = Array.from({ length: layers }, (_, i) => weights.get(`${i}.qNorm`));
    this.#kNorm = Array.from({ length: layers }, (_, i) => weights.get(`${i}.kNorm`));
  }

  protected override layerQkvRope(layer: number, args: QkvRopeArgs): void {
    args.qNorm = this.#qNorm[layer];
    args.kNorm = this.#kNorm[layer];
  }
}

/** The Qwen3 family. */
export const qwen3: ModelDefinition = {
  architecture: "Qwen3ForCausalLM",
  weightLayout: qwen3WeightLayout,
  createForward: (backend, ops, weights, sizes) => new Qwen3Forward(backend, ops, weights, sizes),
};
