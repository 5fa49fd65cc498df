/**
 * Server-sent events framing for streamed completions: one `data: <json>` event per chunk, then
 * `data: [DONE]`.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Headers of an SSE response. */
export const SSE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "connection": "keep-alive",
};

/** One event carrying `value` as JSON. */
export function sseEvent(value: unknown): Uint8Array {
  return encoder.encode(`data: ${JSON.stringify(value)}\n\n`);
}

/** The event that ends an OpenAI stream. */
export const SSE_DONE: Uint8Array = encoder.encode("data: [DONE]\n\n");
