/**
 * API errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, each with the
 * HTTP status it is sent with.
 *
 * @module
 */

/** An error a request gets back, with its status and the field it concerns. */
export class ApiError extends Error {
  /**
   * Creates the error.
   * @param status HTTP status
   * @param message what is wrong and what to do about it
   * @param param the request field at fault, or null
   * @param type OpenAI's error type
   * @param code a machine-readable code, or null
   */
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = "invalid_request_error",
    readonly code: string | null = null,
  ) {
    super(message);
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
    return Response.json(this.toJSON(), { status: this.status });
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

/** 429 when the waiting queue is full. */
export function queueFull(max: number): ApiError {
  return new ApiError(
    429,
    `the server is busy: ${max} requests are already waiting; retry later`,
    null,
    "rate_limit_error",
    "queue_full",
  );
}
