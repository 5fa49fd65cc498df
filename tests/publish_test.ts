/**
 * The package publishes cleanly: `deno doc --lint mod.ts` finds no private type in a public
 * signature and no undocumented export, `deno publish --dry-run` passes (it needs a license),
 * and every error class the public API names in `@throws` is exported from mod.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as mod from "../mod.ts";

const ROOT = new URL("../", import.meta.url);

async function deno(args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(120_000),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

Deno.test("publish: deno doc --lint mod.ts is clean", async () => {
  const { code, output } = await deno(["doc", "--lint", "mod.ts"]);
  assert.equal(code, 0, output);
});

Deno.test("publish: deno publish --dry-run passes, under the Apache-2.0 license", async () => {
  const license = await Deno.readTextFile(new URL("LICENSE", ROOT));
  assert.match(license, /Apache License\s+Version 2\.0, January 2004/);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.equal(config.license, "Apache-2.0");
  const { code, output } = await deno(["publish", "--dry-run", "--allow-dirty"]);
  assert.equal(code, 0, output);
  assert.match(output, /Success Dry run complete/);
});

Deno.test("publish: every error class named in an @throws is exported from mod.ts", async () => {
  const named = new Set<string>();
  const scan = async (dir: string): Promise<void> => {
    for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
      if (entry.isDirectory) await scan(`${dir}${entry.name}/`);
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(new URL(`${dir}${entry.name}`, ROOT));
      for (const [, name] of text.matchAll(/@throws \{?(\w+Error)\b/g)) named.add(name);
    }
  };
  // The folders mod.ts exports from (those that exist: the operator layer may move).
  for (const dir of ["backends/", "engine/", "kernels/", "ops/", "models/"]) {
    try {
      Deno.statSync(new URL(dir, ROOT));
    } catch {
      continue;
    }
    await scan(dir);
  }
  const builtIn = new Set(["Error", "RangeError", "TypeError"]);
  const missing = [...named].filter((name) =>
    !builtIn.has(name) && typeof (mod as Record<string, unknown>)[name] !== "function"
  );
  assert.deepEqual(missing, [], "export these from mod.ts");
  assert.ok(named.size > 0);
});
