/**
 * Tuning knobs of the GPU ops: a loader option where the caller gives one, else an environment
 * variable, else the default; a value outside the knob's range is a RangeError that names where
 * it came from and what it takes, read once when the ops load (never per call).
 *
 * @module
 */

/**
 * A knob of a few named settings: `requested`, else the environment `variable` (unset or empty:
 * `fallback`) looked up in `choices`; a value not there is a RangeError `refusal` words.
 */
export function choiceWanted<T>(
  requested: T | undefined,
  variable: string,
  choices: Record<string, T>,
  fallback: T,
  refusal: (value: string) => string,
): T {
  if (requested !== undefined) return requested;
  const fromEnv = Deno.env.get(variable);
  if (fromEnv === undefined || fromEnv === "") return fallback;
  if (Object.hasOwn(choices, fromEnv)) return choices[fromEnv];
  throw new RangeError(refusal(fromEnv));
}

/**
 * A numeric tuning knob: `requested`, else the environment `variable`, else `fallback`; one that
 * `valid` refuses is a RangeError naming the option or the variable it came from and `rule`.
 */
export function tunableWanted(
  requested: number | undefined,
  option: string,
  variable: string,
  fallback: number,
  valid: (value: number) => boolean,
  rule: string,
): number {
  const fromEnv = requested === undefined ? Deno.env.get(variable) : undefined;
  const value = fromEnv === undefined || fromEnv === "" ? requested ?? fallback : Number(fromEnv);
  if (!valid(value)) {
    throw new RangeError(
      `${fromEnv === undefined ? option : variable} must be ${rule}, got ${fromEnv ?? value}`,
    );
  }
  return value;
}
