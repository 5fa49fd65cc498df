/**
 * Generated kernel launchers. For each kernel signature, code is generated **once** into a
 * closure that checks its arguments cheaply, writes them into a preallocated packed buffer,
 * picks the precompiled variant through an integer key, and calls the driver. A launch then
 * allocates nothing: no arrays, no strings, no BigInts.
 *
 * @module
 */

import type { KernelFunction, LaunchAbi, Stream } from "../backends/backend.ts";
import { LaunchArgumentError } from "../backends/errors.ts";
import {
  type Assumption,
  digitRadix,
  isInteger,
  type KernelSignature,
  packLayout,
  type ParamType,
  satisfies,
} from "./signature.ts";

/** How arguments reach the driver; both are prepared once per launcher. */
export type ArgumentPacking = "params" | "extra";

/** How much a launch checks its arguments. */
export type CheckLevel = "cheap" | "deep";

/** A launcher's options. */
export interface LauncherOptions {
  /**
   * `params`: the kernelParams array of pointers into the packed buffer. `extra`: the packed
   * buffer through CU_LAUNCH_PARAM_BUFFER_POINTER. Default `extra`: on the H100 it was the
   * faster in 3 of 4 interleaved runs (bench/results/2026-11-25-runtime-h100.md), since the
   * driver copies one buffer instead of walking the parameter list.
   */
  readonly packing?: ArgumentPacking;
  /**
   * `cheap` checks count and types. `deep` also checks that pointers lie in live allocations and
   * that grid and block are non-empty. Default: `deep` when `DENALI_LAUNCH_CHECKS=deep`.
   */
  readonly checks?: CheckLevel;
  /**
   * Launch with programmatic stream serialization (programmatic dependent launch) where the ABI
   * offers `launchKernelEx`, else plainly. Such a kernel may start while the previous kernel of
   * its stream still runs, so before it reads anything that kernel may write, or writes anything
   * that kernel may read, it must execute `griddepcontrol.wait`. Default false.
   */
  readonly programmatic?: boolean;
}

/** A precompiled variant, resolved to a loaded function. */
export interface LoadedVariant {
  /** The loaded function. */
  readonly fn: KernelFunction;
  /** Parameter name → what the variant was compiled to assume; empty for the generic one. */
  readonly assumes: Readonly<Record<string, Assumption>>;
}

/**
 * Launches one kernel: grid (x, y, z), block (x, y, z), dynamic shared memory bytes, stream, then
 * the kernel's own arguments in signature order. Pointer arguments are device addresses (numbers)
 * or DeviceBuffers; f16/bf16 arguments are 16-bit patterns.
 */
export type Launcher = (
  gridX: number,
  gridY: number,
  gridZ: number,
  blockX: number,
  blockY: number,
  blockZ: number,
  sharedMemBytes: number,
  stream: Stream,
  ...args: unknown[]
) => void;

/** A launcher plus what it was generated from. */
export interface KernelLauncher {
  /** The generated closure. */
  readonly launch: Launcher;
  /** The signature it checks and packs. */
  readonly signature: KernelSignature;
  /** The packing it uses. */
  readonly packing: ArgumentPacking;
  /** Whether it launches with programmatic stream serialization (through launchKernelEx). */
  readonly programmatic: boolean;
  /** The generated source, for reading and debugging. */
  readonly source: string;
}

const U32 = 4294967296;

// CUlaunchConfig (cuda.h, CUDA 11.8+), 56 bytes: gridDimX, Y, Z, blockDimX, Y, Z and
// sharedMemBytes (u32 at 0, 4, ..., 24), hStream (pointer at 32), attrs (pointer at 40),
// numAttrs (u32 at 48). The one CUlaunchAttribute follows it, 72 bytes: id (u32 at 0), 4 bytes of
// padding, then the 64-byte value union, whose programmaticStreamSerializationAllowed is an int
// at its start.
const LAUNCH_CONFIG_BYTES = 56;
const LAUNCH_ATTRIBUTE_BYTES = 72;
const CONFIG_STREAM = 32;
const CONFIG_ATTRS = 40;
const CONFIG_NUM_ATTRS = 48;
const ATTRIBUTE_VALUE = 8;
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

/**
 * Generates the launcher for `signature` over `variants` (at least the generic one).
 *
 * @example
 * ```ts ignore
 * const { launch } = createLauncher(backend.launchAbi!, {
 *   name: "vec_add_f32",
 *   params: [
 *     { name: "a", type: "ptr" }, { name: "b", type: "ptr" },
 *     { name: "c", type: "ptr" }, { name: "n", type: "u32" },
 *   ],
 * }, [{ fn: module.getFunction("vec_add_f32"), assumes: {} }]);
 * launch(blocks, 1, 1, 256, 1, 1, 0, stream, a, b, c, n);
 * ```
 */
