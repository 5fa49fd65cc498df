/**
 * The committed code objects hold every kernel the manifest promises: each PTX and HSACO file
 * kernels/build.ts writes names every variant symbol of its module. A source changed without
 * rebuilding for one target (HSACO when hipcc was missing, say) leaves a file without the new
 * kernels, which the loader would only find missing at launch, on that target's hardware.
 */
import assert from "node:assert/strict";
import { KERNEL_MODULES } from "../kernels/manifest.ts";
import { ARCH_SPECIFIC_PTX, HSACO_ARCHS, PTX_ARCHS } from "../kernels/targets.ts";

const kernelsDir = new URL("../kernels/", import.meta.url);

/** The variant symbols of a module, as the loader looks them up. */
function symbolsOf(module: string): string[] {
  return KERNEL_MODULES[module].flatMap((kernel) => kernel.variants.map((v) => v.symbol));
}

/** The symbols of `symbols` that `text` lacks, each looked for as `spell(symbol)`. */
function missing(text: string, symbols: string[], spell: (symbol: string) => string): string[] {
  return symbols.filter((symbol) => !text.includes(spell(symbol)));
}

Deno.test("every PTX file declares each kernel of its module's manifest", () => {
  for (const module of Object.keys(KERNEL_MODULES)) {
    const symbols = symbolsOf(module);
    for (const arch of [...PTX_ARCHS, ...(ARCH_SPECIFIC_PTX[module] ?? [])]) {
      const file = `ptx/${module}.${arch}.ptx`;
      const text = Deno.readTextFileSync(new URL(file, kernelsDir));
      assert.deepEqual(
        missing(text, symbols, (s) => `.entry ${s}(`),
        [],
        `${file} lacks kernels; run \`deno task kernels\``,
      );
    }
  }
});

Deno.test("every HSACO file holds each kernel of its module's manifest, with its descriptor", () => {
  const latin1 = new TextDecoder("latin1");
  for (const module of Object.keys(KERNEL_MODULES)) {
    const symbols = symbolsOf(module);
    for (const arch of HSACO_ARCHS) {
      const file = `hsaco/${module}.${arch}.hsaco`;
      const text = latin1.decode(Deno.readFileSync(new URL(file, kernelsDir)));
      // The ELF symbol table spells each kernel as a NUL-ended name, and hipModuleGetFunction
      // also needs its kernel descriptor, `<name>.kd`.
      assert.deepEqual(
        missing(text, symbols, (s) => `\0${s}\0`),
        [],
        `${file} lacks kernels; run \`deno task kernels\` with hipcc (Debian's hipcc)`,
      );
      assert.deepEqual(missing(text, symbols, (s) => `\0${s}.kd\0`), [], `${file}: descriptors`);
    }
  }
});

Deno.test("the check can fail: a file without a kernel is named", () => {
  const symbols = symbolsOf("attention");
  const without = symbols.slice(1).map((s) => `.entry ${s}(`).join("\n");
  assert.deepEqual(missing(without, symbols, (s) => `.entry ${s}(`), [symbols[0]]);
  assert.deepEqual(missing(`.entry ${symbols[0]}_x(`, [symbols[0]], (s) => `.entry ${s}(`), [
    symbols[0],
  ]);
});
