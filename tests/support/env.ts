/**
 * Environment variables set for the length of a test body.
 *
 * @module
 */

/** Runs `body` with environment variables set (a string) or unset (undefined), then restores. */
export function withEnv(vars: Record<string, string | undefined>, body: () => void): void {
  const saved = Object.keys(vars).map((name) => [name, Deno.env.get(name)] as const);
  const apply = (name: string, value: string | undefined) =>
    value === undefined ? Deno.env.delete(name) : Deno.env.set(name, value);
  try {
    for (const [name, value] of Object.entries(vars)) apply(name, value);
    body();
  } finally {
    for (const [name, value] of saved) apply(name, value);
  }
}