export function createLauncher(
  abi: LaunchAbi,
  signature: KernelSignature,
  variants: readonly LoadedVariant[],
  options: LauncherOptions = {},
): KernelLauncher {
  const packing = options.packing ?? "extra";
  const checks = options.checks ??
    (Deno.env.get("DENALI_LAUNCH_CHECKS") === "deep" ? "deep" : "cheap");
  const params = signature.params;
  const { offsets, size } = packLayout(params);

  // The packed argument buffer and its views; each launch only overwrites fields.
  // Rounded up so the 64-bit views and the driver's 8-byte reads stay in bounds.
  const args = new ArrayBuffer(Math.max(8, Math.ceil(size / 8) * 8));
  const views = {
    u32: new Uint32Array(args),
    i32: new Int32Array(args),
    f32: new Float32Array(args),
    u16: new Uint16Array(args),
    dv: new DataView(args),
  };
  const argsAddress = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(args)));
  let kernelParams: Deno.PointerValue = null;
  let extra: Deno.PointerValue = null;
  // Arrays the driver reads through pointers are kept alive by the closure below.
  const keepAlive: ArrayBuffer[] = [args];
  if (packing === "params") {
    const pointers = new BigUint64Array(Math.max(1, params.length));
    offsets.forEach((offset, i) => pointers[i] = argsAddress + BigInt(offset));
    keepAlive.push(pointers.buffer);
    kernelParams = Deno.UnsafePointer.of(pointers);
  } else {
    const sizeBox = new BigUint64Array([BigInt(size)]);
    const sizeAddress = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(sizeBox)));
    const list = new BigUint64Array([1n, argsAddress, 2n, sizeAddress, BigInt(abi.extraEnd)]);
    keepAlive.push(sizeBox.buffer, list.buffer);
    extra = Deno.UnsafePointer.of(list);
  }

  // Programmatic launches describe grid, block, shared bytes and stream in a CUlaunchConfig that
  // is built once; a launch rewrites its first seven words, and the stream only when it changes.
  const launchEx = options.programmatic ? abi.launchKernelEx ?? null : null;
  const configBuffer = new ArrayBuffer(LAUNCH_CONFIG_BYTES + LAUNCH_ATTRIBUTE_BYTES);
  const configView = new DataView(configBuffer);
  let config: Deno.PointerValue = null;
  if (launchEx) {
    const configAddress = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(configBuffer)));
    configView.setBigUint64(CONFIG_ATTRS, configAddress + BigInt(LAUNCH_CONFIG_BYTES), true);
    configView.setUint32(CONFIG_NUM_ATTRS, 1, true);
    configView.setUint32(
      LAUNCH_CONFIG_BYTES,
      CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
      true,
    );
    configView.setInt32(LAUNCH_CONFIG_BYTES + ATTRIBUTE_VALUE, 1, true);
    keepAlive.push(configBuffer);
    config = Deno.UnsafePointer.of(configBuffer);
  }

  const table = variantTable(signature, variants);
  const source = generateSource(signature, offsets, table.keyed, checks, launchEx !== null);
  const context = {
    abi,
    launchKernel: abi.launchKernel,
    launchEx,
    launchExName: abi.launchExCallName ?? "launchKernelEx",
    config,
    configWords: new Uint32Array(configBuffer),
    // Cold: runs when a launch's stream differs from the previous launch's.
    setStream: (native: Deno.PointerValue) =>
      configView.setBigUint64(
        CONFIG_STREAM,
        native === null ? 0n : BigInt(Deno.UnsafePointer.value(native)),
        true,
      ),
    views,
    kernelParams,
    extra,
    fns: table.fns,
    keepAlive,
    bad: (index: number, value: unknown): never => {
      throw new LaunchArgumentError(describeBadArgument(signature, index, value));
    },
    badCount: (given: number): never => {
      throw new LaunchArgumentError(
        `${signature.name}: expected ${params.length} kernel arguments after the 8 launch ` +
          `arguments (grid xyz, block xyz, shared bytes, stream), got ${given - 8}`,
      );
    },
    badStream: (value: unknown): never => {
      throw new LaunchArgumentError(
        `${signature.name}: the stream argument must be a Stream from the backend, got ${
          describe(value)
        }`,
      );
    },
    badPointer: (index: number, value: unknown): never => {
      throw new LaunchArgumentError(
        `${signature.name}: parameter ${index} '${params[index].name}' (ptr) got ${
          describe(value)
        }, which is not inside any live allocation of this backend`,
      );
    },
    badLaunchShape: (what: string): never => {
      throw new LaunchArgumentError(`${signature.name}: ${what}`);
    },
    noVariant: (key: number): never => {
      throw new LaunchArgumentError(
        `${signature.name}: no precompiled variant accepts these arguments (key ${key}); ` +
          `add a generic variant to the manifest`,
      );
    },
  };
  const factory = new Function("ctx", source) as (ctx: typeof context) => Launcher;
  return { launch: factory(context), signature, packing, programmatic: launchEx !== null, source };
}

