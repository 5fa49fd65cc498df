/**
 * The server's API key: where it comes from (a file or the environment, so it does not show in
 * `ps`; the command line still works) and a constant-time check of the bearer header.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";

/** The environment variable the key may come from. */
export const API_KEY_ENV = "DENALI_API_KEY";

/** Where an API key may be given; at most one of them. */
export interface ApiKeySources {
  /** `--api-key KEY` (visible to every user through `ps`). */
  readonly flag?: string;
  /** `--api-key-file PATH`: the file's first line is the key. */
  readonly file?: string;
  /** The value of {@link API_KEY_ENV}. */
  readonly env?: string;
}

/**
 * The key from `sources`, or null for none.
 *
 * @throws Error naming the source when two are given, the file cannot be read, or a key is empty
 */
export function resolveApiKey(sources: ApiKeySources): string | null {
  const given = [
    ["--api-key", sources.flag],
    ["--api-key-file", sources.file],
    [API_KEY_ENV, sources.env],
  ].filter(([, value]) => value !== undefined) as [string, string][];
  if (given.length === 0) return null;
  if (given.length > 1) {
    throw new Error(
      `the API key is given ${given.length} ways (${given.map(([name]) => name).join(", ")}); ` +
        "give exactly one",
    );
  }
  const [name, value] = given[0];
  let key = value;
  if (name === "--api-key-file") {
    try {
      key = Deno.readTextFileSync(value).split(/\r?\n/)[0];
    } catch (error) {
      throw new Error(`--api-key-file ${value}: ${(error as Error).message}`);
    }
  }
  if (key.trim().length === 0) throw new Error(`${name}: the API key is empty`);
  return key;
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/** Checks `Authorization: Bearer <key>` headers in time independent of where they differ. */
export class ApiKeyCheck {
  readonly #expected: Uint8Array;

  /** Keeps only the digest of `Bearer <key>`. */
  constructor(key: string) {
    this.#expected = digest(`Bearer ${key}`);
  }

  /** Whether `header` (the Authorization header, or null) carries the key. */
  matches(header: string | null): boolean {
    // Digests have one length, so the comparison takes the same time for any header.
    return timingSafeEqual(digest(header ?? ""), this.#expected);
  }
}
