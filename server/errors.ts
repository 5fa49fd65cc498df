/**
 * API errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, each with the
 * HTTP status it is sent with. No message a client sees names a file on the server: paths are cut
 * to their last part (see {@link withoutServerPaths}).
 *
 * @module
 */

import { tmpdir } from "node:os";

/**
 * Folders whose paths a reply must not reveal: the working directory, this checkout, the home
 * and temporary folders.
 */
const SERVER_ROOTS: readonly string[] = [
  Deno.cwd(),
  new URL("../", import.meta.url).pathname,
  Deno.env.get("HOME") ?? "",
  tmpdir(),
].map((root) => root.replace(/\/+$/, "")).filter((root) => root.length > 1);

/** An absolute path or file URL: a run of `/segment`s, optionally behind `file://`. */
const PATH = /(?<![\w.:/-])(?:file:\/\/)?(?:\/[\w.@+~-]+)+\/?/g;

/**
 * `message` with every server path cut to its last part: file URLs, paths under
 * {@link SERVER_ROOTS}, and any absolute path ending in a file name with an extension.
 */
export function withoutServerPaths(message: string): string {
  return message.replace(PATH, (path) => {
    const plain = path.replace(/^file:\/\//, "");
    const last = plain.replace(/\/+$/, "").split("/").pop() ?? "";
    const serverSide = path.startsWith("file://") || /\.[A-Za-z0-9]+$/.test(last) ||
      SERVER_ROOTS.some((root) => plain === root || plain.startsWith(`${root}/`));
    return serverSide ? last : path;
  });
}

/** An error a request gets back, with its status and the field it concerns. */
export class ApiError extends Error {
  /**
   * Creates the error.
   * @param status HTTP status
   * @param message what is wrong and what to do about it
   * @param param the request field at fault, or null
   * @param type OpenAI's error type
   * @param code a machine-readable code, or null
   * @param headers extra response headers (Allow, Retry-After)
   */
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = "invalid_request_error",
    readonly code: string | null = null,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(withoutServerPaths(message));
    this.name = "ApiError";
  }

  /** The JSON body OpenAI clients expect. */
  toJSON(): {
    error: { message: string; type: string; param: string | null; code: string | null };
  } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }

  /** The error as an HTTP response. */
  toResponse(): Response {
    return Response.json(this.toJSON(), { status: this.status, headers: this.headers });
  }
}

/** 400 for a field of the wrong type or out of range. */
export function badField(param: string, message: string): ApiError {
  return new ApiError(400, `${param}: ${message}`, param);
}

/** 401 for a missing or wrong API key. */
export function unauthorized(): ApiError {
  return new ApiError(
    401,
    "missing or wrong API key: send `Authorization: Bearer <key>`",
    null,
    "authentication_error",
    "invalid_api_key",
  );
}

/** 404 for a path or model the server does not have. */
export function notFound(message: string, param: string | null = null): ApiError {
  return new ApiError(404, message, param, "not_found_error", param ? "model_not_found" : null);
}

/** 405 for a route that exists, asked with another method; `Allow` lists the right one. */
export function methodNotAllowed(method: string, path: string, allowed: string): ApiError {
  return new ApiError(
    405,
    `${path} does not take ${method}; use ${allowed}`,
    null,
    "invalid_request_error",
    "method_not_allowed",
    { allow: allowed },
  );
}

/** 415 for a POST body that is not declared as JSON. */
export function notJson(contentType: string | null): ApiError {
  return new ApiError(
    415,
    `the body must be sent with Content-Type: application/json, got ${
      contentType === null ? "none" : JSON.stringify(contentType)
    }`,
    null,
    "invalid_request_error",
    "unsupported_media_type",
  );
}

/** 413 for a body over the limit. */
export function tooLarge(limit: number): ApiError {
  return new ApiError(
    413,
    `request body is over the ${limit}-byte limit`,
    null,
    "invalid_request_error",
    "request_too_large",
  );
}

/** Seconds a client told "busy" waits before retrying. */
export const RETRY_AFTER_S = 1;

/** 429 when the waiting queue is full, with `Retry-After`. */
export function queueFull(max: number): ApiError {
  return new ApiError(
    429,
    `the server is busy: ${max} requests are already waiting; retry in ${RETRY_AFTER_S} s`,
    null,
    "rate_limit_error",
    "queue_full",
    { "retry-after": String(RETRY_AFTER_S) },
  );
}