/**
 * Maps every variant key to the most specialised variant whose assumptions the key satisfies.
 * `keyed` lists the parameters that take part in the key, with their place values.
 */
function variantTable(signature: KernelSignature, variants: readonly LoadedVariant[]) {
  const params = signature.params;
  for (const variant of variants) {
    for (const [name, assumption] of Object.entries(variant.assumes)) {
      const param = params.find((p) => p.name === name);
      const fits = param &&
        (param.type === "ptr" ? assumption === "aligned16" : isInteger(param.type) &&
          assumption !== "aligned16");
      if (!fits) {
        throw new TypeError(
          `${signature.name}: variant ${variant.fn.name} assumes '${assumption}' of '${name}', ` +
            `which is ${param ? `a ${param.type}` : "not a parameter"}`,
        );
      }
    }
  }
  const keyed: { index: number; type: ParamType; place: number }[] = [];
  let place = 1;
  params.forEach((param, index) => {
    if (variants.some((v) => param.name in v.assumes)) {
      keyed.push({ index, type: param.type, place });
      place *= digitRadix(param.type);
    }
  });
  // A key no variant accepts maps to null, and the launch throws naming the kernel.
  const fns: Deno.PointerValue[] = [];
  for (let key = 0; key < place; key++) {
    let best: LoadedVariant | null = null;
    for (const variant of variants) {
      const ok = Object.entries(variant.assumes).every(([name, assumption]) => {
        const k = keyed.find((entry) => params[entry.index].name === name)!;
        const digit = Math.floor(key / k.place) % digitRadix(k.type);
        return satisfies(digit, k.type, assumption);
      });
      const count = Object.keys(variant.assumes).length;
      if (ok && (!best || count > Object.keys(best.assumes).length)) best = variant;
    }
    fns.push(best ? best.fn.native : null);
  }
  return { keyed, fns };
}

