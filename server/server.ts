/**
 * Starts the OpenAI-compatible HTTP server over a loaded engine, and stops it: no new
 * connections, in-flight requests cancelled, all within a bounded time.
 *
 * @example Serve the tiny model on an ephemeral port
 * ```ts ignore
 * import { Engine } from "../engine/engine.ts";
 * import { startServer } from "./server.ts";
 * const engine = await Engine.load("checkpoints/tiny-llama", { backend: "cpu" });
 * const server = startServer(engine, { port: 0 });
 * console.log(server.url);
 * await server.stop();
 * await engine.close();
 * ```
 *
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import { type RouteOptions, Routes } from "./routes.ts";

/** Where to listen, and the route options. */
export interface ServerOptions extends RouteOptions {
  /** Interface to bind; 127.0.0.1. */
  readonly host?: string;
  /** TCP port; 8000, 0 for any free one. */
  readonly port?: number;
  /** Called once listening. */
  readonly onListen?: (addr: Deno.NetAddr) => void;
}

/** A running server. */
export interface RunningServer {
  /** The base URL, e.g. http://127.0.0.1:8000. */
  readonly url: string;
  /** The bound port. */
  readonly port: number;
  /** The routes (metrics, live requests). */
  readonly routes: Routes;
  /** Stops accepting, cancels in-flight requests, and waits at most `timeoutMs` for them. */
  stop(timeoutMs?: number): Promise<void>;
}

/** Serves `engine` over HTTP until `stop` is called; the caller closes the engine after. */
export function startServer(engine: Engine, options: ServerOptions = {}): RunningServer {
  const routes = new Routes(engine, options);
  const server = Deno.serve({
    hostname: options.host ?? "127.0.0.1",
    port: options.port ?? 8000,
    onListen: options.onListen ?? (() => {}),
    onError: (error) => {
      console.error(`[denali] handler error: ${error}`);
      return Response.json({
        error: { message: "internal error", type: "server_error", param: null, code: null },
      }, { status: 500 });
    },
  }, routes.handle);
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let stopping: Promise<void> | null = null;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    routes,
    stop(timeoutMs = 5000) {
      stopping ??= (async () => {
        routes.abortAll();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs));
        await Promise.race([server.shutdown(), timeout]);
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}
