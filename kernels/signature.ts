/**
 * Kernel signatures and specialisations: the data a launcher is generated from. The build script
 * derives them from the kernel sources into the manifest, so a launcher never disagrees with its
 * kernel.
 *
 * @module
 */

/** A kernel parameter's type. f16 and bf16 are passed as their 16-bit patterns. */
export type ParamType = "ptr" | "i32" | "u32" | "i64" | "u64" | "f32" | "f16" | "bf16";

/** One kernel parameter. */
export interface KernelParam {
  /** The parameter's name in the source, used in error messages. */
  readonly name: string;
  /** Its type. */
  readonly type: ParamType;
}

/** A kernel's name and ordered parameters. */
export interface KernelSignature {
  /** The kernel's symbol name. */
  readonly name: string;
  /** The parameters, in order. */
  readonly params: readonly KernelParam[];
}

/**
 * What a precompiled variant assumes about one argument, as Triton specialises: a pointer
 * 16-byte aligned, an integer equal to 1, or an integer divisible by 16.
 */
export type Assumption = "aligned16" | "one" | "div16";

/** A precompiled variant of a kernel and the assumptions it was compiled under. */
export interface VariantSpec {
  /** The variant's symbol name in the module. */
  readonly symbol: string;
  /** Parameter name → what the variant assumes about it; empty for the generic variant. */
  readonly assumes: Readonly<Record<string, Assumption>>;
}

/** A kernel as the manifest records it: its signature plus its precompiled variants. */
export interface KernelSpec extends KernelSignature {
  /** Every precompiled variant, the generic one first. */
  readonly variants: readonly VariantSpec[];
}

/** Byte size (and natural alignment) of each parameter type in the packed argument buffer. */
export const PARAM_BYTES: Readonly<Record<ParamType, number>> = {
  ptr: 8,
  i32: 4,
  u32: 4,
  i64: 8,
  u64: 8,
  f32: 4,
  f16: 2,
  bf16: 2,
};

/**
 * The packed argument layout: each parameter at its natural alignment. `size` is where the last
 * parameter ends, unpadded: the driver rejects an `extra` buffer whose size differs from the
 * kernel's own parameter size (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, seen on an H100).
 */
export function packLayout(params: readonly KernelParam[]): { offsets: number[]; size: number } {
  const offsets: number[] = [];
  let offset = 0;
  for (const param of params) {
    const bytes = PARAM_BYTES[param.type];
    offset = Math.ceil(offset / bytes) * bytes;
    offsets.push(offset);
    offset += bytes;
  }
  return { offsets, size: offset };
}

/**
 * The per-argument "digit" of the variant key: which assumptions an argument satisfies.
 * Pointers: 0 = not aligned, 1 = 16-byte aligned. Integers: 0 = neither, 1 = equal to 1,
 * 2 = divisible by 16. The launcher computes the same digits inline from the arguments.
 */
export function satisfies(digit: number, type: ParamType, assumption: Assumption): boolean {
  if (type === "ptr") return assumption === "aligned16" && digit === 1;
  if (assumption === "one") return digit === 1;
  if (assumption === "div16") return digit === 2;
  return false;
}

/** How many digit values a specialised parameter of `type` has (the key's radix for it). */
export function digitRadix(type: ParamType): number {
  return type === "ptr" ? 2 : 3;
}

/** Whether a parameter type is an integer that may be specialised on. */
export function isInteger(type: ParamType): boolean {
  return type === "i32" || type === "u32" || type === "i64" || type === "u64";
}

// ---------------------------------------------------------------------------------------------
// Reading signatures from kernel source: the build script reads kernels/src with it, and
// compileKernels reads user source with it, so both launch what the source declares.

/**
 * A kernel header: `extern "C" __global__ void [__launch_bounds__(...)] name(params)`, then `{`
 * (a definition) or `;` (a prototype), the parameter list possibly over several lines.
 */
