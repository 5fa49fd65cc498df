/**
 * Top-p exactly at its boundary on the CPU reference, against the closed-form nucleus of
 * tests/support/top_p_boundary.ts (the GPU test runs the same cases).
 *
 * @module
 */

import assert from "node:assert/strict";
import { massOf, newSampleTrace, sampleRow } from "../../ops/cpu/sampling.ts";
import {
  BOUNDARY_CASES,
  BOUNDARY_LOGITS,
  BOUNDARY_P,
  BOUNDARY_TEMPERATURE,
  BOUNDARY_VOCAB,
  referenceNucleus,
} from "../support/top_p_boundary.ts";

/** One row sampled at `step`, with its trace. */
function sample(topP: number, step: number) {
  const trace = newSampleTrace();
  const id = sampleRow(
    BOUNDARY_LOGITS,
    0,
    BOUNDARY_VOCAB,
    BOUNDARY_TEMPERATURE,
    0,
    topP,
    0,
    7,
    0,
    step,
    new Float32Array(BOUNDARY_VOCAB),
    0,
    new Float32Array(BOUNDARY_VOCAB),
    trace,
  );
  return { id, trace };
}

Deno.test("top-p boundary: the probabilities are the exact powers of two the cases assume", () => {
  const p = new Float32Array(BOUNDARY_VOCAB);
  sampleRow(
    BOUNDARY_LOGITS,
    0,
    BOUNDARY_VOCAB,
    BOUNDARY_TEMPERATURE,
    0,
    1,
    0,
    7,
    0,
    0,
    p,
    0,
    new Float32Array(BOUNDARY_VOCAB),
  );
  assert.deepEqual([...p], BOUNDARY_P);
  assert.deepEqual(BOUNDARY_P.map(massOf), BOUNDARY_P.map((x) => x * 2 ** 32));
});

Deno.test("top-p boundary: at, and one f32 step past, each cumulative boundary (CPU)", () => {
  for (const [topP, nucleus] of BOUNDARY_CASES) {
    assert.deepEqual(referenceNucleus(BOUNDARY_P, topP), nucleus, `the reference at ${topP}`);
    const keptMass = nucleus.reduce((sum, i) => sum + BOUNDARY_P[i] * 2 ** 32, 0);
    assert.equal(sample(topP, 0).trace.zf, keptMass, `kept mass at topP ${topP}`);
    const drawn = new Set<number>();
    for (let step = 0; step < 4000; step++) drawn.add(sample(topP, step).id);
    assert.deepEqual([...drawn].sort(), nucleus, `tokens drawn at topP ${topP}`);
  }
});
