/**
 * Which 4-bit GEMV variant ops/gpu/awq.ts loads: the option, else DENALI_AWQ_GEMV, else s2_ps; an
 * unknown name from either is refused with the list of choices.
 *
 * @module
 */

import assert from "node:assert/strict";
import { awqGemvVariantWanted } from "../ops/gpu/awq.ts";
import { withEnv } from "./support/env.ts";

/** Runs `body` with DENALI_AWQ_GEMV set to `value` (or unset), restoring it afterwards. */
const withVariant = (value: string | undefined, body: () => void) =>
  withEnv({ DENALI_AWQ_GEMV: value }, body);

Deno.test("awq GEMV variant: option first, then DENALI_AWQ_GEMV, then s2_ps", () => {
  withVariant(undefined, () => assert.equal(awqGemvVariantWanted(), "s2_ps"));
  withVariant("", () => assert.equal(awqGemvVariantWanted(), "s2_ps"));
  withVariant("s2", () => assert.equal(awqGemvVariantWanted(), "s2"));
  withVariant("s2_ps", () => {
    assert.equal(awqGemvVariantWanted(), "s2_ps");
    assert.equal(awqGemvVariantWanted("s3_p"), "s3_p");
  });
});

Deno.test("awq GEMV variant: an unknown name is refused, naming the choices", () => {
  withVariant("s9", () => {
    assert.throws(() => awqGemvVariantWanted(), /variant s9 is unknown; use one of s2, s3,/);
  });
  withVariant(undefined, () => {
    // deno-lint-ignore no-explicit-any
    assert.throws(() => awqGemvVariantWanted("fast" as any), /variant fast is unknown/);
  });
});
