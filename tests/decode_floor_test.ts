/**
 * The decode benchmark's floor (bench/decode_bench.ts) counts the bytes a decode step reads:
 * every weight once except the input embedding table, of which a step reads one row per token;
 * a tied table once (the lm head reads it whole); each family's extra vectors; and the K/V of
 * the attended positions. Checked against the published parameter counts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decodeStepBytes } from "../bench/decode_bench.ts";
import { configPreset } from "../models/config.ts";

Deno.test("decode floor: Llama-3-8B reads its weights but one embedding row per token", () => {
  const config = configPreset("llama3-8b");
  const table = 128256 * 4096;
  // 8,030,261,248 parameters (Meta's count), less the input table, in bf16.
  const weights = 2 * (8_030_261_248 - table);
  const kv = 2 * 32 * 8 * 128 * 2; // K and V, 32 layers, 8 KV heads of 128, bf16
  assert.equal(decodeStepBytes(config, 1, 0), weights + 4096 * 2);
  assert.equal(decodeStepBytes(config, 64, 512), weights + 64 * 4096 * 2 + 64 * 512 * kv);
  // The old floor counted the table: about 1.05 GB more.
  assert.ok(Math.abs(2 * table - 1.05e9) < 0.01e9);
});

Deno.test("decode floor: the other families count their own vectors; a tied table counts once", () => {
  // Qwen2.5-7B: 7,615,616,512 parameters, q/k/v biases included; 152064 × 3584 input table.
  assert.equal(
    decodeStepBytes(configPreset("qwen2.5-7b"), 1, 0),
    2 * (7_615_616_512 - 152064 * 3584) + 3584 * 2,
  );
  // Qwen3-8B: 8,190,735,360 parameters with the q/k norms.
  assert.equal(
    decodeStepBytes(configPreset("qwen3-8b"), 1, 0),
    2 * (8_190_735_360 - 151936 * 4096) + 4096 * 2,
  );
  // Llama-3.2-1B ties its embeddings: the lm head reads the whole table, once.
  assert.equal(decodeStepBytes(configPreset("llama3.2-1b"), 1, 0), 2 * 1_235_814_400 + 2048 * 2);
});

Deno.test("decode floor: an FP8 KV cache counts one byte a cached element", () => {
  const config = configPreset("llama3-8b");
  const kvElements = 2 * 32 * 8 * 128; // K and V, 32 layers, 8 KV heads of 128
  const bf16 = decodeStepBytes(config, 64, 512), fp8 = decodeStepBytes(config, 64, 512, 1);
  assert.equal(bf16 - fp8, 64 * 512 * kvElements);
  assert.equal(decodeStepBytes(config, 1, 0, 1), decodeStepBytes(config, 1, 0));
});

Deno.test("decode bench: an unknown --kv-cache-dtype is refused by name before any device", async () => {
  const script = new URL("../bench/decode_bench.ts", import.meta.url).pathname;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", script, "--kv-cache-dtype", "fp8_e5m2"],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder().decode(stderr);
  assert.notEqual(code, 0);
  assert.match(
    text,
    /--kv-cache-dtype "fp8_e5m2" is not supported \(Denali stores FP8 as E4M3 only\)/,
  );
  assert.match(text, /auto, bf16, fp8, fp8_e4m3/);
  // Refused before opening a backend: no device line was printed.
  assert.doesNotMatch(text, /cannot launch device kernels|CUDA|libcuda/);
});
