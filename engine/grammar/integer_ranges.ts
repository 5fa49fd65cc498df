/**
 * A workaround for xgrammar 0.1.27, whose integer ranges are not exact (`maximum: 130` admits
 * 134): an integer schema bounded on both sides by at most {@link MAX_ENUMERATED} values becomes
 * the `enum` of those values, which xgrammar matches exactly. Wider ranges stay as they are (the
 * README states the limitation), as do `number` bounds, which no enumeration can replace.
 *
 * @module
 */

/** The widest integer range turned into an enum. */
export const MAX_ENUMERATED = 1024;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Keywords whose value is one schema, a list of schemas, or a map of name → schema. */
const ONE = [
  "items",
  "additionalProperties",
  "not",
  "contains",
  "propertyNames",
  "if",
  "then",
  "else",
];
const LIST = ["anyOf", "oneOf", "allOf", "prefixItems"];
const MAP = ["properties", "$defs", "definitions", "patternProperties"];

/** `schema` with every narrow two-sided integer range enumerated (a copy; the input is kept). */
export function enumerateIntegerRanges(schema: unknown): unknown {
  if (!isObject(schema)) return schema;
  const out: Json = { ...schema };
  for (const key of ONE) if (key in out) out[key] = enumerateIntegerRanges(out[key]);
  for (const key of LIST) {
    if (Array.isArray(out[key])) out[key] = (out[key] as unknown[]).map(enumerateIntegerRanges);
  }
  for (const key of MAP) {
    const map = out[key];
    if (!isObject(map)) continue;
    const copy: Json = {};
    for (const [name, sub] of Object.entries(map)) copy[name] = enumerateIntegerRanges(sub);
    out[key] = copy;
  }
  const range = integerRange(out);
  if (range === null) return out;
  const [lo, hi] = range;
  const values: number[] = [];
  for (let v = lo; v <= hi; v++) values.push(v);
  const {
    type: _type,
    minimum: _min,
    maximum: _max,
    exclusiveMinimum: _xmin,
    exclusiveMaximum: _xmax,
    ...rest
  } = out;
  return { ...rest, enum: values };
}

/** The inclusive [lo, hi] of an integer schema bounded on both sides, narrow enough; else null. */
function integerRange(schema: Json): [number, number] | null {
  if (schema.type !== "integer" || "enum" in schema || "const" in schema) return null;
  if ("multipleOf" in schema) return null;
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v) ? v : null;
  let lo = num(schema.minimum), hi = num(schema.maximum);
  const xlo = num(schema.exclusiveMinimum), xhi = num(schema.exclusiveMaximum);
  if (xlo !== null) lo = Math.max(lo ?? -Infinity, Math.floor(xlo) + 1);
  if (xhi !== null) hi = Math.min(hi ?? Infinity, Math.ceil(xhi) - 1);
  if (lo === null || hi === null) return null;
  lo = Math.ceil(lo);
  hi = Math.floor(hi);
  if (hi < lo || hi - lo + 1 > MAX_ENUMERATED) return null;
  return [lo, hi];
}
