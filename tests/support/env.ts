/**
 * Environment variables set for the length of a test body.
 *
 * @module
 */

/** Sets (a string) or unsets (undefined) `vars`; returns what puts them back. */
function setEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.keys(vars).map((name) => [name, Deno.env.get(name)] as const);
  const apply = (name: string, value: string | undefined) =>
    value === undefined ? Deno.env.delete(name) : Deno.env.set(name, value);
  const restore = () => {
    for (const [name, value] of saved) apply(name, value);
  };
  try {
    for (const [name, value] of Object.entries(vars)) apply(name, value);
  } catch (error) {
    restore();
    throw error;
  }
  return restore;
}

/** Runs `body` with environment variables set (a string) or unset (undefined), then restores. */
export function withEnv(vars: Record<string, string | undefined>, body: () => void): void {
  const restore = setEnv(vars);
  try {
    body();
  } finally {
    restore();
  }
}

/** withEnv for an async body: the variables stay set until its promise settles. */
export async function withEnvAsync(
  vars: Record<string, string | undefined>,
  body: () => Promise<void>,
): Promise<void> {
  const restore = setEnv(vars);
  try {
    await body();
  } finally {
    restore();
  }
}
