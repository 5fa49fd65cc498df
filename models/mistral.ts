/**
 * Mistral (`MistralForCausalLM`): the same weights and math as Llama once the sliding window
 * is off (`sliding_window: null`, Mistral 7B v0.2 and later); a config with a window shorter
 * than the context is refused in models/config.ts, since Denali's attention has no window.
 *
 * @module
 */

import { llama } from "./llama.ts";
import type { ModelDefinition } from "./model.ts";

/** The Mistral family: Llama's layout and forward pass under Mistral's name. */
export const mistral: ModelDefinition = { ...llama, architecture: "MistralForCausalLM" };
