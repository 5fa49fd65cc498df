/**
 * The HIP backend: libamdhip64 (.so.6, then .so.5) bound through Deno.dlopen, behind the shared
 * GPU backend. There is no AMD GPU where Denali is developed, so this path is checked for loading
 * and for reporting "no AMD GPU found", and otherwise mirrors the CUDA backend call for call.
 *
 * @module
 */

import { symbolNames } from "./driver_ffi.ts";
import { cStringFrom, openLibrary } from "./dlopen.ts";
import { NoDeviceError } from "./errors.ts";
import { driverCheck, GpuBackend, readDeviceInfo } from "./gpu_backend.ts";
import { HIP_DEVICE_ATTRIBUTE, HIP_SYMBOLS } from "./hip_ffi.ts";

/** Options for opening the HIP backend. */
export interface HipOptions {
  /** Path of the HIP runtime; default `$DENALI_LIBHIP`, else libamdhip64.so.6 then .so.5. */
  readonly libraryPath?: string;
  /** Device ordinal; default 0. */
  readonly device?: number;
}

const REMEDY = "pick another backend: --backend cpu (or --backend cuda on NVIDIA GPUs)";
// hipErrorNoDevice, and hipErrorInvalidDevice which ROCm returns when /dev/kfd is absent.
const NO_DEVICE_CODES = new Set([100, 101]);
const PROPERTIES_BYTES = 4096;

/**
 * Opens an AMD GPU through HIP's module API.
 *
 * @example
 * ```ts
 * import { openHip } from "./hip.ts";
 * try {
 *   const gpu = openHip();
 *   console.log(gpu.info.name, gpu.info.arch);
 *   gpu.close();
 * } catch (error) {
 *   console.log((error as Error).message); // e.g. "no AMD GPU found ..."
 * }
 * ```
 */
export function openHip(options: HipOptions = {}): GpuBackend {
  const configured = options.libraryPath ?? Deno.env.get("DENALI_LIBHIP");
  const paths = configured ? [configured] : ["libamdhip64.so.6", "libamdhip64.so.5"];
  const { library } = openLibrary(paths, HIP_SYMBOLS, { what: "AMD HIP runtime", remedy: REMEDY });
  const sym = library.symbols;
  const names = symbolNames(HIP_SYMBOLS);
  const errorText = (code: number) => ({
    name: cStringFrom(sym.hipGetErrorName(code), "hipErrorUnknown"),
    message: cStringFrom(sym.hipGetErrorString(code), "the runtime has no text for this code"),
  });
  const check = driverCheck("hip", errorText);

  try {
    const out = new Int32Array(1);
    const initCode = sym.init(0);
    const countCode = NO_DEVICE_CODES.has(initCode) ? initCode : sym.deviceGetCount(out);
    if (NO_DEVICE_CODES.has(countCode) || (countCode === 0 && out[0] === 0)) {
      const why = countCode === 0 ? "no devices" : errorText(countCode).name;
      throw new NoDeviceError(`no AMD GPU found: the HIP runtime reports ${why}. Or ${REMEDY}`);
    }
    check(initCode, names.init);
    check(countCode, names.deviceGetCount);
    const count = out[0];
    const ordinal = options.device ?? 0;
    if (!Number.isInteger(ordinal) || ordinal < 0 || ordinal >= count) {
      throw new RangeError(`HIP device ${ordinal} does not exist: there are ${count}`);
    }
    check(sym.hipSetDevice(ordinal), "hipSetDevice");
    const info = readDeviceInfo("hip", sym, names, check, ordinal, {
      major: HIP_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MAJOR,
      minor: HIP_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MINOR,
      multiprocessors: HIP_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT,
    }, () => gfxArch(sym.hipGetDeviceProperties, ordinal));
    return new GpuBackend({
      kind: "hip",
      symbols: sym,
      names,
      info,
      errorText,
      close: () => library.close(),
    });
  } catch (error) {
    library.close();
    throw error;
  }
}

/**
 * The device's gfx target (e.g. "gfx90a"). hipDeviceProp_t's layout differs between ROCm
 * releases, so rather than trust an offset, scan the filled struct for the arch string.
 */
function gfxArch(
  getProperties: ((props: Uint8Array, device: number) => number) | null,
  device: number,
): string {
  if (!getProperties) return "gfx-unknown";
  const props = new Uint8Array(PROPERTIES_BYTES);
  if (getProperties(props, device) !== 0) return "gfx-unknown";
  const text = new TextDecoder("latin1").decode(props);
  return /gfx[0-9a-f]+/.exec(text)?.[0] ?? "gfx-unknown";
}
