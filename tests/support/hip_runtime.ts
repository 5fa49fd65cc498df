/**
 * Whether the tests that need the real HIP runtime run here. On a fresh machine without it they
 * are skipped with one line saying so; under CI (`CI=true`, which .ci/run sets after installing
 * the runtime) they always run, so a missing runtime there fails loudly instead of hiding.
 *
 * @module
 */

/** The HIP runtime the "no AMD GPU" tests load. */
export const HIP_RUNTIME = "libamdhip64.so.5";

/** What to do with a test that needs the real HIP runtime. */
export interface HipRuntimeGate {
  /** Skip the test (`Deno.test`'s `ignore`). */
  readonly ignore: boolean;
  /** The line to print when skipping, or null. */
  readonly note: string | null;
}

/** The decision for a runtime that is `loadable` or not, under the `CI` variable's value. */
export function hipRuntimeGate(loadable: boolean, ci: string | undefined): HipRuntimeGate {
  if (loadable || ci === "true") return { ignore: false, note: null };
  return {
    ignore: true,
    note: `skipped: HIP runtime not installed (${HIP_RUNTIME}; ` +
      "`apt-get install libamdhip64-5` runs these tests, as .ci/run does)",
  };
}

/** Whether `library` can be opened by the dynamic loader. */
export function canLoad(library: string): boolean {
  try {
    Deno.dlopen(library, { hipInit: { parameters: ["u32"], result: "i32" } }).close();
    return true;
  } catch {
    return false;
  }
}

/** The gate for this machine; prints its note once per test file that asks. */
export function hipRuntime(): HipRuntimeGate {
  const gate = hipRuntimeGate(canLoad(HIP_RUNTIME), Deno.env.get("CI"));
  if (gate.note !== null) console.log(gate.note);
  return gate;
}
