/**
 * Reading the JSON fixtures under tests/fixtures that tools/fixtures/*.py generate.
 *
 * @module
 */

/**
 * The text of the fixture at `url`; a missing file fails with how to make it (`python3
 * tools/fixtures/<script>`, which needs `needs`). Other read errors propagate as they are.
 */
export function readFixtureText(url: URL, script: string, needs: string): string {
  try {
    return Deno.readTextFileSync(url);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new Error(
      `${url.pathname} is missing: generate it with \`python3 tools/fixtures/${script}\`` +
        ` (needs ${needs})`,
    );
  }
}
