/**
 * The integer-range workaround for xgrammar 0.1.27: narrow two-sided integer ranges become the
 * enum of their values (exclusive bounds and nested schemas included); wide, one-sided, number
 * and multipleOf schemas are left alone, and the input is not changed.
 */

import assert from "node:assert/strict";
import { enumerateIntegerRanges, MAX_ENUMERATED } from "../../engine/grammar/integer_ranges.ts";

Deno.test("enumerateIntegerRanges: narrow integer ranges become enums, the rest stay", () => {
  const input = {
    type: "object",
    properties: {
      a: { type: "integer", minimum: -2, maximum: 2, description: "kept" },
      b: { type: "integer", exclusiveMinimum: 0.5, exclusiveMaximum: 4 },
      c: { type: "array", items: { type: "integer", minimum: 7, maximum: 7 } },
      d: { anyOf: [{ type: "integer", minimum: 1, maximum: 3 }, { type: "string" }] },
      wide: { type: "integer", minimum: 0, maximum: MAX_ENUMERATED },
      oneSided: { type: "integer", minimum: 0 },
      number: { type: "number", minimum: 0, maximum: 3 },
      steps: { type: "integer", minimum: 0, maximum: 9, multipleOf: 3 },
      empty: { type: "integer", minimum: 3, maximum: 2 },
    },
  };
  const before = JSON.stringify(input);
  const out = enumerateIntegerRanges(input) as { properties: Record<string, unknown> };
  assert.deepStrictEqual(JSON.stringify(input), before);
  const p = out.properties;
  assert.deepStrictEqual(p.a, { description: "kept", enum: [-2, -1, 0, 1, 2] });
  assert.deepStrictEqual(p.b, { enum: [1, 2, 3] });
  assert.deepStrictEqual(p.c, { type: "array", items: { enum: [7] } });
  assert.deepStrictEqual(p.d, { anyOf: [{ enum: [1, 2, 3] }, { type: "string" }] });
  for (const key of ["wide", "oneSided", "number", "steps", "empty"]) {
    assert.deepStrictEqual(p[key], input.properties[key as keyof typeof input.properties], key);
  }
});
