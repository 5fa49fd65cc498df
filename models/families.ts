/**
 * The model families Denali runs, by HF architecture name. A new family is one file in models/
 * and one line here.
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { llama } from "./llama.ts";
import { mistral } from "./mistral.ts";
import type { ModelDefinition } from "./model.ts";
import { qwen2 } from "./qwen2.ts";
import { qwen3 } from "./qwen3.ts";

/** Every family Denali runs. */
export const MODEL_FAMILIES: readonly ModelDefinition[] = [llama, qwen2, qwen3, mistral];

/** The family that runs `config`'s architecture; throws naming the supported ones if none. */
export function modelDefinition(config: ModelConfig): ModelDefinition {
  const family = MODEL_FAMILIES.find((f) => f.architecture === config.architecture);
  if (family === undefined) {
    throw new RangeError(
      `unsupported architecture ${config.architecture}; Denali runs ` +
        MODEL_FAMILIES.map((f) => f.architecture).join(", "),
    );
  }
  return family;
}