/** The body of the generated factory: `return function launch_<name>(...) {...}`. */
function generateSource(
  signature: KernelSignature,
  offsets: readonly number[],
  keyed: readonly { index: number; type: ParamType; place: number }[],
  checks: CheckLevel,
  programmatic: boolean,
): string {
  const params = signature.params;
  const names = params.map((_, i) => `a${i}`);
  const lines: string[] = [];
  const emit = (line: string) => lines.push(`    ${line}`);
  emit(`if (arguments.length !== ${params.length + 8}) badCount(arguments.length);`);
  emit(
    "if ((gx >>> 0) !== gx || (gy >>> 0) !== gy || (gz >>> 0) !== gz || (bx >>> 0) !== bx || " +
      "(by >>> 0) !== by || (bz >>> 0) !== bz || (shm >>> 0) !== shm) " +
      'badLaunchShape("grid, block and shared bytes must be integers in 0..2^32-1");',
  );
  if (checks === "deep") {
    emit(
      'if (gx * gy * gz === 0 || bx * by * bz === 0) badLaunchShape("grid and block must be non-empty");',
    );
    emit('if (bx * by * bz > 1024) badLaunchShape("a block has at most 1024 threads");');
  }
  emit("if (stream === null || typeof stream !== 'object') badStream(stream);");
  params.forEach((param, i) => {
    const a = names[i];
    const off = offsets[i];
    switch (param.type) {
      case "ptr":
        emit(
          `if (typeof ${a} !== "number") { if (${a} !== null && typeof ${a} === "object" && ` +
            `typeof ${a}.ptr === "number") ${a} = ${a}.ptr; else bad(${i}, ${a}); }`,
        );
        if (checks === "deep") {
          emit(`if (!abi.isDevicePointer(${a})) badPointer(${i}, ${a});`);
        }
        emit(`u32[${off / 4}] = ${a} >>> 0; u32[${off / 4 + 1}] = (${a} / ${U32}) >>> 0;`);
        break;
      case "i32":
        emit(`if ((${a} | 0) !== ${a}) bad(${i}, ${a});`);
        emit(`i32[${off / 4}] = ${a};`);
        break;
      case "u32":
        emit(`if ((${a} >>> 0) !== ${a}) bad(${i}, ${a});`);
        emit(`u32[${off / 4}] = ${a};`);
        break;
      case "i64":
      case "u64": {
        const set = param.type === "i64" ? "setBigInt64" : "setBigUint64";
        const high = param.type === "i64" ? `Math.floor(${a} / ${U32})` : `(${a} / ${U32})`;
        const inRange = param.type === "i64" ? "" : ` || ${a} < 0`;
        emit(
          `if (typeof ${a} === "bigint") dv.${set}(${off}, ${a}, true); ` +
            `else { if (!Number.isSafeInteger(${a})${inRange}) bad(${i}, ${a}); ` +
            `u32[${off / 4}] = ${a} >>> 0; u32[${off / 4 + 1}] = ${high} >>> 0; }`,
        );
        break;
      }
      case "f32":
        emit(`if (typeof ${a} !== "number") bad(${i}, ${a});`);
        emit(`f32[${off / 4}] = ${a};`);
        break;
      case "f16":
      case "bf16":
        emit(`if ((${a} & 0xffff) !== ${a}) bad(${i}, ${a});`);
        emit(`u16[${off / 2}] = ${a};`);
        break;
    }
  });
  if (keyed.length === 0) {
    emit("const fn = fns[0];");
  } else {
    const terms = keyed.map(({ index, type, place }) => {
      const a = names[index];
      if (type === "ptr") return `(${a} % 16 === 0 ? ${place} : 0)`;
      // A bigint argument never matches a specialisation; `=== 1` and `% 16` need numbers.
      return `(${a} === 1 ? ${place} : typeof ${a} === "number" && ${a} % 16 === 0 ? ${
        2 * place
      } : 0)`;
    });
    emit(`const key = ${terms.join(" + ")};`);
    emit("const fn = fns[key];");
    emit("if (fn === null) noVariant(key);");
  }
  if (programmatic) {
    emit("cw[0] = gx; cw[1] = gy; cw[2] = gz; cw[3] = bx; cw[4] = by; cw[5] = bz; cw[6] = shm;");
    emit(
      "if (stream.native !== lastStream) { lastStream = stream.native; setStream(lastStream); }",
    );
    emit("const rc = launchEx(config, fn, kernelParams, extra);");
    emit("if (rc !== 0) abi.fail(rc, launchExName);");
  } else {
    emit(
      "const rc = launchKernel(fn, gx, gy, gz, bx, by, bz, shm, stream.native, kernelParams, extra);",
    );
    emit("if (rc !== 0) abi.fail(rc, abi.launchCallName);");
  }
  const fnName = `launch_${signature.name.replace(/[^A-Za-z0-9_]/g, "_")}`;
  return [
    '"use strict";',
    "const { abi, launchKernel, kernelParams, extra, fns, keepAlive, bad, badCount, badStream,",
    "  badPointer, badLaunchShape, noVariant, launchEx, launchExName, config, setStream } = ctx;",
    "const { u32, i32, f32, u16, dv } = ctx.views;",
    "const cw = ctx.configWords;",
    // The stream whose address the config holds; undefined until the first launch writes one.
    "let lastStream;",
    `return function ${fnName}(gx, gy, gz, bx, by, bz, shm, stream${
      names.length ? ", " + names.join(", ") : ""
    }) {`,
    "    void keepAlive;",
    ...lines,
    "};",
  ].join("\n");
}

/** The message for an argument of the wrong kind. */
function describeBadArgument(signature: KernelSignature, index: number, value: unknown): string {
  const param = signature.params[index];
  const expected: Record<ParamType, string> = {
    ptr: "a device address (number) or a DeviceBuffer",
    i32: "an integer in -2^31..2^31-1",
    u32: "an integer in 0..2^32-1",
    i64: "a safe integer or a bigint",
    u64: "a non-negative safe integer or a bigint",
    f32: "a number",
    f16: "a 16-bit pattern (integer 0..65535)",
    bf16: "a 16-bit pattern (integer 0..65535)",
  };
  return `${signature.name}: parameter ${index} '${param.name}' (${param.type}) got ${
    describe(value)
  }; expected ${expected[param.type]}`;
}

function describe(value: unknown): string {
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  if (typeof value === "bigint") return `${value}n`;
  if (value === null || typeof value !== "object") return `${String(value)} (${typeof value})`;
  return `an object (${value.constructor?.name ?? "Object"})`;
}
