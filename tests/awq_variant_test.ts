/**
 * Which 4-bit GEMV variant ops/gpu/awq.ts loads: the option, else DENALI_AWQ_GEMV, else s2_ps; an
 * unknown name from either is refused with the list of choices.
 *
 * @module
 */

import assert from "node:assert/strict";
import { awqGemvVariantWanted } from "../ops/gpu/awq.ts";

/** Runs `body` with DENALI_AWQ_GEMV set to `value` (or unset), restoring it afterwards. */
function withEnv(value: string | undefined, body: () => void): void {
  const saved = Deno.env.get("DENALI_AWQ_GEMV");
  if (value === undefined) Deno.env.delete("DENALI_AWQ_GEMV");
  else Deno.env.set("DENALI_AWQ_GEMV", value);
  try {
    body();
  } finally {
    if (saved === undefined) Deno.env.delete("DENALI_AWQ_GEMV");
    else Deno.env.set("DENALI_AWQ_GEMV", saved);
  }
}

Deno.test("awq GEMV variant: option first, then DENALI_AWQ_GEMV, then s2_ps", () => {
  withEnv(undefined, () => assert.equal(awqGemvVariantWanted(), "s2_ps"));
  withEnv("", () => assert.equal(awqGemvVariantWanted(), "s2_ps"));
  withEnv("s2", () => assert.equal(awqGemvVariantWanted(), "s2"));
  withEnv("s2_ps", () => {
    assert.equal(awqGemvVariantWanted(), "s2_ps");
    assert.equal(awqGemvVariantWanted("s3_p"), "s3_p");
  });
});

Deno.test("awq GEMV variant: an unknown name is refused, naming the choices", () => {
  withEnv("s9", () => {
    assert.throws(() => awqGemvVariantWanted(), /variant s9 is unknown; use one of s2, s3,/);
  });
  withEnv(undefined, () => {
    // deno-lint-ignore no-explicit-any
    assert.throws(() => awqGemvVariantWanted("fast" as any), /variant fast is unknown/);
  });
});
