/**
 * Seeded random JSON schemas for the structured-output tests (CPU and GPU).
 *
 * @module
 */

/** A JSON schema. */
export type Schema = Record<string, unknown>;

/**
 * A random schema whose instances are bounded (a random model must finish them): strings with
 * maxLength or enums, integers in ranges, numbers, short arrays, nested objects up to depth 2,
 * with a random subset of required properties and no additional ones.
 */
export function randomSchema(random: () => number, depth = 0): Schema {
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const kinds = ["string", "integer", "number", "boolean", "enum", "array"];
  if (depth < 2) kinds.push("object", "object");
  const kind = depth === 0 ? "object" : pick(kinds);
  switch (kind) {
    case "string":
      return { type: "string", minLength: int(0, 1), maxLength: int(1, 8) };
    case "integer": {
      const lo = int(-50, 50);
      return { type: "integer", minimum: lo, maximum: lo + int(0, 500) };
    }
    case "number":
      // Unbounded: xgrammar 0.1.27 lets a fraction past a bound's integer part (45.8 under
      // maximum 45), a limitation the README states.
      return { type: "number" };
    case "boolean":
      return { type: "boolean" };
    case "enum":
      return { enum: pick([["red", "green", "blue"], [1, 2, 3], ["a", 7, null], ["x y", "z"]]) };
    case "array":
      return {
        type: "array",
        items: randomSchema(random, 2),
        minItems: int(0, 1),
        maxItems: int(1, 3),
      };
    default: {
      const properties: Schema = {};
      const count = int(1, 4);
      for (let i = 0; i < count; i++) {
        properties[`p${depth}_${i}`] = randomSchema(random, depth + 1);
      }
      const names = Object.keys(properties);
      const required = names.filter(() => random() < 0.7);
      return { type: "object", properties, required, additionalProperties: false };
    }
  }
}