const KERNEL_HEADER =
  /^[ \t]*extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\(([^)]*)\)\s*([{;])/gm;
const VARIANT_LINE = /^\/\/ variant-of (\w+):((?:[ \t]+\w+=\w+)+)[ \t]*$/gm;
const SCALAR_TYPES: Record<string, ParamType> = {
  int32_t: "i32",
  int: "i32",
  "signed int": "i32",
  uint32_t: "u32",
  unsigned: "u32",
  "unsigned int": "u32",
  int64_t: "i64",
  long: "i64",
  "long int": "i64",
  "long long": "i64",
  "long long int": "i64",
  uint64_t: "u64",
  size_t: "u64",
  "unsigned long": "u64",
  "unsigned long long": "u64",
  "unsigned long long int": "u64",
  float: "f32",
  f16_bits: "f16",
  __half: "f16",
  half: "f16",
  bf16_bits: "bf16",
  __nv_bfloat16: "bf16",
  hip_bfloat16: "bf16",
};
const ASSUMPTIONS: readonly Assumption[] = ["aligned16", "one", "div16"];
/** Qualifiers that change nothing about how an argument is passed. */
const QUALIFIERS = /\b(?:const|volatile|__restrict__|__restrict|restrict)\b/g;

/**
 * Reads the kernels of one source file: every `extern "C" __global__` function defined in it,
 * with variants declared by a `// variant-of base: param=assumption ...` line right above them.
 * With `prototypes`, declarations ending in `;` count too (the signatures of a precompiled image);
 * a prototype and its definition count once. Throws naming the file and line on anything it
 * cannot pass: a parameter type without a launch ABI here, an unnamed parameter, two declarations
 * that disagree.
 */
export function parseKernels(source: string, file: string, prototypes = false): KernelSpec[] {
  const lineOf = (index: number) => source.slice(0, index).split("\n").length;
  const events: { index: number; variant?: RegExpExecArray; kernel?: RegExpExecArray }[] = [];
  for (const m of source.matchAll(VARIANT_LINE)) events.push({ index: m.index, variant: m });
  for (const m of source.matchAll(KERNEL_HEADER)) events.push({ index: m.index, kernel: m });
  events.sort((a, b) => a.index - b.index);

  const kernels = new Map<string, { params: KernelParam[]; variants: VariantSpec[] }>();
  const variantSymbols = new Set<string>();
  let pending: { of: string; assumes: Record<string, Assumption>; line: number } | null = null;
  for (const event of events) {
    const where = `${file}:${lineOf(event.index)}`;
    if (event.variant) {
      const assumes: Record<string, Assumption> = {};
      for (const pair of event.variant[2].trim().split(/\s+/)) {
        const [param, assumption] = pair.split("=");
        if (!ASSUMPTIONS.includes(assumption as Assumption)) {
          throw new Error(`${where}: unknown assumption '${assumption}' (use ${ASSUMPTIONS})`);
        }
        assumes[param] = assumption as Assumption;
      }
      pending = { of: event.variant[1], assumes, line: lineOf(event.index) };
      continue;
    }
    const [, name, list, end] = event.kernel!;
    if (end === ";" && !prototypes) continue;
    const text = list.trim();
    const params = text === "" || text === "void"
      ? []
      : list.split(",").map((raw) => parseParam(raw, where, name));
    // A variant line applies to the header on the next line only.
    const variantOf = pending !== null && lineOf(event.index) === pending.line + 1 ? pending : null;
    pending = null;
    const known = kernels.get(name);
    if (known !== undefined || variantSymbols.has(name)) {
      const before = known?.params ?? [];
      if (known !== undefined && JSON.stringify(before) !== JSON.stringify(params)) {
        throw new Error(`${where}: ${name} is declared twice with different parameters`);
      }
      continue; // a prototype and its definition
    }
    if (variantOf) {
      const base = kernels.get(variantOf.of);
      if (!base) throw new Error(`${where}: variant of unknown kernel ${variantOf.of}`);
      const same = JSON.stringify(base.params.map((p) => p.type)) ===
        JSON.stringify(params.map((p) => p.type));
      if (!same) throw new Error(`${where}: ${name} must take the same parameters as its base`);
      for (const param of Object.keys(variantOf.assumes)) {
        if (!params.some((p) => p.name === param)) {
          throw new Error(`${where}: ${name} assumes something of '${param}', not a parameter`);
        }
      }
      base.variants.push({ symbol: name, assumes: variantOf.assumes });
      variantSymbols.add(name);
      continue;
    }
    kernels.set(name, { params, variants: [{ symbol: name, assumes: {} }] });
  }
  return [...kernels].map(([name, k]) => ({ name, params: k.params, variants: k.variants }));
}

function parseParam(raw: string, where: string, kernel: string): KernelParam {
  const text = raw.trim().replace(/\s+/g, " ");
  // `float x[]` is a pointer, as in C.
  const plain = text.replace(/\[\s*\]$/, "").replace(QUALIFIERS, " ").replace(/\s+/g, " ");
  const pointer = plain.includes("*") || /\[\s*\]$/.test(text);
  const words = plain.replace(/\*/g, " ").trim().split(" ").filter((w) => w !== "");
  const match = /^(?:[A-Za-z_][\w:]*\s)*[A-Za-z_]\w*$/.exec(words.join(" "));
  if (!match || words.length < 2) {
    throw new Error(
      `${where}: cannot read parameter '${text}' of ${kernel}; write it as 'type name' ` +
        `(a named pointer or scalar)`,
    );
  }
  const name = words[words.length - 1];
  const type = words.slice(0, -1).join(" ");
  if (pointer) return { name, type: "ptr" };
  const mapped = SCALAR_TYPES[type];
  if (!mapped) {
    throw new Error(
      `${where}: parameter '${text}' of ${kernel} has type ${type}; use a pointer or one of ${
        Object.keys(SCALAR_TYPES).join(", ")
      }`,
    );
  }
  return { name, type: mapped };
}
