/**
 * Every command-line script answers `--help` with its usage and exit 0, and no benchmark script
 * runs when imported (`deno bench` imports every `*_bench.ts` under bench/).
 *
 * @module
 */

import assert from "node:assert/strict";
import { type CommandResult, runCommand } from "./support/command.ts";

const ROOT = new URL("../", import.meta.url);
const DEADLINE_MS = 120_000;

/** The scripts meant to be run: serve.ts, examples/, bench/, tools/ and the kernel build. */
const CLIS = [
  "serve.ts",
  "examples/generate.ts",
  "examples/custom_kernel.ts",
  "examples/logits_processor.ts",
  "bench/cpu_decode_bench.ts",
  "bench/decode_bench.ts",
  "bench/step_ops.ts",
  "bench/quant_logits_bench.ts",
  "bench/engine_bench.ts",
  "bench/kernels_bench.ts",
  "bench/launch_denali.ts",
  "bench/scriptable_bench.ts",
  "bench/serve_bench.ts",
  "bench/soak.ts",
  "bench/structured_bench.ts",
  "bench/throughput_targets.ts",
  "bench/kernels/attention_bench.ts",
  "bench/kernels/elementwise_bench.ts",
  "bench/kernels/linear_bench.ts",
  "bench/kernels/linear_fp8_bench.ts",
  "bench/kernels/linear_awq_bench.ts",
  "bench/kernels/ragged_decode_bench.ts",
  "bench/kernels/sampling_bench.ts",
  "tools/make_test_tokenizer.ts",
  "kernels/build.ts",
];

/** Every .ts file under `dir` (relative to the root), recursively. */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(new URL(dir, ROOT))) {
    const path = `${dir}${entry.name}`;
    if (entry.isDirectory) out.push(...tsFiles(`${path}/`));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** Runs `deno run -A --no-check <args>` from the root, killed past the deadline. */
function deno(args: string[]): Promise<CommandResult> {
  return runCommand(Deno.execPath(), ["run", "-A", "--no-check", ...args], DEADLINE_MS, {
    cwd: ROOT,
  });
}

Deno.test("cli: the list covers every script that reads its arguments", () => {
  const scripts = ["examples/", "bench/", "tools/"].flatMap(tsFiles).filter((path) =>
    /Deno\.args|import\.meta\.main/.test(Deno.readTextFileSync(new URL(path, ROOT)))
  );
  const missing = scripts.filter((path) =>
    !CLIS.includes(path) && path !== "bench/launch_bench.ts"
  );
  assert.deepEqual(missing, [], "add these scripts to CLIS and give them --help");
});

Deno.test("cli: every script prints its usage for --help and exits 0", async () => {
  const results = await Promise.all(
    CLIS.map(async (path) => [path, await deno([path, "--help"])] as const),
  );
  for (const [path, { code, stdout, stderr }] of results) {
    assert.equal(code, 0, `${path} --help exited ${code}: ${stderr}`);
    assert.match(stdout, /^Usage: /, `${path} --help printed ${JSON.stringify(stdout)}`);
  }
});

Deno.test("cli: importing every *_bench.ts runs nothing (deno bench imports them all)", async () => {
  const benches = tsFiles("bench/").filter((path) =>
    path.endsWith("_bench.ts") && path !== "bench/launch_bench.ts"
  );
  assert.ok(benches.length >= 8, `found only ${benches}`);
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/import_all.ts`;
    const imports = benches.map((path) =>
      `await import(${JSON.stringify(new URL(path, ROOT).href)});`
    );
    await Deno.writeTextFile(script, `${imports.join("\n")}\nconsole.log("imported");\n`);
    const { code, stdout, stderr } = await deno([script]);
    assert.equal(code, 0, stderr);
    assert.equal(stdout, "imported\n", `a bench script ran on import: ${stdout}${stderr}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
