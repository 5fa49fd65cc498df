/**
 * Loading 4-bit weights: AWQ (AutoAWQ GEMM packing) and GPTQ checkpoints the test writes from
 * checkpoints/tiny-llama by group quantization on the host, packed here from the formats'
 * descriptions. The loaded weights, dequantized, must equal (q − z)·s computed in the test; the
 * AWQ model's logits must equal those of a bf16 checkpoint holding the same dequantized weights;
 * and every refusal must name the tensor or key and what is supported.
 *
 * Exactness: the scales are powers of two, so (q − z)·s (|q − z| ≤ 15) is exact in bf16 and the
 * AWQ and bf16 checkpoints hold identical weights. The CPU sums in double either way, so the
 * logits agree bit for bit; any layout slip (a swapped nibble, a transposed group, another
 * part's rows) changes weights and shows.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fromBf16Bits, toBf16Bits } from "../../backends/bf16.ts";
import { CpuBackend } from "../../backends/cpu.ts";
import { Engine } from "../../engine/engine.ts";
import { ConfigError, loadModelConfig, parseModelConfig } from "../../models/config.ts";
import { loadWeights, randomWeights, WeightsError } from "../../models/weights.ts";
import { cpuOps } from "../../ops/cpu/index.ts";
import { isAwqWeight } from "../../ops/linear_weight.ts";
import { readBf16 } from "../support/device.ts";
import type { SafetensorsTensor } from "../support/safetensors.ts";
import {
  AWQ,
  dequantized,
  GPTQ,
  i32,
  writeCheckpoint,
  type Written,
} from "../support/awq_checkpoint.ts";

const TINY = new URL("../../checkpoints/tiny-llama/", import.meta.url).pathname;

const base = { sanitizeResources: false, sanitizeOps: false };
const LAYER_PARTS: [string, string[]][] = [
  ["qkvProj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]],
  ["oProj", ["self_attn.o_proj"]],
  ["gateUpProj", ["mlp.gate_proj", "mlp.up_proj"]],
  ["downProj", ["mlp.down_proj"]],
];

/** Loads `dir` on the CPU and checks every linear slot against (q − z)·s, bit for bit. */
async function checkLoaded(written: Written): Promise<void> {
  const cpu = new CpuBackend();
  const ops = cpuOps();
  const config = await loadModelConfig(written.dir);
  const weights = await loadWeights(written.dir, config, cpu, { ops });
  try {
    assert.equal(weights.format, "awq");
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      for (const [key, names] of LAYER_PARTS) {
        const weight = weights.linear(`${layer}.${key}`);
        assert.ok(isAwqWeight(weight), key);
        const parts = names.map((p) => written.weights.get(`model.layers.${layer}.${p}.weight`)!);
        const n = parts.reduce((sum, p) => sum + p.n, 0), k = parts[0].k;
        const out = cpu.alloc(2 * n * k);
        ops.dequantizeAwq(out, weight, n, k, cpu.defaultStream);
        const got = readBf16(cpu, out, n * k);
        const want = parts.flatMap((p) =>
          [...dequantized(p)].map((v) => fromBf16Bits(toBf16Bits(v)))
        );
        const bad = want.findIndex((v, i) => got[i] !== v);
        assert.equal(
          bad,
          -1,
          `layer ${layer} ${key}: element ${bad} is ${got[bad]}, want ${want[bad]}`,
        );
      }
    }
  } finally {
    weights.free();
  }
}

Deno.test(
  { ...base, name: "AWQ checkpoint: every fused linear dequantizes to (q − z)·s" },
  async () => {
    const written = await writeCheckpoint("awq");
    try {
      await checkLoaded(written);
    } finally {
      await Deno.remove(written.dir, { recursive: true });
    }
  },
);

Deno.test({
  ...base,
  name: "GPTQ checkpoint (zeros stored minus one, g_idx in order): the same weights",
}, async () => {
  const written = await writeCheckpoint("gptq");
  try {
    await checkLoaded(written);
  } finally {
    await Deno.remove(written.dir, { recursive: true });
  }
});

const PROMPT = [277, 40, 41, 42, 43, 100, 101, 7, 8, 9, 200, 201, 5, 6];

async function lastLogits(dir: string, format: "awq" | "bf16"): Promise<Float32Array> {
  const engine = await Engine.load(dir, { backend: "cpu", log: () => {} });
  try {
    // The step profile's roofline counts linear bytes by this (engine/roofline.ts).
    assert.equal(engine.info.weightFormat, format);
    return await engine.lastLogits(PROMPT);
  } finally {
    await engine.close();
  }
}

Deno.test(
  { ...base, name: "AWQ model logits equal a bf16 checkpoint of its dequantized weights" },
  async () => {
    const awq = await writeCheckpoint("awq");
    const bf16 = await writeCheckpoint("bf16");
    try {
      const [a, b] = [await lastLogits(awq.dir, "awq"), await lastLogits(bf16.dir, "bf16")];
      assert.equal(a.length, 282);
      assert.ok(a.some((v) => v !== 0));
      assert.deepEqual(a, b);
    } finally {
      await Deno.remove(awq.dir, { recursive: true });
      await Deno.remove(bf16.dir, { recursive: true });
    }
  },
);

