/**
 * A child process for tests: run to its end, or killed at a deadline, with its output as text.
 *
 * @module
 */

/** What a finished child printed, and its exit code. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `program` with `args` (in `cwd`, with `env` added to this process's), killed once
 * `deadlineMs` has passed, and returns its exit code and decoded output.
 */
export async function runCommand(
  program: string,
  args: string[],
  deadlineMs: number,
  options: { cwd?: string | URL; env?: Record<string, string> } = {},
): Promise<CommandResult> {
  const out = await new Deno.Command(program, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(deadlineMs),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}
