/**
 * The worker that encodes long prompts off the engine's thread (see engine/prompt.ts): encoding
 * runs at about a microsecond per byte, so a 4 MB prompt would hold the event loop, and with it
 * every stream, for seconds.
 *
 * Protocol: `{dir}` once loads the tokenizer of that checkpoint directory; then each
 * `{id, text, addSpecialTokens}` is answered with `{id, ids}` (an Int32Array, transferred) or
 * `{id, error}`.
 *
 * @module
 */

import { Tokenizer } from "./tokenizer.ts";

/** A request to the worker. */
export type TokenizeRequest =
  | { readonly dir: string }
  | { readonly id: number; readonly text: string; readonly addSpecialTokens: boolean };

/** The worker's answer to one encode request. */
export type TokenizeReply =
  | { readonly id: number; readonly ids: Int32Array }
  | { readonly id: number; readonly error: string };

// Only when loaded as a worker: importing the module for its types does nothing.
if ("WorkerGlobalScope" in globalThis) {
  const scope = self as unknown as {
    onmessage: (event: MessageEvent<TokenizeRequest>) => void;
    postMessage(reply: TokenizeReply, transfer?: Transferable[]): void;
  };
  let tokenizer: Promise<Tokenizer> | null = null;
  scope.onmessage = async ({ data }) => {
    if ("dir" in data) {
      tokenizer = Tokenizer.load(data.dir);
      return;
    }
    try {
      if (tokenizer === null) throw new Error("the tokenize worker got no checkpoint directory");
      const ids = Int32Array.from(
        (await tokenizer).encode(data.text, { addSpecialTokens: data.addSpecialTokens }),
      );
      scope.postMessage({ id: data.id, ids }, [ids.buffer]);
    } catch (error) {
      scope.postMessage({ id: data.id, error: (error as Error).message ?? String(error) });
    }
  };
}
