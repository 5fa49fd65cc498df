/**
 * Denali's OpenAI-compatible server entry point: `deno run -A serve.ts [--backend ...]`.
 *
 * The HTTP endpoints have not landed yet, so for now this opens the chosen backend, reports the
 * device, and says plainly that nothing is served and how to generate text with the engine.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { AUTO_ORDER, type BackendChoice, openBackend } from "./mod.ts";

const HELP = `Usage: deno run -A serve.ts [options]

Options:
  --backend auto|${AUTO_ORDER.join("|")}  device backend (default auto: the first with a device)
  --device N                   GPU ordinal (default 0)
  -h, --help                   show this help`;

/** Parses the command line, opens the backend and reports what it found. */
export function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        backend: { type: "string", default: "auto" },
        device: { type: "string", default: "0" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const choice = values.backend as BackendChoice;
  if (choice !== "auto" && !AUTO_ORDER.includes(choice)) {
    console.error(`--backend ${choice} is not one of auto, ${AUTO_ORDER.join(", ")}`);
    return 2;
  }
  const device = Number(values.device);
  if (!Number.isInteger(device) || device < 0) {
    console.error(`--device ${values.device} is not a device ordinal (0, 1, ...)`);
    return 2;
  }
  try {
    const backend = openBackend(choice, {
      device,
      onSkip: (kind, why) => console.error(`[denali] skipped ${kind}: ${why.split("\n")[0]}`),
    });
    const { name, arch, totalMemory } = backend.info;
    console.log(
      `[denali] backend ${backend.kind}: ${name} (${arch}), ${
        (totalMemory / 2 ** 30).toFixed(1)
      } GiB`,
    );
    backend.close();
  } catch (error) {
    console.error(`[denali] ${(error as Error).message}`);
    return 1;
  }
  console.log(
    "[denali] nothing served yet: the OpenAI-compatible endpoints are still being built. The " +
      "engine works: `deno run -A examples/generate.ts models/tiny-llama -p Hello`.",
  );
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
