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
