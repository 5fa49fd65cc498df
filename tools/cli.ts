/**
 * The one `--help` convention of every command-line script here (serve.ts, examples/, bench/,
 * tools/): `-h` or `--help` anywhere prints the usage to stdout and the script exits 0 before
 * it parses anything else or touches a device. And the benchmarks' comma-separated size lists.
 *
 * @module
 */

/** Whether `args` ask for help; prints `usage` when they do. */
export function helpRequested(args: readonly string[], usage: string): boolean {
  if (!args.includes("--help") && !args.includes("-h")) return false;
  console.log(usage);
  return true;
}

/** `text` as comma-separated positive integers (`--ms 32,64`); an Error naming `flag` otherwise. */
export function positiveList(flag: string, text: string): number[] {
  const values = text.split(",").map(Number);
  if (values.some((v) => !Number.isInteger(v) || v <= 0)) {
    throw new Error(`${flag} ${text}: expected positive integers separated by commas`);
  }
  return values;
}
