/**
 * The CUDA backend: libcuda.so.1 bound through Deno.dlopen, behind the shared GPU backend.
 *
 * @module
 */

import { CU_DEVICE_ATTRIBUTE, CU_RESULT, CUDA_SYMBOLS } from "./cuda_ffi.ts";
import { symbolNames } from "./driver_ffi.ts";
import { openCublasLt } from "./cublaslt.ts";
import { cStringFrom, openLibrary } from "./dlopen.ts";
import { NoDeviceError } from "./errors.ts";
import { driverCheck, GpuBackend, readDeviceInfo } from "./gpu_backend.ts";

/** Options for opening the CUDA backend. */
export interface CudaOptions {
  /** Path of the driver library; default `$DENALI_LIBCUDA` or `libcuda.so.1`. */
  readonly libraryPath?: string;
  /** Device ordinal; default 0. */
  readonly device?: number;
}

const REMEDY = "pick another backend: --backend cpu (or --backend hip on AMD GPUs)";

/**
 * Opens an NVIDIA GPU through the CUDA driver API.
 *
 * @example
 * ```ts ignore
 * import { openCuda } from "./cuda.ts";
 * const gpu = openCuda();
 * console.log(gpu.info.name, gpu.memoryInfo());
 * gpu.close();
 * ```
 */
export function openCuda(options: CudaOptions = {}): GpuBackend {
  const path = options.libraryPath ?? Deno.env.get("DENALI_LIBCUDA") ?? "libcuda.so.1";
  const { library } = openLibrary([path], CUDA_SYMBOLS, { what: "NVIDIA driver", remedy: REMEDY });
  const sym = library.symbols;
  const names = symbolNames(CUDA_SYMBOLS);
  const namePtr = new BigUint64Array(1);
  const errorText = (code: number) => {
    const name = sym.cuGetErrorName(code, namePtr) === 0
      ? cStringFrom(Deno.UnsafePointer.create(namePtr[0]), "")
      : `unknown CUresult`;
    const message = sym.cuGetErrorString(code, namePtr) === 0
      ? cStringFrom(Deno.UnsafePointer.create(namePtr[0]), "")
      : "the driver has no text for this code";
    return { name, message };
  };
  const check = driverCheck("cuda", errorText);

  try {
    const initCode = sym.init(0);
    if (initCode === CU_RESULT.ERROR_NO_DEVICE) {
      throw new NoDeviceError(`no NVIDIA GPU found: cuInit reports no device. Or ${REMEDY}`);
    }
    check(initCode, names.init);
    const out = new Int32Array(1);
    check(sym.deviceGetCount(out), names.deviceGetCount);
    const count = out[0];
    if (count === 0) throw new NoDeviceError(`no NVIDIA GPU found. Or ${REMEDY}`);
    const ordinal = options.device ?? 0;
    if (!Number.isInteger(ordinal) || ordinal < 0 || ordinal >= count) {
      throw new RangeError(
        `CUDA device ${ordinal} does not exist: there are ${count} (0..${count - 1})`,
      );
    }
    check(sym.cuDeviceGet(out, ordinal), "cuDeviceGet");
    const device = out[0];
    const ctx = new BigUint64Array(1);
    check(sym.cuDevicePrimaryCtxRetain(ctx, device), "cuDevicePrimaryCtxRetain");
    check(sym.cuCtxSetCurrent(Deno.UnsafePointer.create(ctx[0])), "cuCtxSetCurrent");

    const info = readDeviceInfo("cuda", sym, names, check, device, {
      major: CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MAJOR,
      minor: CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MINOR,
      multiprocessors: CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT,
    }, (major, minor) => `sm_${major}${minor}`);
    return new GpuBackend({
      kind: "cuda",
      symbols: sym,
      names,
      info,
      errorText,
      // cuBLASLt is an optional accelerator: if it is absent or fails to start, Denali's own
      // GEMM serves alone, so a broken vendor library never stops the backend from opening.
      openAccelerator: () => {
        try {
          return openCublasLt({ driver: { symbols: sym, names, errorText } });
        } catch (error) {
          console.error(`[denali] cuBLASLt unavailable, using Denali's GEMM: ${error}`);
          return null;
        }
      },
      close: () => {
        sym.cuDevicePrimaryCtxRelease_v2(device);
        library.close();
      },
    });
  } catch (error) {
    library.close();
    throw error;
  }
}
