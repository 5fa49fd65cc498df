/**
 * tools/batch1_op_bounds.sh edits the Llama forward pass by pattern on the GPU machine; a rename
 * there would leave a variant measuring nothing. Its dry run (DRY=1, on a temporary copy) must
 * skip exactly the layer loop's calls of each operator, counted here from the source itself, and
 * must refuse a variant that matches nothing.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type CommandResult, runCommand } from "./support/command.ts";

const SCRIPT = fileURLToPath(new URL("../tools/batch1_op_bounds.sh", import.meta.url));
const MODEL = fileURLToPath(new URL("../models/llama.ts", import.meta.url));
/** No dry run edits more than a 30 KB file a few times: ten seconds is far past it. */
const DEADLINE_MS = 10_000;

/** Runs the script's dry run with `env`, killed past the deadline. */
function dryRun(env: Record<string, string>): Promise<CommandResult> {
  return runCommand("bash", [SCRIPT], DEADLINE_MS, { env: { DRY: "1", ROUNDS: "1", ...env } });
}

/** The calls of each operator inside the forward pass's layer loop, counted from the source. */
function layerLoopCalls(source: string): Record<string, number> {
  const start = source.indexOf("for (let l = 0; l < c.numHiddenLayers; l++)");
  const end = source.indexOf("if (s.logitRows === 0) return;", start);
  assert.ok(start >= 0 && end > start, "the layer loop of models/llama.ts moved");
  const loop = source.slice(start, end);
  const count = (call: string) => loop.split(`ops.${call}(`).length - 1;
  const norms = count("rmsNorm"), rope = count("qkvRope");
  const attn = count("decodeAttention"), silu = count("siluMul");
  return { all: 0, norms, rope, attn, silu, gemvs: norms + rope + attn + silu };
}

Deno.test("batch1_op_bounds: each variant skips the layer loop's calls of its operators", async () => {
  const source = await Deno.readTextFile(MODEL);
  const expected = layerLoopCalls(source);
  assert.ok(
    [expected.norms, expected.rope, expected.attn, expected.silu].every((n) => n > 0),
    `every operator is called in the layer loop: ${JSON.stringify(expected)}`,
  );
  const { code, stdout, stderr } = await dryRun({});
  assert.equal(code, 0, stderr);
  const skipped: Record<string, number> = {};
  for (const [, variant, n] of stdout.matchAll(/variant (\w+): (\d+) calls skipped/g)) {
    skipped[variant] = Number(n);
  }
  assert.deepEqual(skipped, expected);
  // The dry run edits a copy: the tree's forward pass is untouched.
  assert.equal(await Deno.readTextFile(MODEL), source);
});

Deno.test("batch1_op_bounds: a variant that matches nothing is an error naming it", async () => {
  const renamed = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    const source = await Deno.readTextFile(MODEL);
    await Deno.writeTextFile(renamed, source.replaceAll("ops.qkvRope(", "ops.qkvRotary("));
    const { code, stderr } = await dryRun({ MODEL: renamed, VARIANTS: "all rope" });
    assert.equal(code, 1);
    assert.match(stderr, /variant rope matched no call in .*renamed; update the patterns/);
  } finally {
    await Deno.remove(renamed);
  }
});

Deno.test("batch1_op_bounds: an unknown variant is an error listing the known ones", async () => {
  const { code, stderr } = await dryRun({ VARIANTS: "norms lmhead" });
  assert.equal(code, 1);
  assert.match(stderr, /unknown variant lmhead; use all, norms, rope, attn, silu or gemvs/);
});
