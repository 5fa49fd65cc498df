/**
 * Denali's side of bench/launch_compare.sh (GPU machine): host nanoseconds per launch of the
 * 8-argument `args8` kernel, interleaved round by round in one process:
 * - `c_loop_cuLaunchKernel`: a C loop of cuLaunchKernel (bench/launch_c_loop.c), the floor;
 * - `denali_raw_ffi`: one FFI call per launch with arguments packed once;
 * - `denali_closure_params` / `denali_closure_extra`: the generated launchers.
 * Same kernel, grid, block and stream for all, and the same method as bench/launch_c.c.
 *
 * Usage: deno run -A bench/launch_denali.ts [path/to/liblaunch_c_loop.so]
 *
 * @module
 */

import { openCuda } from "../backends/cuda.ts";
import { loadKernels } from "../kernels/modules.ts";
import { prepackArgs } from "./prepacked_args.ts";
import { BATCH, type Contender, printResult, timeInterleaved } from "./round_timer.ts";
import { helpRequested } from "../tools/cli.ts";

const USAGE = `Usage: deno run -A bench/launch_denali.ts [path/to/liblaunch_c_loop.so]

Host nanoseconds per launch of the args8 kernel (NVIDIA GPU): Denali's launchers beside a C loop
of cuLaunchKernel when its library is given (bench/launch_compare.sh builds it).
  -h, --help   show this help`;

if (helpRequested(Deno.args, USAGE)) Deno.exit(0);

const backend = openCuda();
console.log(`device: ${backend.info.name} (${backend.info.arch}), Deno ${Deno.version.deno}`);
const stream = backend.createStream();
const [a, b, c, d] = [0, 1, 2, 3].map(() => backend.alloc(1024).ptr);

const paramsKernels = await loadKernels(backend, "runtime_test", { packing: "params" });
const extraKernels = await loadKernels(backend, "runtime_test", { packing: "extra" });
const fn = paramsKernels.module.getFunction("args8").native;

// Arguments packed once, as kernelParams: what both the raw call and the C loop pass.
const spec = paramsKernels.specs.find((k) => k.name === "args8")!;
const prepacked = prepackArgs(spec, [a, b, c, d, 32, 7, 1.5, 2.5]);
const slotsPtr = prepacked.kernelParams;
const raw = backend.launchAbi.launchKernel;
const native = stream.native;
const launchParams = paramsKernels.launchers.args8.launch;
const launchExtra = extraKernels.launchers.args8.launch;

const contenders: Contender[] = [
  {
    name: "denali_raw_ffi",
    batch: () => {
      for (let i = 0; i < BATCH; i++) raw(fn, 1, 1, 1, 32, 1, 1, 0, native, slotsPtr, null);
    },
  },
  {
    name: "denali_closure_params",
    batch: () => {
      for (let i = 0; i < BATCH; i++) {
        launchParams(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
      }
    },
  },
  {
    name: "denali_closure_extra",
    batch: () => {
      for (let i = 0; i < BATCH; i++) {
        launchExtra(1, 1, 1, 32, 1, 1, 0, stream, a, b, c, d, 32, 7, 1.5, 2.5);
      }
    },
  },
];

const cLoopPath = Deno.args[0];
if (cLoopPath) {
  const lib = Deno.dlopen(cLoopPath, {
    c_launch_loop: { parameters: ["pointer", "pointer", "pointer", "i32"], result: "i32" },
    c_launch_one_vzeroupper: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  });
  const loop = lib.symbols.c_launch_loop;
  const vzu = lib.symbols.c_launch_one_vzeroupper;
  contenders.unshift({
    name: "c_loop_cuLaunchKernel",
    batch: () => {
      const rc = loop(fn, native, slotsPtr, BATCH);
      if (rc !== 0) backend.launchAbi.fail(rc, "cuLaunchKernel (C loop)");
    },
  }, {
    // One FFI crossing per launch into the C loop: separates the cost of crossing from JS into C
    // from the cost of calling the driver through Deno's FFI trampoline.
    name: "c_loop_one_per_ffi_call",
    batch: () => {
      for (let i = 0; i < BATCH; i++) loop(fn, native, slotsPtr, 1);
    },
  }, {
    name: "c_one_vzeroupper_per_ffi_call",
    batch: () => {
      for (let i = 0; i < BATCH; i++) vzu(fn, native, slotsPtr);
    },
  });
}

for (const [name, timing] of timeInterleaved(contenders, () => stream.synchronize())) {
  printResult(name, timing);
}
backend.close();
