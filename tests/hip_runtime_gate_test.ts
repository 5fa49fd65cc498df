/**
 * The gate of the tests that need the real HIP runtime: skipped with a clear line on a machine
 * without it, never skipped under CI.
 *
 * @module
 */

import assert from "node:assert/strict";
import { canLoad, hipRuntimeGate } from "./support/hip_runtime.ts";

Deno.test("hip runtime gate: skipped with a note without the runtime, outside CI", () => {
  const gate = hipRuntimeGate(false, undefined);
  assert.equal(gate.ignore, true);
  assert.match(gate.note!, /^skipped: HIP runtime not installed \(libamdhip64\.so\.5;/);
  assert.match(gate.note!, /apt-get install libamdhip64-5/);
});

Deno.test("hip runtime gate: under CI the tests run, so a missing runtime fails them", () => {
  assert.deepEqual(hipRuntimeGate(false, "true"), { ignore: false, note: null });
});

Deno.test("hip runtime gate: an installed runtime runs the tests", () => {
  assert.deepEqual(hipRuntimeGate(true, undefined), { ignore: false, note: null });
  assert.deepEqual(hipRuntimeGate(true, "true"), { ignore: false, note: null });
});

Deno.test("hip runtime gate: a library that is not there cannot be loaded", () => {
  assert.equal(canLoad("/nonexistent/libamdhip64.so.5"), false);
});
