/**
 * The 4-bit `quantization_config`s Denali runs (W4A16, group-wise scales and zero points):
 * - `quant_method: "awq"` (AutoAWQ, transformers' AwqConfig): `bits` 4, `group_size` 128 or 64,
 *   `zero_point` true, `version` "gemm" (the packing of `WQLinear_GEMM`, backends/awq.ts);
 * - `quant_method: "gptq"` (AutoGPTQ, GPTQModel, optimum): `bits` 4, `group_size` 128 or 64,
 *   `desc_act` false (act-order needs `g_idx` reordering Denali lacks), `checkpoint_format`
 *   "gptq" (zero points stored minus one) or "gptq_v2".
 * Anything else is refused with a message naming the field, the value and what is supported.
 *
 * @module
 */

import { AWQ_GROUP_SIZES } from "../backends/awq.ts";

/** A 4-bit checkpoint's scheme, as parsed from config.json. */
export interface Int4Checkpoint {
  /** The layout: AutoAWQ's GEMM packing, or GPTQ's. */
  readonly method: "awq" | "gptq";
  /** Input columns per group (one scale and zero point each): 64 or 128. */
  readonly groupSize: number;
  /** What the checkpoint stores in place of a zero point z: z - zeroOffset (GPTQ v1: 1). */
  readonly zeroOffset: number;
}

type Fail = (message: string) => never;

const REMEDY = "use a 4-bit AWQ (GEMM) or GPTQ checkpoint with group size 128 or 64, or the " +
  "model's unquantized release";

function bitsAndGroup(config: Record<string, unknown>, fail: Fail): number {
  const bits = config.bits ?? config.w_bit;
  if (bits !== 4) {
    fail(
      `quantization_config.bits ${JSON.stringify(bits)} is not supported; Denali runs 4-bit ` +
        `weights only. ${REMEDY}`,
    );
  }
  const group = config.group_size ?? config.q_group_size;
  if (typeof group !== "number" || !AWQ_GROUP_SIZES.includes(group)) {
    fail(
      `quantization_config.group_size ${JSON.stringify(group)} is not supported; expected ` +
        `${AWQ_GROUP_SIZES.join(" or ")}. ${REMEDY}`,
    );
  }
  return group;
}

/** Parses an `awq` quantization_config (already known to be an object with that method). */
export function parseAwqConfig(config: Record<string, unknown>, fail: Fail): Int4Checkpoint {
  const groupSize = bitsAndGroup(config, fail);
  if (config.zero_point === false) {
    fail(
      "quantization_config.zero_point false is not supported; Denali runs AWQ with zero " +
        `points (zero_point true). ${REMEDY}`,
    );
  }
  const version = config.version ?? "gemm";
  if (typeof version !== "string" || version.toLowerCase() !== "gemm") {
    fail(
      `quantization_config.version ${JSON.stringify(version)} is not supported; Denali reads ` +
        `AutoAWQ's "gemm" packing. ${REMEDY}`,
    );
  }
  return { method: "awq", groupSize, zeroOffset: 0 };
}

/** Parses a `gptq` quantization_config (already known to be an object with that method). */
export function parseGptqConfig(config: Record<string, unknown>, fail: Fail): Int4Checkpoint {
  const groupSize = bitsAndGroup(config, fail);
  if (config.desc_act === true) {
    fail(
      "quantization_config.desc_act true (act-order, with a g_idx permutation per layer) is " +
        `not supported; Denali runs GPTQ with desc_act false. ${REMEDY}`,
    );
  }
  const format = config.checkpoint_format ?? "gptq";
  if (format !== "gptq" && format !== "gptq_v2") {
    fail(
      `quantization_config.checkpoint_format ${JSON.stringify(format)} is not supported; ` +
        `expected "gptq" or "gptq_v2". ${REMEDY}`,
    );
  }
  return { method: "gptq", groupSize, zeroOffset: format === "gptq" ? 1 : 0 };
}
