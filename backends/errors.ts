/**
 * Typed errors for everything the backends report. Each extends `Error` with a `name`, so users
 * can branch on `instanceof` rather than parse messages.
 *
 * @module
 */

/** A driver call returned a non-zero result code. */
export class DriverError extends Error {
  /**
   * Creates the error; the message names the call, the code and the driver's text.
   * @param backend which driver ("cuda" or "hip")
   * @param call the C function that failed, e.g. `cuMemAlloc_v2`
   * @param code the raw result code
   * @param codeName the driver's name for the code, e.g. `CUDA_ERROR_OUT_OF_MEMORY`
   * @param driverMessage the driver's own description of the code
   * @param hint what the user can do about it, when Denali knows
   */
  constructor(
    readonly backend: string,
    readonly call: string,
    readonly code: number,
    readonly codeName: string,
    readonly driverMessage: string,
    hint = "",
  ) {
    super(`${call} failed: ${codeName} (${code}): ${driverMessage}${hint ? `. ${hint}` : ""}`);
    this.name = "DriverError";
  }
}

/**
 * A vendor library (cuBLASLt, hipBLASLt) has no algorithm for a problem, or refuses one it
 * offered: its NOT_SUPPORTED status, or another status Denali reads as a refusal. Callers with
 * another way to compute fall back on it.
 */
export class UnsupportedShapeError extends DriverError {
  /**
   * Creates the error from the library call's error.
   * @param cause the error of the call that refused
   * @param hint what the refusal means, in place of the cause's own hint; none keeps the cause's
   * message as it is
   */
  constructor(cause: DriverError, hint = "") {
    super(cause.backend, cause.call, cause.code, cause.codeName, cause.driverMessage, hint);
    if (!hint) this.message = cause.message;
    this.name = "UnsupportedShapeError";
  }
}

/** Whether `error` is a device allocation that failed for want of memory (CUDA or HIP). */
export function isOutOfMemory(error: unknown): error is DriverError {
  return error instanceof DriverError && /OUT_OF_MEMORY|OutOfMemory/.test(error.codeName);
}

/** The driver library itself could not be loaded, or lacks a symbol Denali needs. */
export class DriverNotFoundError extends Error {
  /**
   * Creates the error.
   * @param message what is missing and which backend to pick instead
   */
  constructor(message: string) {
    super(message);
    this.name = "DriverNotFoundError";
  }
}

/** The driver loaded, but it sees no device. */
export class NoDeviceError extends Error {
  /**
   * Creates the error.
   * @param message which device kind is missing and what to do instead
   */
  constructor(message: string) {
    super(message);
    this.name = "NoDeviceError";
  }
}

/** A module image (PTX, cubin, HSACO) failed to load; `jitLog` holds the compiler's log. */
export class ModuleLoadError extends DriverError {
  /**
   * Creates the error from the load call's error and the JIT log.
   * @param cause the driver error from the load call
   * @param jitLog the JIT compiler's error log, possibly empty
   */
  constructor(cause: DriverError, readonly jitLog: string) {
    super(cause.backend, cause.call, cause.code, cause.codeName, cause.driverMessage);
    this.message = `${cause.message}${
      jitLog ? `\nJIT log:\n${jitLog}` : " (the JIT log is empty)"
    }`;
    this.name = "ModuleLoadError";
  }
}

/** A kernel was launched with the wrong number or kind of arguments. */
export class LaunchArgumentError extends TypeError {
  /**
   * Creates the error.
   * @param message names the kernel, the parameter and what was given
   */
  constructor(message: string) {
    super(message);
    this.name = "LaunchArgumentError";
  }
}
