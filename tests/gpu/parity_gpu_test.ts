/**
 * Parity with HF transformers on the CUDA backend (`deno task test:gpu`): the same checks as
 * tests/engine/parity_test.ts — HF's last-position logits to bf16 accuracy, its greedy
 * continuations token for token up to a proven near tie, batched equal to alone, and the same
 * under chunked prefill and KV pressure — with the GPU kernels, cuBLASLt and decode graphs in
 * the path. The near-tie width is measured on this device's own logits (tests/support/parity.ts).
 *
 * @module
 */

import { registerParityTests } from "../support/parity.ts";

registerParityTests("cuda", !Deno.env.get("DENALI_GPU_TESTS"));
