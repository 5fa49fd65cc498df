/**
 * The one `--help` convention of every command-line script here (serve.ts, examples/, bench/,
 * tools/): `-h` or `--help` anywhere prints the usage to stdout and the script exits 0 before
 * it parses anything else or touches a device.
 *
 * @module
 */

/** Whether `args` ask for help; prints `usage` when they do. */
export function helpRequested(args: readonly string[], usage: string): boolean {
  if (!args.includes("--help") && !args.includes("-h")) return false;
  console.log(usage);
  return true;
}