Deno.test("4-bit quantization_config: unsupported settings are refused naming the field", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(TINY, "config.json")));
  const cases: [string, unknown, RegExp][] = [
    ["8 bits", { ...AWQ, bits: 8 }, /bits 8 is not supported; Denali runs 4-bit weights only/],
    ["group 32", { ...AWQ, group_size: 32 }, /group_size 32 is not supported; expected 64 or 128/],
    ["per channel", { ...GPTQ, group_size: -1 }, /group_size -1 is not supported/],
    ["no zero point", { ...AWQ, zero_point: false }, /zero_point false is not supported/],
    ["GEMV packing", { ...AWQ, version: "gemv" }, /version "gemv" is not supported; .*"gemm"/],
    ["act-order", { ...GPTQ, desc_act: true }, /desc_act true \(act-order, with a g_idx/],
    [
      "marlin format",
      { ...GPTQ, checkpoint_format: "marlin" },
      /checkpoint_format "marlin" is not supported; expected "gptq" or "gptq_v2"/,
    ],
  ];
  for (const [what, quantization, message] of cases) {
    assert.throws(
      () => parseModelConfig({ ...config, quantization_config: quantization }),
      (e: Error) => e instanceof ConfigError && message.test(e.message),
      what,
    );
  }
  const awq = parseModelConfig({ ...config, quantization_config: { ...AWQ, version: "GEMM" } });
  assert.deepEqual(awq.quantization, { method: "awq", groupSize: 64, zeroOffset: 0 });
  const gptq = parseModelConfig({
    ...config,
    quantization_config: { ...GPTQ, group_size: 128, checkpoint_format: "gptq_v2" },
  });
  assert.deepEqual(gptq.quantization, { method: "gptq", groupSize: 128, zeroOffset: 0 });
});

Deno.test(
  { ...base, name: "4-bit checkpoints: bad tensors are WeightsErrors naming the tensor" },
  async () => {
    const q = "model.layers.1.self_attn.k_proj";
    const cases: [string, "awq" | "gptq", (t: Map<string, SafetensorsTensor>) => void, RegExp][] = [
      [
        "scales of the wrong shape",
        "awq",
        (t) => t.set(`${q}.scales`, { dtype: "F16", shape: [2, 64], data: new Uint8Array(256) }),
        /k_proj\.scales.*shape \[2, 64\], expected \[2, 128\]/,
      ],
      [
        "qweight of the wrong shape",
        "awq",
        (t) =>
          t.set(`${q}.qweight`, { dtype: "I32", shape: [16, 128], data: new Uint8Array(8192) }),
        /k_proj\.qweight.*shape \[16, 128\], expected \[128, 16\]/,
      ],
      [
        "qweight as F16",
        "awq",
        (t) =>
          t.set(`${q}.qweight`, { dtype: "F16", shape: [128, 16], data: new Uint8Array(4096) }),
        /k_proj\.qweight.*dtype F16, expected I32/,
      ],
      ["missing qzeros", "awq", (t) => t.delete(`${q}.qzeros`), /k_proj\.qzeros.*missing/],
      [
        "a NaN scale",
        "awq",
        (t) => {
          const scales = t.get(`${q}.scales`)!;
          const data = scales.data.slice();
          new Uint16Array(data.buffer)[5] = 0x7e00;
          t.set(`${q}.scales`, { ...scales, data });
        },
        /k_proj\.scales.*element 5 is NaN; scales must be finite/,
      ],
      [
        "act-order g_idx",
        "gptq",
        (t) => {
          const g = Int32Array.from({ length: 128 }, (_, i) => (i + 1) % 2);
          t.set(`${q}.g_idx`, { dtype: "I32", shape: [128], data: i32(g) });
        },
        /k_proj\.g_idx.*g_idx\[0\] = 1, not 0: .*act-order \(desc_act\)/,
      ],
    ];
    for (const [what, format, edit, message] of cases) {
      const written = await writeCheckpoint(format, { edit });
      try {
        const config = await loadModelConfig(written.dir);
        await assert.rejects(
          () => loadWeights(written.dir, config, new CpuBackend(), { ops: cpuOps() }),
          (e: Error) => e instanceof WeightsError && message.test(e.message),
          what,
        );
      } finally {
        await Deno.remove(written.dir, { recursive: true });
      }
    }
  },
);

Deno.test({
  ...base,
  name: "random 4-bit weights: every linear slot, (q − 8)·s within the bf16 range",
}, async () => {
  const cpu = new CpuBackend();
  const ops = cpuOps();
  const config = await loadModelConfig(TINY);
  const weights = randomWeights(config, cpu, ops, 3, { quantization: "awq" });
  try {
    assert.equal(weights.format, "awq");
    const weight = weights.linear("1.gateUpProj");
    assert.ok(isAwqWeight(weight));
    const n = 2 * config.intermediateSize, k = config.hiddenSize;
    const out = cpu.alloc(2 * n * k);
    ops.dequantizeAwq(out, weight, n, k, cpu.defaultStream);
    const values = readBf16(cpu, out, n * k);
    const step = fromBf16Bits(toBf16Bits(0.02 * Math.sqrt(3) / 8));
    const levels = new Set(values.map((v) => Math.round(v / step)));
    assert.ok(levels.size >= 12, `${levels.size} distinct levels`);
    assert.ok([...levels].every((q) => q >= -8 && q <= 7), "(q − 8) in -8..7");
    assert.throws(
      () => weights.get("0.qkvProj"),
      /slot '0.qkvProj' is held in 4 bits; read it with/,
    );
  } finally {
    weights.free();
  }
  await assert.rejects(
    () => loadWeights(TINY, config, cpu, { ops, quantization: "awq" }),
    /quantization "awq" applies to random weights only/,
  );
});
